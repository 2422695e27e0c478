package deliver

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/mailward/mailward/internal/testenv"
)

// testRelay is a Go SMTP server standing in for the reports relay. It
// can answer the first DATA commands with an error and offer STARTTLS.
type testRelay struct {
	srv  *smtp.Server
	addr string

	mu    sync.Mutex
	msgs  []relayed
	fail  []*smtp.SMTPError // answers to the next DATA commands, in order
	tries int               // DATA commands seen
	// password, if set, is required of user "reports" before MAIL.
	password string
	logins   []string // passwords tried
}

type relayed struct {
	testenv.SinkMessage
	TLS  bool
	HELO string
}

// startRelay starts a relay; with cert it offers STARTTLS.
func startRelay(t *testing.T, cert *testenv.TestCert) *testRelay {
	t.Helper()
	r := &testRelay{}
	r.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &relaySession{relay: r, conn: c}, nil
	}))
	r.srv.Domain = "relay.test"
	// Sessions the client breaks off on purpose are no news.
	r.srv.ErrorLog = log.New(io.Discard, "", 0)
	r.srv.ReadTimeout = 30 * time.Second
	r.srv.WriteTimeout = 30 * time.Second
	r.srv.MaxMessageBytes = 10 << 20
	r.srv.AllowInsecureAuth = true
	if cert != nil {
		pair, err := tls.LoadX509KeyPair(cert.CertFile, cert.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		r.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pair}}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = l.Addr().String()
	go r.srv.Serve(l)
	t.Cleanup(func() { r.srv.Close() })
	return r
}

// failNext makes the next DATA commands fail with these codes.
func (r *testRelay) failNext(codes ...int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range codes {
		var e *smtp.SMTPError // 0: take the message
		if c != 0 {
			e = &smtp.SMTPError{Code: c, EnhancedCode: smtp.EnhancedCode{c / 100, 0, 0}, Message: "scripted failure"}
		}
		r.fail = append(r.fail, e)
	}
}

func (r *testRelay) messages() []relayed {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]relayed(nil), r.msgs...)
}

func (r *testRelay) attempts() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tries
}

type relaySession struct {
	relay  *testRelay
	conn   *smtp.Conn
	from   string
	to     []string
	authed bool
}

func (s *relaySession) AuthMechanisms() []string {
	s.relay.mu.Lock()
	defer s.relay.mu.Unlock()
	if s.relay.password == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *relaySession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		r := s.relay
		r.mu.Lock()
		defer r.mu.Unlock()
		r.logins = append(r.logins, pass)
		if user != "reports" || pass != r.password {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}
		}
		s.authed = true
		return nil
	}), nil
}

func (s *relaySession) Reset()        { s.from, s.to = "", nil }
func (s *relaySession) Logout() error { return nil }
func (s *relaySession) Mail(from string, _ *smtp.MailOptions) error {
	s.relay.mu.Lock()
	need := s.relay.password != ""
	s.relay.mu.Unlock()
	if need && !s.authed {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "authentication required"}
	}
	s.from = from
	return nil
}
func (s *relaySession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}
func (s *relaySession) Data(rd io.Reader) error {
	b, err := io.ReadAll(rd)
	if err != nil {
		return err
	}
	r := s.relay
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tries++
	if len(r.fail) > 0 {
		e := r.fail[0]
		r.fail = r.fail[1:]
		if e != nil {
			return e
		}
	}
	_, isTLS := s.conn.TLSConnectionState()
	r.msgs = append(r.msgs, relayed{SinkMessage: testenv.SinkMessage{From: s.from, To: s.to, Data: b}, TLS: isTLS, HELO: s.conn.Hostname()})
	return nil
}
