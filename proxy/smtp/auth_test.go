package smtp

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gosasl "github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailward/mailward/internal/testenv"
)

const (
	alicePass = "Correct-Horse-7"
	wrongPass = "Wrong-Battery-9"
)

// logBuffer keeps what was logged, for tests that look for what must not
// be there, and passes it on to the test log.
type logBuffer struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// authRig is client → proxy (smtp.auth: relay) → Postfix with Dovecot
// SASL → sink. Postfix relays only for authenticated clients, so a message it
// takes shows that the authentication reached it.
type authRig struct {
	*rig
	logs *logBuffer
	dc   *testenv.Dovecot
}

func startAuthRig(t *testing.T, cfg Config) *authRig {
	t.Helper()
	testenv.Require(t, "postfix")
	dc := testenv.StartDovecot(t, map[string]string{"alice": alicePass})
	main := testenv.DovecotSASL(dc)
	// XCLIENT makes the proxy's clients look like loopback ones: only
	// SASL lets them relay.
	main["smtpd_recipient_restrictions"] = "permit_sasl_authenticated, reject"
	main["smtpd_relay_restrictions"] = "permit_sasl_authenticated, reject"
	logs := &logBuffer{t: t}
	r := startRigLog(t, main, cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	return &authRig{rig: r, logs: logs, dc: dc}
}

// startRigLog is startRig with the proxy logging to log.
func startRigLog(t *testing.T, main map[string]string, cfg Config, log *slog.Logger) *rig {
	t.Helper()
	sink := testenv.StartSink(t)
	cert := testenv.SelfSignedCert(t, "proxy.test.example", "mx.test.example")
	pfMain := map[string]string{
		"smtpd_authorized_xclient_hosts": "127.0.0.0/8",
		"smtpd_tls_cert_file":            cert.CertFile,
		"smtpd_tls_key_file":             cert.KeyFile,
		"smtpd_tls_security_level":       "may",
	}
	maps.Copy(pfMain, main)
	pf := testenv.StartPostfix(t, testenv.PostfixConfig{RelayTo: sink.Addr(), Main: pfMain})
	cfg.Upstream = pf.SMTPAddr()
	if cfg.TLSCert == "" {
		cfg.TLSCert, cfg.TLSKey = cert.CertFile, cert.KeyFile
	}
	srv, addr := startProxyLog(t, cfg, log)
	return &rig{pf: pf, sink: sink, srv: srv, addr: addr, cert: cert}
}

// tlsClient says EHLO and STARTTLS with go-smtp's client.
func tlsClient(t *testing.T, addr string) *gosmtp.Client {
	t.Helper()
	c, err := gosmtp.NewClientStartTLS(dialFrom(t, "127.0.0.9", addr), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	if err := c.Hello("client.test.example"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	return c
}

// rawTLS is a raw client after EHLO, STARTTLS and a second EHLO, whose
// reply it returns.
func rawTLS(t *testing.T, from, addr string) (*rawClient, reply) {
	t.Helper()
	c := dialFrom(t, from, addr)
	rc := newRawClient(t, c)
	rc.expect(220)
	rc.send("EHLO client.test.example\r\n")
	rc.expect(250)
	rc.send("STARTTLS\r\n")
	rc.expect(220)
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	rc = newRawClient(t, tc)
	rc.send("EHLO client.test.example\r\n")
	return rc, rc.expect(250)
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func offersAuth(r reply) string {
	for _, l := range r.text[1:] {
		if strings.HasPrefix(l, "AUTH ") {
			return l
		}
	}
	return ""
}

func TestPostfixAuthRelayPlain(t *testing.T) {
	r := startAuthRig(t, Config{Auth: AuthRelay})

	// Unauthenticated, Postfix refuses to relay the very message that is
	// taken once the client logged in.
	c := tlsClient(t, r.addr)
	body := message("submitted")
	err := send(t, c, "alice@sender.example", []string{"bob@rcpt.example"}, body)
	if smtpCode(err) != 554 {
		t.Fatalf("unauthenticated: want Postfix's 554 at RCPT, got %v", err)
	}
	c.Quit()

	c = tlsClient(t, r.addr)
	if ok, mechs := c.Extension("AUTH"); !ok || !strings.Contains(mechs, "PLAIN") || !strings.Contains(mechs, "LOGIN") {
		t.Fatalf("after STARTTLS the proxy should offer Postfix's AUTH PLAIN LOGIN, got %v %q", ok, mechs)
	}
	if err := c.Auth(gosasl.NewPlainClient("", "alice", alicePass)); err != nil {
		t.Fatalf("AUTH PLAIN: %v", err)
	}
	if err := send(t, c, "alice@sender.example", []string{"bob@rcpt.example"}, body); err != nil {
		t.Fatalf("authenticated: %v", err)
	}
	c.Quit()
	msgs, err := r.sink.Wait(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if h := msgs[0].Header(); !strings.Contains(h, "login=alice") {
		t.Errorf("the rules did not see auth_user alice:\n%s", h)
	}
	if err := r.pf.WaitLog("sasl_method=PLAIN, sasl_username=alice", 10*time.Second); err != nil {
		t.Error(err)
	}
	if !transactionLine(r.logs.String(), "auth_user=alice") {
		t.Errorf("no transaction line with auth_user=alice in the log")
	}
	noSecrets(t, r.logs.String())
}

// noSecrets fails when a password, plain or in base64, is in s.
func noSecrets(t *testing.T, s string) {
	t.Helper()
	for _, p := range []string{alicePass, wrongPass} {
		for _, form := range []string{p, b64(p), b64("\x00alice\x00" + p), b64("alice\x00alice\x00" + p)} {
			if strings.Contains(s, form) {
				t.Errorf("a password (%q) is in the log", form)
			}
		}
	}
}

func TestPostfixAuthRelayLoginAndFailures(t *testing.T) {
	r := startAuthRig(t, Config{Auth: AuthRelay, AuthFailLimit: 3, AuthFailWindow: time.Hour})

	rc, _ := rawTLS(t, "127.0.0.9", r.addr)
	// LOGIN: the challenges are Postfix's, passed on as they came.
	rc.send("AUTH LOGIN\r\n")
	if ch := rc.expect(334); ch.text[0] != b64("Username:") {
		t.Fatalf("challenge %s", ch)
	}
	rc.send(b64("alice") + "\r\n")
	if ch := rc.expect(334); ch.text[0] != b64("Password:") {
		t.Fatalf("challenge %s", ch)
	}
	rc.send(b64(wrongPass) + "\r\n")
	rc.expect(535)
	// A cancelled exchange is no failure.
	rc.send("AUTH LOGIN\r\n")
	rc.expect(334)
	rc.send("*\r\n")
	rc.expect(501)
	rc.send("AUTH PLAIN " + b64("\x00alice\x00"+wrongPass) + "\r\n")
	rc.expect(535)
	rc.send("AUTH LOGIN " + b64("alice") + "\r\n")
	rc.expect(334)
	rc.send(b64(alicePass) + "\r\n")
	rc.expect(235)
	rc.send("AUTH PLAIN " + b64("\x00alice\x00"+alicePass) + "\r\n")
	rc.expect(503)
	rc.send("MAIL FROM:<alice@sender.example>\r\n")
	rc.expect(250)
	rc.send("RCPT TO:<bob@rcpt.example>\r\n")
	rc.expect(250)
	rc.send("QUIT\r\n")
	rc.expect(221)

	// Third failure from this address: the limit (3) is spent, and the
	// next AUTH is refused before anything reaches upstream, also on a
	// new connection.
	rc, _ = rawTLS(t, "127.0.0.9", r.addr)
	rc.send("AUTH PLAIN " + b64("\x00alice\x00"+wrongPass) + "\r\n")
	rc.expect(535)
	rc.send("AUTH PLAIN " + b64("\x00alice\x00"+alicePass) + "\r\n")
	if got := rc.expect(454); !strings.Contains(got.String(), "4.7.0 Too many failed authentications") {
		t.Fatalf("over the limit: %s", got)
	}
	rc2, _ := rawTLS(t, "127.0.0.9", r.addr)
	rc2.send("AUTH PLAIN " + b64("\x00alice\x00"+alicePass) + "\r\n")
	rc2.expect(454)
	// Another address is not affected.
	rc3, _ := rawTLS(t, "127.0.0.10", r.addr)
	rc3.send("AUTH PLAIN " + b64("\x00alice\x00"+alicePass) + "\r\n")
	rc3.expect(235)
	noSecrets(t, r.logs.String())
}

func TestPostfixAuthNotBeforeTLS(t *testing.T) {
	r := startAuthRig(t, Config{Auth: AuthRelay})
	rc := newRawClient(t, dialFrom(t, "127.0.0.9", r.addr))
	rc.expect(220)
	rc.send("EHLO client.test.example\r\n")
	if a := offersAuth(rc.expect(250)); a != "" {
		t.Fatalf("AUTH offered before TLS: %s", a)
	}
	rc.send("AUTH PLAIN " + b64("\x00alice\x00"+alicePass) + "\r\n")
	if got := rc.expect(530); !strings.Contains(got.String(), "5.7.0 Must issue a STARTTLS command first") {
		t.Fatalf("got %s", got)
	}
	if strings.Contains(r.pf.Log(), "sasl_username") {
		t.Fatal("AUTH reached Postfix before TLS")
	}

	// auth_plaintext: offered and relayed before TLS (upstream is on
	// loopback, and the proxy's own session to it is encrypted anyway).
	r2 := startAuthRig(t, Config{Auth: AuthRelay, AuthPlaintext: true})
	rc = newRawClient(t, dialFrom(t, "127.0.0.9", r2.addr))
	rc.expect(220)
	rc.send("EHLO client.test.example\r\n")
	if a := offersAuth(rc.expect(250)); !strings.Contains(a, "PLAIN") {
		t.Fatalf("auth_plaintext: AUTH not offered before TLS: %q", a)
	}
	rc.send("AUTH PLAIN " + b64("\x00alice\x00"+alicePass) + "\r\n")
	rc.expect(235)
}

func TestPostfixAuthLongLineAndEHLOForgets(t *testing.T) {
	r := startAuthRig(t, Config{Auth: AuthRelay})
	rc, ehlo := rawTLS(t, "127.0.0.9", r.addr)
	if a := offersAuth(ehlo); a == "" {
		t.Fatal("no AUTH after STARTTLS")
	}
	rc.send("AUTH LOGIN\r\n")
	rc.expect(334)
	rc.send(strings.Repeat("A", maxSASLLine+10) + "\r\n")
	rc.expect(500)
	rc.send("AUTH PLAIN\r\n")
	rc.expect(334)
	rc.send(b64("\x00alice\x00"+alicePass) + "\r\n")
	rc.expect(235)
	// A new EHLO starts the session over: AUTH is offered again and the
	// upstream session that held the login is gone.
	rc.send("EHLO client.test.example\r\n")
	if a := offersAuth(rc.expect(250)); a == "" {
		t.Fatal("AUTH not offered again after EHLO")
	}
	rc.send("MAIL FROM:<alice@sender.example>\r\n")
	rc.expect(250)
	rc.send("RCPT TO:<bob@rcpt.example>\r\n")
	rc.expect(554)
}

func TestAuthOffWithoutUpstreamAuth(t *testing.T) {
	sink := testenv.StartSink(t)
	cert := testenv.SelfSignedCert(t, "proxy.test.example")
	// Off (the default): no AUTH, as before.
	_, addr := startProxy(t, Config{Upstream: sink.Addr(), TLSCert: cert.CertFile, TLSKey: cert.KeyFile})
	rc, ehlo := rawTLS(t, "127.0.0.9", addr)
	if a := offersAuth(ehlo); a != "" {
		t.Fatalf("AUTH offered with smtp.auth off: %s", a)
	}
	rc.send("AUTH PLAIN " + b64("\x00alice\x00"+alicePass) + "\r\n")
	rc.expect(502)
	// Relay, but upstream offers no AUTH: nothing to offer.
	_, addr = startProxy(t, Config{Upstream: sink.Addr(), TLSCert: cert.CertFile, TLSKey: cert.KeyFile, Auth: AuthRelay})
	rc, ehlo = rawTLS(t, "127.0.0.9", addr)
	if a := offersAuth(ehlo); a != "" {
		t.Fatalf("AUTH offered though upstream has none: %s", a)
	}
	rc.send("AUTH PLAIN " + b64("\x00alice\x00"+alicePass) + "\r\n")
	rc.expect(504)
}

func TestAuthMechsNeverPlaintextToRemoteUpstream(t *testing.T) {
	up := caps{auth: []string{"PLAIN", "LOGIN", "GSSAPI", "SCRAM-SHA-256-PLUS", "CRAM-MD5"}}
	mk := func(cfg Config, tlsOn bool) *session {
		set, err := newSettings(cfg)
		if err != nil {
			t.Fatal(err)
		}
		s := &session{settings: set}
		if tlsOn {
			s.tlsState = &tls.ConnectionState{}
		}
		return s
	}
	cases := []struct {
		cfg  Config
		tls  bool
		want string
	}{
		{Config{Upstream: "127.0.0.1:25", Auth: AuthRelay}, true, "PLAIN LOGIN CRAM-MD5"},
		{Config{Upstream: "127.0.0.1:25", Auth: AuthRelay}, false, ""},
		{Config{Upstream: "127.0.0.1:25", Auth: AuthRelay, AuthPlaintext: true}, false, "PLAIN LOGIN CRAM-MD5"},
		{Config{Upstream: "127.0.0.1:25"}, true, ""},
		{Config{Upstream: "[::1]:25", Auth: AuthRelay, UpstreamTLS: "off"}, true, "PLAIN LOGIN CRAM-MD5"},
		{Config{Upstream: "192.0.2.1:25", Auth: AuthRelay, UpstreamTLS: "off"}, true, ""},
		{Config{Upstream: "192.0.2.1:25", Auth: AuthRelay}, true, "PLAIN LOGIN CRAM-MD5"},
	}
	for i, c := range cases {
		if got := strings.Join(mk(c.cfg, c.tls).authMechs(up), " "); got != c.want {
			t.Errorf("case %d: offered %q, want %q", i, got, c.want)
		}
	}
	for _, h := range []string{"127.0.0.1", "::1", "localhost", "::ffff:127.0.0.2"} {
		if !loopbackHost(h) {
			t.Errorf("%s is loopback", h)
		}
	}
	for _, h := range []string{"192.0.2.1", "mx.example", "::2"} {
		if loopbackHost(h) {
			t.Errorf("%s is not loopback", h)
		}
	}
}

func TestSASLUser(t *testing.T) {
	cases := []struct {
		mech string
		resp []string
		want string
	}{
		{"PLAIN", []string{b64("\x00alice\x00pw")}, "alice"},
		{"PLAIN", []string{b64("bob\x00alice\x00pw")}, "bob"},
		{"PLAIN", []string{b64("alice\x00pw")}, ""},
		{"PLAIN", []string{"!!"}, ""},
		{"PLAIN", []string{b64("\x00al\nice\x00pw")}, ""},
		{"LOGIN", []string{b64("alice"), b64("pw")}, "alice"},
		{"CRAM-MD5", []string{b64("alice 0123456789abcdef")}, "alice"},
		{"SCRAM-SHA-256", []string{b64("n,,n=al=2Cice,r=abc")}, "al,ice"},
		{"SCRAM-SHA-1", []string{b64("n,a=boss,n=alice,r=abc")}, "boss"},
		{"LOGIN", nil, ""},
		{"LOGIN", []string{b64(strings.Repeat("a", 300))}, ""},
	}
	for _, c := range cases {
		if got := saslUser(c.mech, c.resp); got != c.want {
			t.Errorf("%s %q: %q, want %q", c.mech, c.resp, got, c.want)
		}
	}
}

func TestAuthConfigProblems(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "x"), nil, 0o644)
	for _, c := range []struct {
		cfg Config
		key string
	}{
		{Config{Upstream: "127.0.0.1:25", Auth: "yes"}, "auth"},
		{Config{Upstream: "127.0.0.1:25", Auth: AuthDovecot}, "dovecot_socket"},
		{Config{Upstream: "127.0.0.1:25", Auth: AuthDovecot, DovecotSocket: "auth"}, "dovecot_socket"},
		{Config{Upstream: "127.0.0.1:25", AuthFailLimit: -1}, "auth_fail_limit"},
		{Config{Upstream: "127.0.0.1:25", AuthFailWindow: -time.Second}, "auth_fail_window"},
	} {
		p := c.cfg.Problems()
		if len(p) != 1 || p[0].Key != c.key {
			t.Errorf("%+v: problems %v, want one for %s", c.cfg, p, c.key)
		}
	}
}

func TestLoopbackConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !loopbackConn(c) {
		t.Error("a connection to 127.0.0.1 is on loopback")
	}
	// Anything that is not a TCP connection on loopback is not: AUTH is
	// then refused rather than relayed in plain text.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if loopbackConn(a) {
		t.Error("a pipe is not known to be on loopback")
	}
}

// transactionLine reports whether a transaction line of the log has want.
func transactionLine(log, want string) bool {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "msg=transaction") && strings.Contains(l, want) {
			return true
		}
	}
	return false
}

// A relayed exchange whose upstream goes away after the password was sent
// answers 454, and the error logged does not quote the password.
func TestPostfixAuthRelayLostKeepsPasswordOutOfLog(t *testing.T) {
	r := startAuthRig(t, Config{Auth: AuthRelay})
	cab := startCable(t, r.pf.SMTPAddr())
	cert := testenv.SelfSignedCert(t, "proxy.test.example")
	logs := &logBuffer{t: t}
	_, addr := startProxyLog(t, Config{Upstream: cab.addr(), Auth: AuthRelay, TLSCert: cert.CertFile, TLSKey: cert.KeyFile},
		slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	rc, _ := rawTLS(t, "127.0.0.9", addr)
	rc.send("AUTH LOGIN " + b64("alice") + "\r\n")
	rc.expect(334)
	cab.cut()
	rc.send(b64(alicePass) + "\r\n")
	rc.expect(454)
	if !strings.Contains(logs.String(), "AUTH: upstream connection lost") {
		t.Fatalf("the lost upstream was not logged:\n%s", logs.String())
	}
	noSecrets(t, logs.String())
}
