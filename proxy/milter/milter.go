// Package milter is the milter front: it speaks the Sendmail milter
// protocol to Postfix or Sendmail and turns each stage into an engine call.
package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/proxy"
)

// Config is the milter front's part of the config file.
type Config struct {
	// Listen is inet:HOST:PORT or unix:/path, as Postfix writes it.
	Listen string `yaml:"listen"`
	// SocketMode is the mode of a unix socket, e.g. "0660".
	SocketMode string `yaml:"socket_mode"`
}

// Server serves the milter protocol on behalf of an engine.
type Server struct {
	engine      *policy.Engine
	log         *slog.Logger
	readTimeout time.Duration

	mu       sync.Mutex
	ln       net.Listener
	conns    map[net.Conn]struct{}
	closing  bool
	sessions sync.WaitGroup
}

// New returns a milter server; readTimeout 0 means five minutes.
func New(engine *policy.Engine, readTimeout time.Duration, log *slog.Logger) *Server {
	if readTimeout <= 0 {
		readTimeout = 5 * time.Minute
	}
	if log == nil {
		log = slog.Default()
	}
	return &Server{engine: engine, log: log, readTimeout: readTimeout, conns: map[net.Conn]struct{}{}}
}

// Actions are the modifications mailward may ask for.
const actions = gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptQuarantine

// Serve accepts MTA connections on ln until Shutdown. Each connection gets
// its own go-milter server, so that the state kept for it (client IP,
// HELO, macros) survives go-milter replacing its handler after every
// final response.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return gomilter.ErrServerClosed
	}
	s.ln = ln
	s.mu.Unlock()
	closing := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.closing
	}
	return proxy.Serve(ln, "milter", closing, s.log, s.serveConn)
}

func (s *Server) serveConn(raw net.Conn) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		raw.Close()
		return
	}
	s.conns[raw] = struct{}{}
	s.sessions.Add(1)
	s.mu.Unlock()

	done := make(chan struct{})
	c := newTimeoutConn(raw, s.readTimeout, sync.OnceFunc(func() {
		s.mu.Lock()
		delete(s.conns, raw)
		s.mu.Unlock()
		close(done)
	}))
	st := &connState{srv: s, ctx: context.Background()}
	srv := &gomilter.Server{
		NewMilter: func() gomilter.Milter { return &session{st: st} },
		Actions:   actions,
	}
	go func() {
		defer s.sessions.Done()
		// Serve hands the connection to one go-milter session and
		// returns when that session has closed it.
		srv.Serve(&oneConnListener{conn: c, done: done})
		st.close()
	}()
}

// Shutdown stops accepting connections, lets the open ones finish until
// ctx ends, then closes them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.sessions.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	n := len(s.conns)
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	<-done
	return fmt.Errorf("closed %d milter connections still open at shutdown", n)
}

// connState is what one MTA connection keeps across go-milter's handlers.
type connState struct {
	srv    *Server
	ctx    context.Context
	conn   *policy.Conn
	macros map[string]string
}

func (st *connState) merge(m map[string]string) {
	if len(m) == 0 {
		return
	}
	if st.macros == nil {
		st.macros = map[string]string{}
	}
	for k, v := range m {
		st.macros[k] = v
	}
	if st.conn != nil {
		st.conn.AddMacros(m)
		st.conn.SetQueueID(m["i"])
	}
}

func (st *connState) close() {
	if st.conn != nil {
		st.conn.Close()
	}
}

// session is go-milter's handler; there may be several per connection.
type session struct{ st *connState }

func (s *session) Connect(host, family string, port uint16, addr net.IP, m *gomilter.Modifier) (gomilter.Response, error) {
	st := s.st
	st.merge(m.Macros)
	if st.conn != nil {
		// A second Connect on one MTA connection starts a new SMTP session.
		st.conn.Close()
	}
	info := policy.ConnInfo{Name: host, Front: "milter", Macros: st.macros}
	if ip, ok := netip.AddrFromSlice(addr); ok && (family == "tcp4" || family == "tcp6") {
		info.IP = ip.Unmap()
	}
	if host == "unknown" || strings.HasPrefix(host, "[") {
		// Postfix names a client without a verified name by its address.
		info.Name = ""
	}
	c, v := st.srv.engine.Connect(st.ctx, info)
	st.conn = c
	return response(v), nil
}

func (s *session) Helo(name string, m *gomilter.Modifier) (gomilter.Response, error) {
	c, err := s.conn(m)
	if err != nil {
		return nil, err
	}
	return response(c.Helo(s.st.ctx, name)), nil
}

func (s *session) MailFrom(from string, m *gomilter.Modifier) (gomilter.Response, error) {
	c, err := s.conn(m)
	if err != nil {
		return nil, err
	}
	mac := s.st.macros
	info := policy.MailInfo{
		AuthUser:   mac["{auth_authen}"],
		TLS:        mac["{tls_version}"] != "",
		TLSVersion: mac["{tls_version}"],
		QueueID:    mac["i"],
	}
	return response(c.Mail(s.st.ctx, from, info)), nil
}

func (s *session) RcptTo(rcpt string, m *gomilter.Modifier) (gomilter.Response, error) {
	c, err := s.conn(m)
	if err != nil {
		return nil, err
	}
	return response(c.Rcpt(s.st.ctx, rcpt)), nil
}

func (s *session) Header(name, value string, m *gomilter.Modifier) (gomilter.Response, error) {
	c, err := s.conn(m)
	if err != nil {
		return nil, err
	}
	c.Header(name, value)
	return gomilter.RespContinue, nil
}

func (s *session) Headers(_ textproto.MIMEHeader, m *gomilter.Modifier) (gomilter.Response, error) {
	c, err := s.conn(m)
	if err != nil {
		return nil, err
	}
	return response(c.EndOfHeaders(s.st.ctx)), nil
}

func (s *session) BodyChunk(chunk []byte, m *gomilter.Modifier) (gomilter.Response, error) {
	c, err := s.conn(m)
	if err != nil {
		return nil, err
	}
	if err := c.Body(chunk); err != nil {
		s.st.srv.log.Warn("message body not checked", "queue_id", c.Facts().QueueID, "err", err)
	}
	return gomilter.RespContinue, nil
}

func (s *session) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	c, err := s.conn(m)
	if err != nil {
		return nil, err
	}
	v := c.EndOfMessage(s.st.ctx)
	if v.Action == policy.Accept || v.Action == policy.Quarantine {
		if err := applyEdits(m, v, c.Facts().Headers); err != nil {
			// The MTA connection is broken; the MTA applies its default action.
			return nil, err
		}
	}
	if v.Action == policy.Quarantine {
		if err := m.Quarantine(oneLine(v.Reason)); err != nil {
			return nil, err
		}
		return gomilter.RespAccept, nil
	}
	return response(v), nil
}

func (s *session) Abort(m *gomilter.Modifier) error {
	if s.st.conn != nil {
		s.st.conn.Abort()
	}
	return nil
}

// conn merges this stage's macros and returns the engine connection.
func (s *session) conn(m *gomilter.Modifier) (*policy.Conn, error) {
	s.st.merge(m.Macros)
	if s.st.conn == nil {
		return nil, errors.New("milter command before connect")
	}
	return s.st.conn, nil
}

// applyEdits removes forged headers and adds ours, in milter terms.
func applyEdits(m *gomilter.Modifier, v policy.Verdict, have []policy.Header) error {
	// Delete from the last so earlier indexes stay valid.
	for i := len(v.Remove) - 1; i >= 0; i-- {
		r := v.Remove[i]
		if err := m.ChangeHeader(r.Index, r.Name, ""); err != nil {
			return err
		}
	}
	for _, h := range v.Headers {
		var err error
		switch {
		case h.Replace:
			n := 0
			for _, x := range have {
				if strings.EqualFold(x.Name, h.Name) {
					n++
				}
			}
			for i := n; i >= 1; i-- {
				if err = m.ChangeHeader(i, h.Name, ""); err != nil {
					return err
				}
			}
			err = m.AddHeader(h.Name, h.Value)
		case h.Prepend:
			err = m.InsertHeader(0, h.Name, h.Value)
		default:
			err = m.AddHeader(h.Name, h.Value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// response turns a verdict into a milter reply.
func response(v policy.Verdict) gomilter.Response {
	switch v.Action {
	case policy.Accept:
		return gomilter.RespAccept
	case policy.Discard:
		return gomilter.RespDiscard
	case policy.Reject, policy.Tempfail:
		v = v.WithDefaults()
		return gomilter.NewResponseStr('y', replyText(v))
	}
	return gomilter.RespContinue
}

// replyText formats an SMTP reply for SMFIR_REPLYCODE: one line, and '%'
// doubled because the MTA expands it like printf.
func replyText(v policy.Verdict) string {
	return strings.ReplaceAll(strconv.Itoa(v.Code)+" "+v.Enhanced+" "+oneLine(v.Text), "%", "%%")
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return ' '
		}
		return r
	}, s)
}
