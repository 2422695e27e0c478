package milter

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailward/mailward/checks"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/proxy"
)

// frontRules exercises the front's translation of each kind of verdict.
// The engine and rule files have their own tests; here the point is what
// Postfix does with our answers.
func frontRules(seen *sync.Map) policy.Rules {
	return policy.RulesFunc(func(_ context.Context, st policy.Stage, f *policy.Facts, m *[]policy.Match) policy.Verdict {
		switch st {
		case policy.StageMail:
			if f.MailFrom == "spammer@bad.example" {
				return policy.Verdict{Action: policy.Reject, Code: 550, Enhanced: "5.7.1", Text: "Sender spammer@bad.example refused", Rule: "bad-sender"}
			}
		case policy.StageRcpt:
			if strings.HasPrefix(f.Rcpt, "refused@") {
				return policy.Verdict{Action: policy.Reject, Code: 550, Enhanced: "5.1.1", Text: "No such user here"}
			}
		case policy.StageEOM:
			seen.Store(f.Header("Subject"), f.IP.String()+" "+f.Helo)
			return policy.Verdict{Action: policy.Continue, Headers: []policy.HeaderEdit{
				{Name: "X-Mailward-Test", Value: "client=" + f.IP.String() + " helo=" + f.Helo + " rcpts=" + strings.Join(f.Rcpts, ",")},
			}}
		}
		return policy.Verdict{}
	})
}

type rig struct {
	engine  *policy.Engine
	postfix *testenv.Postfix
	sink    *testenv.Sink
	server  *Server
	seen    *sync.Map
}

func startRig(t *testing.T) *rig { return startRigChecks(t, nil) }

// startRigChecks is startRig with checks run by the engine.
func startRigChecks(t *testing.T, checker policy.Checker) *rig {
	t.Helper()
	return startRigWith(t, checker, nil)
}

// startRigWith is startRigChecks with the server adjusted before it serves.
func startRigWith(t *testing.T, checker policy.Checker, adjust func(*Server)) *rig {
	t.Helper()
	return startRigSettings(t, policy.Settings{Hostname: "mw.test.example"}, checker, adjust)
}

// startRigSettings is startRigWith with the engine's settings given.
func startRigSettings(t *testing.T, settings policy.Settings, checker policy.Checker, adjust func(*Server)) *rig {
	t.Helper()
	testenv.Require(t, "postfix")
	ln, err := proxy.Listen("inet:127.0.0.1:0", 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := &sync.Map{}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	eng := policy.NewEngine(settings, checker, frontRules(seen), log)
	srv := New(eng, 30*time.Second, log)
	if adjust != nil {
		adjust(srv)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	sink := testenv.StartSink(t)
	// The documented snippet, as written, with only the address changed.
	main := testenv.ReadMainCf(t, "../../examples/postfix/main.cf.milter")
	if main["smtpd_milters"] != "inet:127.0.0.1:8891" || main["milter_default_action"] != "tempfail" {
		t.Fatalf("examples/postfix/main.cf.milter changed: %v", main)
	}
	main["smtpd_milters"] = "inet:" + ln.Addr().String()
	pf := testenv.StartPostfix(t, testenv.PostfixConfig{RelayTo: sink.Addr(), Main: main})
	return &rig{engine: eng, postfix: pf, sink: sink, server: srv, seen: seen}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func message(subject string, extra ...string) string {
	h := "From: Alice <alice@sender.example>\r\nTo: bob@rcpt.example\r\nSubject: " + subject + "\r\n" +
		"Message-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@sender.example>\r\n"
	for _, e := range extra {
		h += e + "\r\n"
	}
	return h + "\r\nHello Bob.\r\n"
}

func TestPostfixRejectsSender(t *testing.T) {
	r := startRig(t)
	out, err := testenv.Swaks(t, r.postfix.SMTPAddr(), "--from", "spammer@bad.example", "--to", "bob@rcpt.example")
	if err == nil {
		t.Fatalf("swaks succeeded; want the sender refused:\n%s", out)
	}
	if !strings.Contains(out, "550 5.7.1 Sender spammer@bad.example refused") {
		t.Fatalf("want the configured 550 5.7.1 reply, got:\n%s", out)
	}
}

func TestPostfixAddsAuthResultsAndRemovesForged(t *testing.T) {
	r := startRig(t)
	body := message("forged results", testenv.ForgedResults("mw.test.example")[0], testenv.OtherResults)
	out, err := testenv.Swaks(t, r.postfix.SMTPAddr(), "--from", "alice@sender.example", "--to", "bob@rcpt.example", "--data", body)
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	msgs, err := r.sink.Wait(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h := msgs[0].Header()
	testenv.CheckResults(t, h, "mw.test.example", true)
	if !strings.Contains(h, "X-Mailward-Test: client=127.0.0.1 helo=client.test.example") {
		t.Errorf("rule header missing or wrong:\n%s", h)
	}
}

func TestPostfixTwoMessagesOneConnection(t *testing.T) {
	r := startRig(t)
	// The first message's recipient is refused, and the second message
	// must still see the connection's facts.
	var batch []testenv.Message
	for i := 1; i <= 2; i++ {
		batch = append(batch, testenv.Message{From: "alice@sender.example",
			Rcpts: []string{"refused@rcpt.example", "bob@rcpt.example"}, Data: message(fmt.Sprintf("message %d", i))})
	}
	for i, rcpts := range testenv.SMTPSession(t, r.postfix.SMTPAddr(), "multi.test.example", batch...) {
		if rcpts[0] == nil || rcpts[1] != nil {
			t.Fatalf("message %d: RCPT refused@ got %v, bob@ got %v; want only refused@ refused", i+1, rcpts[0], rcpts[1])
		}
	}
	msgs, err := r.sink.Wait(2, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if !strings.Contains(m.Header(), "X-Mailward-Test: client=127.0.0.1 helo=multi.test.example rcpts=bob@rcpt.example") {
			t.Errorf("message lost connection facts:\n%s", m.Header())
		}
	}
	for i := 1; i <= 2; i++ {
		v, ok := r.seen.Load(fmt.Sprintf("message %d", i))
		if !ok || v != "127.0.0.1 multi.test.example" {
			t.Errorf("message %d: engine saw %v at end of message", i, v)
		}
	}
}

// With the space after the colon kept (SMFIP_HDR_LEADSPC), the verifier
// sees each header field byte for byte: a signature with "simple" header
// canonicalization over fields written without that space, or with two,
// verifies through Postfix.
func TestPostfixDKIMSimpleHeaders(t *testing.T) {
	testenv.Require(t, "postfix")
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dnsSrv := testenv.StartDNS(t, fmt.Sprintf(`
$TTL 300
$ORIGIN sender.example.
@              IN SOA ns hostmaster 1 3600 600 86400 60
s1._domainkey  IN TXT "v=DKIM1; k=ed25519; p=%s"
`, base64.StdEncoding.EncodeToString(pub)))
	res, err := resolver.New(resolver.Config{Servers: []string{dnsSrv.Addr()}, Timeout: time.Second, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	cfg := checks.DefaultConfig()
	cfg.Hostname = "mw.test.example"
	cfg.SPF.Enable, cfg.IPRev.Enable, cfg.DMARC.Enable = false, false, false
	suite, err := checks.New(cfg, res)
	if err != nil {
		t.Fatal(err)
	}
	r := startRigChecks(t, suite)

	msg := "From: Alice <alice@sender.example>\r\nTo: bob@rcpt.example\r\nSubject:tight\r\n" +
		"X-Spacing:  two\r\nMessage-ID: <simple@sender.example>\r\n\r\nHello Bob.\r\n"
	var signed bytes.Buffer
	err = dkim.Sign(&signed, strings.NewReader(msg), &dkim.SignOptions{
		Domain: "sender.example", Selector: "s1", Signer: key,
		HeaderKeys:             []string{"From", "Subject", "X-Spacing", "Message-ID"},
		HeaderCanonicalization: dkim.CanonicalizationSimple,
		BodyCanonicalization:   dkim.CanonicalizationSimple,
	})
	if err != nil {
		t.Fatal(err)
	}
	out, err := testenv.Swaks(t, r.postfix.SMTPAddr(), "--from", "alice@sender.example", "--to", "bob@rcpt.example", "--data", signed.String())
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	msgs, err := r.sink.Wait(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h := msgs[0].Header()
	if !strings.Contains(h, "Subject:tight") {
		t.Fatalf("Postfix changed the test header:\n%s", h)
	}
	if !strings.Contains(h, "dkim=pass header.d=sender.example") {
		t.Fatalf("want dkim=pass for a simple/simple signature:\n%s", h)
	}
}

func TestPostfixOneRecipientOfThreeRejected(t *testing.T) {
	r := startRig(t)
	out, err := testenv.Swaks(t, r.postfix.SMTPAddr(), "--from", "alice@sender.example",
		"--to", "one@rcpt.example,refused@rcpt.example,two@rcpt.example", "--data", message("three rcpts"))
	if !strings.Contains(out, "550 5.1.1 No such user here") {
		t.Fatalf("want the refused recipient's reply; swaks err=%v:\n%s", err, out)
	}
	msgs, err := r.sink.Wait(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(msgs[0].To, ",")
	if got != "one@rcpt.example,two@rcpt.example" {
		t.Fatalf("sink recipients = %s; want the two accepted ones", got)
	}
}

func TestPostfixMilterDown(t *testing.T) {
	r := startRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.server.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := testenv.Swaks(t, r.postfix.SMTPAddr(), "--from", "alice@sender.example", "--to", "bob@rcpt.example")
	if err == nil || !strings.Contains(out, "451 4.7.1") {
		t.Fatalf("with mailward down want Postfix's milter_default_action (tempfail), got err=%v:\n%s", err, out)
	}
	if n := len(r.sink.Messages()); n != 0 {
		t.Fatalf("%d messages reached the sink unfiltered", n)
	}
}
