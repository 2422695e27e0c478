package policyd

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
)

// The address in examples/postfix/main.cf.policy; tests put theirs in its place.
const exampleAddr = "inet:127.0.0.1:10040"

type rig struct {
	postfix *testenv.Postfix
	sink    *testenv.Sink
	srv     *Server
	eng     *policy.Engine
	calls   *calls
}

func startRig(t *testing.T) *rig {
	t.Helper()
	testenv.Require(t, "postfix")
	testenv.Require(t, "swaks")
	lb := &logBuf{t: t}
	log := slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := &calls{}
	eng := policy.NewEngine(policy.Settings{Hostname: "mw.test.example"}, nil, testRules(c), log)
	ln, err := Listen(Config{Listen: "inet:127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	srv := New(eng, Config{}, log)
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if n := eng.Open("policy"); n != 0 {
			t.Errorf("%d engine connections open after shutdown", n)
		}
	})
	sink := testenv.StartSink(t)

	// The documented snippet, as written, with only the address changed.
	main := testenv.ReadMainCf(t, "../../examples/postfix/main.cf.policy")
	for _, k := range []string{"smtpd_recipient_restrictions", "smtpd_data_restrictions", "smtpd_end_of_data_restrictions"} {
		if strings.TrimSpace(main[k]) != "check_policy_service "+exampleAddr {
			t.Fatalf("examples/postfix/main.cf.policy: %s = %q; the test expects check_policy_service %s", k, main[k], exampleAddr)
		}
	}
	if !strings.HasPrefix(main["smtpd_policy_service_default_action"], "451 4.3.5") {
		t.Fatalf("examples/postfix/main.cf.policy: smtpd_policy_service_default_action = %q; want a 451 4.3.5 deferral",
			main["smtpd_policy_service_default_action"])
	}
	for k, v := range main {
		main[k] = strings.ReplaceAll(v, exampleAddr, "inet:"+ln.Addr().String())
	}
	pf := testenv.StartPostfix(t, testenv.PostfixConfig{RelayTo: sink.Addr(), Main: main})
	return &rig{postfix: pf, sink: sink, srv: srv, eng: eng, calls: c}
}

func testMessage(subject string) string {
	return "From: Alice <alice@sender.example>\r\nTo: bob@rcpt.example\r\nSubject: " + subject + "\r\n" +
		"Message-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@sender.example>\r\n\r\nHello Bob.\r\n"
}

func TestPostfixRejects(t *testing.T) {
	r := startRig(t)
	for _, c := range []struct{ from, to, reply string }{
		{"spammer@bad.example", "bob@rcpt.example", "550 5.7.1 <bob@rcpt.example>: Recipient address rejected: Sender spammer@bad.example refused"},
		{"alice@sender.example", "refused@rcpt.example", "550 5.7.1 <refused@rcpt.example>: Recipient address rejected: No such user here"},
		{"alice@sender.example", "later@rcpt.example", "451 4.7.1 <later@rcpt.example>: Recipient address rejected: Greylisted, try again"},
	} {
		out, err := testenv.Swaks(t, r.postfix.SMTPAddr(), "--from", c.from, "--to", c.to)
		if err == nil {
			t.Errorf("mail from %s to %s was accepted:\n%s", c.from, c.to, out)
		}
		if !strings.Contains(out, c.reply) {
			t.Errorf("mail from %s to %s: want the reply %q, got:\n%s", c.from, c.to, c.reply, out)
		}
	}
	if n := len(r.sink.Messages()); n != 0 {
		t.Fatalf("%d refused messages reached the sink", n)
	}
}

// A rule header at RCPT and Authentication-Results at DATA both reach
// the message; the header decided at end of message cannot.
func TestPostfixPrepend(t *testing.T) {
	r := startRig(t)
	out, err := testenv.Swaks(t, r.postfix.SMTPAddr(), "--from", "prepend@sender.example", "--to", "bob@rcpt.example", "--data", testMessage("prepend"))
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	msgs, err := r.sink.Wait(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h := msgs[0].Header()
	rule := strings.Index(h, "X-Mailward-Test: client=127.0.0.1 helo=client.test.example rcpt=bob@rcpt.example\r\n")
	ar := strings.Index(h, "Authentication-Results: mw.test.example; none\r\n")
	if rule < 0 || ar < 0 {
		t.Fatalf("prepended headers missing:\n%s", h)
	}
	if rule > ar {
		t.Errorf("headers out of order: Postfix keeps the order they were prepended in:\n%s", h)
	}
	if strings.Contains(h, "X-Mailward-Late") {
		t.Errorf("a header decided at end of message was applied:\n%s", h)
	}
}

// One message to three recipients: one policy connection, five requests
// (three RCPT, DATA, END-OF-MESSAGE), and the MAIL stage run once.
func TestPostfixMultiRecipientMessage(t *testing.T) {
	r := startRig(t)
	out, err := testenv.Swaks(t, r.postfix.SMTPAddr(), "--from", "alice@sender.example",
		"--to", "one@rcpt.example,refused@rcpt.example,two@rcpt.example", "--data", testMessage("three rcpts"))
	if !strings.Contains(out, "No such user here") {
		t.Fatalf("want the refused recipient's reply; swaks err=%v:\n%s", err, out)
	}
	msgs, err := r.sink.Wait(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(msgs[0].To, ","); got != "one@rcpt.example,two@rcpt.example" {
		t.Fatalf("sink recipients = %s; want the two accepted ones", got)
	}
	if got := fmt.Sprint(r.calls); got != "connect=1 helo=1 mail=1 rcpt=3 data=1 eom=1" {
		t.Fatalf("engine stages: %s; want each once per message, rcpt once per recipient", got)
	}
	st := r.srv.Stats()
	if st.Connections != 1 || st.Requests != 5 || st.Malformed != 0 {
		t.Fatalf("stats = %+v; want 5 requests on 1 connection", st)
	}
	if got := r.calls.eom[0]; !strings.HasPrefix(got, "from=alice@sender.example rcpts=one@rcpt.example,two@rcpt.example size=") || strings.Contains(got, " size=0 ") {
		t.Fatalf("engine at end of message: %s; want the accepted recipients and the size Postfix measured", got)
	}
}

// Two messages in one SMTP session: all requests on one policy
// connection, the connect stage once, the MAIL stage once per message.
func TestPostfixOneSessionManyMessages(t *testing.T) {
	r := startRig(t)
	rcpts := []string{"one@rcpt.example", "refused@rcpt.example", "two@rcpt.example"}
	var batch []testenv.Message
	for i := 1; i <= 2; i++ {
		batch = append(batch, testenv.Message{From: "alice@sender.example", Rcpts: rcpts, Data: testMessage(fmt.Sprintf("message %d", i))})
	}
	for i, errs := range testenv.SMTPSession(t, r.postfix.SMTPAddr(), "multi.test.example", batch...) {
		for j, err := range errs {
			if refused := strings.HasPrefix(rcpts[j], "refused@"); refused != (err != nil) {
				t.Fatalf("message %d, RCPT %s: %v", i+1, rcpts[j], err)
			}
		}
	}
	msgs, err := r.sink.Wait(2, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if got := strings.Join(m.To, ","); got != "one@rcpt.example,two@rcpt.example" {
			t.Errorf("sink recipients = %s", got)
		}
	}
	if got := fmt.Sprint(r.calls); got != "connect=1 helo=1 mail=2 rcpt=6 data=2 eom=2" {
		t.Fatalf("engine stages: %s", got)
	}
	if st := r.srv.Stats(); st.Connections != 1 || st.Requests != 10 {
		t.Fatalf("stats = %+v; want 10 requests on 1 connection", st)
	}
	for i, e := range r.calls.eom {
		if !strings.Contains(e, "rcpts=one@rcpt.example,two@rcpt.example") || !strings.Contains(e, "helo=multi.test.example") {
			t.Errorf("message %d: engine at end of message: %s", i+1, e)
		}
	}
}

func TestPostfixHoldAndDiscard(t *testing.T) {
	r := startRig(t)
	if out, err := testenv.Swaks(t, r.postfix.SMTPAddr(), "--from", "hold@sender.example", "--to", "bob@rcpt.example", "--data", testMessage("hold")); err != nil {
		t.Fatalf("held message not accepted: %v\n%s", err, out)
	}
	if err := r.postfix.WaitLog("hold: END-OF-MESSAGE", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.postfix.Log(), "held for review by test") {
		t.Fatal("the quarantine reason is not in Postfix's log")
	}
	if out, err := testenv.Swaks(t, r.postfix.SMTPAddr(), "--from", "discard@sender.example", "--to", "bob@rcpt.example", "--data", testMessage("discard")); err != nil {
		t.Fatalf("discarded message not accepted: %v\n%s", err, out)
	}
	if err := r.postfix.WaitLog("discarded by test", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// A message sent after both arrives alone: neither went on.
	if out, err := testenv.Swaks(t, r.postfix.SMTPAddr(), "--from", "alice@sender.example", "--to", "bob@rcpt.example", "--data", testMessage("plain")); err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	msgs, err := r.sink.Wait(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || !strings.Contains(msgs[0].Header(), "Subject: plain") {
		t.Fatalf("sink got %d messages, first:\n%s", len(msgs), msgs[0].Header())
	}
}

// With mailward down Postfix applies the example's default action.
func TestPostfixPolicyServiceDown(t *testing.T) {
	r := startRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := testenv.Swaks(t, r.postfix.SMTPAddr(), "--from", "alice@sender.example", "--to", "bob@rcpt.example")
	if err == nil || !strings.Contains(out, "451 4.3.5") {
		t.Fatalf("with mailward down want smtpd_policy_service_default_action (451 4.3.5), got err=%v:\n%s", err, out)
	}
	if n := len(r.sink.Messages()); n != 0 {
		t.Fatalf("%d messages reached the sink unchecked", n)
	}
}
