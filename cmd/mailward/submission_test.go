package main

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	gosasl "github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailward/mailward/internal/testenv"
)

const submissionRules = `rules:
  - name: submission-needs-login
    description: the submission port takes mail from logged-in users only
    when: auth_user == ""
    action: reject
    code: "550 5.7.1"
    message: "Log in to send mail"
  - name: mark-alice
    when: auth_user == "alice"
    action: add_header
    header: {name: X-Submitted-By, value: "{{auth_user}}"}
`

const (
	submitPass = "Tr0ub4dor-and-3"
	badPass    = "Hunter2-wrong"
)

// submission is mailward as the submission front of Postfix's
// submission service, configured as examples/postfix/master.cf.submission
// writes it, with Dovecot SASL behind Postfix.
type submission struct {
	p         *proc
	dir, addr string
	admin     string // HOST:PORT of /metrics
	sink      *testenv.Sink
	pf        *testenv.Postfix
	cert      *testenv.TestCert
}

// authCfg is the smtp.auth lines; DOVECOT_SOCKET in it stands for the
// test Dovecot's socket.
func startSubmission(t *testing.T, authCfg, extra string) *submission {
	t.Helper()
	testenv.Require(t, "postfix")
	dc := testenv.StartDovecot(t, map[string]string{"alice": submitPass})
	dir := t.TempDir()
	sink := testenv.StartSink(t)
	cert := testenv.SelfSignedCert(t, "submit.test.example", "mx.test.example")

	upstream := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	master := testenv.ReadMasterCf(t, "../../examples/postfix/master.cf.submission")
	if len(master) != 1 || !strings.HasPrefix(master[0], "127.0.0.1:10587 inet") || !strings.Contains(master[0], "-o smtpd_sasl_path=private/auth\n") ||
		!strings.Contains(master[0], "-o smtpd_relay_restrictions=permit_sasl_authenticated,reject") {
		t.Fatalf("examples/postfix/master.cf.submission changed: %q", master)
	}
	// On a free port, and Dovecot's socket where the test's Dovecot has it.
	master[0] = strings.Replace(master[0], "127.0.0.1:10587", upstream, 1)
	master[0] = strings.Replace(master[0], "smtpd_sasl_path=private/auth", "smtpd_sasl_path="+dc.Socket(), 1)
	pf := testenv.StartPostfix(t, testenv.PostfixConfig{RelayTo: sink.Addr(), Master: master, Main: map[string]string{
		"smtpd_tls_cert_file": cert.CertFile,
		"smtpd_tls_key_file":  cert.KeyFile,
	}})

	if err := os.Mkdir(filepath.Join(dir, "rules.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "rules.d/submission.yaml", submissionRules)
	milterAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	proxyAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg := writeFile(t, dir, "mailward.yaml", baseConfig(t, milterAddr)+fmt.Sprintf(`admin:
  listen: %s
rules:
  files: ["rules.d/*.yaml"]
journal:
  path: journal/mail.jsonl
smtp:
  listen: %s
  upstream: %s
  tls_cert: %s
  tls_key: %s
  auth_fail_limit: 5
  auth_fail_window: 10m
`, adminAddr, proxyAddr, upstream, cert.CertFile, cert.KeyFile)+strings.ReplaceAll(authCfg, "DOVECOT_SOCKET", dc.Socket())+extra)
	return &submission{dir: dir, addr: proxyAddr, admin: adminAddr, sink: sink, pf: pf, cert: cert, p: startProc(t, cfg, proxyAddr)}
}

// startTLS connects to the proxy, says EHLO and starts TLS.
func (s *submission) startTLS(t *testing.T) *gosmtp.Client {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := gosmtp.NewClientStartTLS(c, &tls.Config{RootCAs: s.cert.Pool, ServerName: "submit.test.example"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	if err := cl.Hello("laptop.test.example"); err != nil {
		t.Fatal(err)
	}
	return cl
}

// TestSubmissionBehindProxy: AUTH before STARTTLS is refused, a bad
// password is refused, a good one makes the user visible to the rules,
// and the message the rules refuse unauthenticated is relayed
// authenticated. Neither the log nor the journal holds a password.
func TestSubmissionBehindProxy(t *testing.T) {
	s := startSubmission(t, "  auth: relay\n", "")
	p, proxyAddr, sink, pf, dir := s.p, s.addr, s.sink, s.pf, s.dir
	startTLS := func() *gosmtp.Client { return s.startTLS(t) }

	msg := "From: Alice <alice@sender.example>\r\nTo: bob@rcpt.example\r\nSubject: quarterly numbers\r\nMessage-ID: <q1@sender.example>\r\n\r\nHi Bob.\r\n"
	dial := func() *gosmtp.Client {
		c, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		cl := gosmtp.NewClient(c)
		t.Cleanup(func() { cl.Close() })
		if err := cl.Hello("laptop.test.example"); err != nil {
			t.Fatal(err)
		}
		return cl
	}
	sendMsg := func(c *gosmtp.Client) error {
		if err := c.Mail("alice@sender.example", nil); err != nil {
			return err
		}
		if err := c.Rcpt("bob@rcpt.example", nil); err != nil {
			return err
		}
		w, err := c.Data()
		if err != nil {
			return err
		}
		w.Write([]byte(msg))
		return w.Close()
	}
	code := func(err error) int {
		if se, ok := err.(*gosmtp.SMTPError); ok {
			return se.Code
		}
		return 0
	}

	// Before STARTTLS: no AUTH offered, and AUTH refused.
	c := dial()
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatal("AUTH offered before STARTTLS")
	}
	if err := c.Auth(gosasl.NewPlainClient("", "alice", submitPass)); code(err) != 530 {
		t.Fatalf("AUTH before STARTTLS: want 530, got %v", err)
	}
	c.Quit()

	// Unauthenticated over TLS: the rule refuses the message.
	c = startTLS()
	if ok, mechs := c.Extension("AUTH"); !ok || !strings.Contains(mechs, "PLAIN") {
		t.Fatalf("after STARTTLS want Postfix's mechanisms, got %v %q", ok, mechs)
	}
	if err := sendMsg(c); code(err) != 550 || !strings.Contains(err.Error(), "Log in to send mail") {
		t.Fatalf("unauthenticated: want the rule's 550, got %v", err)
	}
	c.Quit()

	// A bad password: Postfix's 535 comes through, and nothing is relayed.
	c = startTLS()
	if err := c.Auth(gosasl.NewPlainClient("", "alice", badPass)); code(err) != 535 {
		t.Fatalf("bad password: want 535, got %v", err)
	}
	if err := sendMsg(c); code(err) != 550 {
		t.Fatalf("after a failed AUTH: want the rule's 550, got %v", err)
	}
	c.Quit()

	// The good password: the same message goes through, marked by the rule
	// that saw auth_user == "alice".
	c = startTLS()
	if err := c.Auth(gosasl.NewLoginClient("alice", submitPass)); err != nil {
		t.Fatalf("AUTH LOGIN: %v", err)
	}
	if err := sendMsg(c); err != nil {
		t.Fatalf("authenticated: %v", err)
	}
	c.Quit()
	msgs, err := sink.Wait(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if h := msgs[0].Header(); !strings.Contains(h, "X-Submitted-By: alice") {
		t.Errorf("the rule did not see auth_user alice:\n%s", h)
	}
	if err := pf.WaitLog("sasl_method=LOGIN, sasl_username=alice", 10*time.Second); err != nil {
		t.Error(err)
	}
	_, metrics := httpDo(t, "GET", "http://"+s.admin+"/metrics")
	for _, want := range []string{`mailward_smtp_auth_total{outcome="ok"} 1`, `mailward_smtp_auth_total{outcome="failed"} 1`, `mailward_smtp_auth_total{outcome="blocked"} 0`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	j, err := os.ReadFile(filepath.Join(dir, "journal", "mail.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(j), `"auth_user":"alice"`) {
		t.Errorf("the journal has no auth_user alice:\n%s", j)
	}
	logged := p.out.String()
	found := false
	for _, l := range strings.Split(logged, "\n") {
		found = found || strings.Contains(l, "msg=transaction") && strings.Contains(l, "auth_user=alice")
	}
	if !found {
		t.Errorf("no transaction line with auth_user=alice in the log:\n%s", logged)
	}
	for _, pass := range []string{submitPass, badPass} {
		for _, form := range []string{pass, b64(pass), b64("\x00alice\x00" + pass)} {
			if strings.Contains(logged, form) {
				t.Errorf("the log holds a password (%q)", form)
			}
			if strings.Contains(string(j), form) {
				t.Errorf("the journal holds a password (%q)", form)
			}
		}
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestSubmissionSignsForAuthenticatedUser: with signing keys and no
// internal network that holds the client, mail is DKIM-signed because the
// client logged in through the proxy; the signature verifies with
// mailward's verifier, dkimpy and opendkim.
func TestSubmissionSignsForAuthenticatedUser(t *testing.T) {
	dir := t.TempDir()
	key, rec := keygen(t, dir, "sender.example", "sub1", false)
	s := startSubmission(t, "  auth: relay\n", "signing:\n  internal_networks: [192.0.2.0/24]\n  keys:\n    - {domain: sender.example, selector: sub1, key_file: "+key+"}\n")
	c := s.startTLS(t)
	if err := c.Auth(gosasl.NewPlainClient("", "alice", submitPass)); err != nil {
		t.Fatalf("AUTH PLAIN: %v", err)
	}
	msg := "From: Alice <alice@sender.example>\r\nTo: bob@rcpt.example\r\nSubject: signed for alice\r\n" +
		"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <signed1@sender.example>\r\n\r\nHi Bob, signed.\r\n"
	if err := c.SendMail("alice@sender.example", []string{"bob@rcpt.example"}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	msgs, err := s.sink.Wait(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h := msgs[0].Header()
	if !strings.Contains(h, "DKIM-Signature:") || !strings.Contains(h, "s=sub1;") || !strings.Contains(h, "X-Submitted-By: alice") {
		t.Fatalf("want alice's message signed with s=sub1:\n%s", h)
	}
	verifyAll(t, msgs[0].Data, map[string]string{"sub1._domainkey.sender.example": rec}, 1)
	waitOutput(t, s.p, "dkim_sign=signed", 10*time.Second)
}

// TestSubmissionDovecotMode: the same Postfix listener, with mailward
// asking Dovecot itself and telling Postfix the user by XCLIENT LOGIN.
func TestSubmissionDovecotMode(t *testing.T) {
	s := startSubmission(t, "  auth: dovecot\n  dovecot_socket: DOVECOT_SOCKET\n", "")
	c := s.startTLS(t)
	if ok, mechs := c.Extension("AUTH"); !ok || !strings.Contains(mechs, "PLAIN") {
		t.Fatalf("want Dovecot's mechanisms, got %v %q", ok, mechs)
	}
	if err := c.Auth(gosasl.NewPlainClient("", "alice", badPass)); err == nil || !strings.Contains(err.Error(), "535") {
		t.Fatalf("bad password: want 535, got %v", err)
	}
	if err := c.Auth(gosasl.NewPlainClient("", "alice", submitPass)); err != nil {
		t.Fatalf("AUTH PLAIN: %v", err)
	}
	msg := "From: Alice <alice@sender.example>\r\nTo: bob@rcpt.example\r\nSubject: via dovecot\r\nMessage-ID: <dv1@sender.example>\r\n\r\nHi.\r\n"
	if err := c.SendMail("alice@sender.example", []string{"bob@rcpt.example"}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	msgs, err := s.sink.Wait(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if h := msgs[0].Header(); !strings.Contains(h, "X-Submitted-By: alice") {
		t.Errorf("the rule did not see auth_user alice:\n%s", h)
	}
	if err := s.pf.WaitLog("sasl_username=alice", 10*time.Second); err != nil {
		t.Error(err)
	}
	if out := s.p.out.String(); strings.Contains(out, submitPass) || strings.Contains(out, b64("\x00alice\x00"+submitPass)) {
		t.Error("the log holds the password")
	}
}
