package policyd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/config"
	"github.com/mailward/mailward/policy"
)

// calls counts the stages the engine asked the rules about.
type calls struct {
	mu sync.Mutex
	n  map[policy.Stage]int
	// eom records what the engine knew at end of message.
	eom []string
}

func (c *calls) count(st policy.Stage) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[st]
}

func (c *calls) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for _, st := range policy.Stages {
		parts = append(parts, fmt.Sprintf("%s=%d", st, c.n[st]))
	}
	return strings.Join(parts, " ")
}

// testRules decide by address, so each test can drive the verdict it
// needs; every call is counted.
func testRules(c *calls) policy.Rules {
	return policy.RulesFunc(func(_ context.Context, st policy.Stage, f *policy.Facts, _ *[]policy.Match) policy.Verdict {
		c.mu.Lock()
		if c.n == nil {
			c.n = map[policy.Stage]int{}
		}
		c.n[st]++
		if st == policy.StageEOM {
			c.eom = append(c.eom, fmt.Sprintf("from=%s rcpts=%s size=%d helo=%s", f.MailFrom, strings.Join(f.Rcpts, ","), f.Size, f.Helo))
		}
		c.mu.Unlock()
		switch st {
		case policy.StageConnect:
			if f.IP.String() == "192.0.2.66" {
				return policy.Verdict{Action: policy.Reject, Code: 554, Enhanced: "5.7.1", Text: "Client blocked"}
			}
		case policy.StageMail:
			switch f.MailFrom {
			case "spammer@bad.example":
				return policy.Verdict{Action: policy.Reject, Code: 550, Enhanced: "5.7.1", Text: "Sender spammer@bad.example refused", Rule: "bad-sender"}
			case "hold@sender.example":
				return policy.Verdict{Action: policy.Quarantine, Reason: "held for review by test"}
			case "discard@sender.example":
				return policy.Verdict{Action: policy.Discard, Text: "discarded by test"}
			case "friend@sender.example":
				return policy.Verdict{Action: policy.Accept, Headers: []policy.HeaderEdit{{Name: "X-Mailward-Friend", Value: "yes"}}}
			}
		case policy.StageRcpt:
			switch {
			case strings.HasPrefix(f.Rcpt, "refused@"):
				return policy.Verdict{Action: policy.Reject, Code: 550, Enhanced: "5.7.1", Text: "No such user here"}
			case strings.HasPrefix(f.Rcpt, "later@"):
				return policy.Verdict{Action: policy.Tempfail, Code: 451, Enhanced: "4.7.1", Text: "Greylisted, try again"}
			}
			if f.MailFrom == "prepend@sender.example" {
				return policy.Verdict{Headers: []policy.HeaderEdit{
					{Name: "X-Mailward-Test", Value: "client=" + f.IP.String() + " helo=" + f.Helo + " rcpt=" + f.Rcpt},
				}}
			}
		case policy.StageData:
			if f.MailFrom == "data@sender.example" {
				return policy.Verdict{Headers: []policy.HeaderEdit{{Name: "X-Mailward-Data", Value: "rcpts=" + strings.Join(f.Rcpts, ",")}}}
			}
		case policy.StageEOM:
			if f.Size > 1000000 {
				return policy.Verdict{Action: policy.Reject, Text: "Too big for this test"}
			}
			return policy.Verdict{Headers: []policy.HeaderEdit{{Name: "X-Mailward-Late", Value: "never applied"}}}
		}
		return policy.Verdict{}
	})
}

// logBuf collects log records for assertions and shows them with -v.
type logBuf struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type local struct {
	srv   *Server
	eng   *policy.Engine
	calls *calls
	log   *logBuf
	addr  string
}

func startLocal(t *testing.T, cfg Config) *local {
	t.Helper()
	lb := &logBuf{t: t}
	log := slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := &calls{}
	eng := policy.NewEngine(policy.Settings{Hostname: "mw.test.example"}, nil, testRules(c), log)
	cfg.Listen = "inet:127.0.0.1:0"
	ln, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := New(eng, cfg, log)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
		if n := eng.Open("policy"); n != 0 {
			t.Errorf("%d engine connections open after shutdown", n)
		}
	})
	return &local{srv: srv, eng: eng, calls: c, log: lb, addr: ln.Addr().String()}
}

// client is a policy client as Postfix's smtpd is one.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	base map[string]string
}

func (l *local) dial(t *testing.T, kv ...string) *client {
	t.Helper()
	c, err := net.Dial("tcp", l.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	base := map[string]string{
		"request": "smtpd_access_policy", "protocol_name": "ESMTP", "client_address": "192.0.2.1",
		"client_name": "mail.client.example", "client_port": "40000", "helo_name": "mail.client.example",
		"sender": "alice@sender.example", "recipient_count": "0",
	}
	setAttrs(t, base, kv)
	return &client{t: t, conn: c, r: bufio.NewReader(c), base: base}
}

func setAttrs(t *testing.T, m map[string]string, kv []string) {
	t.Helper()
	for _, a := range kv {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			t.Fatalf("test attribute %q is not name=value", a)
		}
		m[k] = v
	}
}

// ask sends a request: the client's base attributes with kv (name=value)
// over them.
func (c *client) ask(state string, kv ...string) string {
	c.t.Helper()
	attrs := map[string]string{}
	for k, v := range c.base {
		attrs[k] = v
	}
	attrs["protocol_state"] = state
	setAttrs(c.t, attrs, kv)
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + attrs[k] + "\n")
	}
	return c.raw(b.String() + "\n")
}

// raw sends bytes and reads one answer.
func (c *client) raw(req string) string {
	c.t.Helper()
	c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.conn, req); err != nil {
		c.t.Fatalf("sending request: %v", err)
	}
	a, err := c.answer()
	if err != nil {
		c.t.Fatalf("reading answer: %v", err)
	}
	return a
}

func (c *client) answer() (string, error) {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	end, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if end != "\n" || !strings.HasPrefix(line, "action=") {
		return "", fmt.Errorf("answer %q %q is not action=...\\n\\n", line, end)
	}
	return strings.TrimSuffix(strings.TrimPrefix(line, "action="), "\n"), nil
}

// closed reports whether the server closed the connection (a reset
// counts: the server may close with the client's bytes unread).
func (c *client) closed() bool {
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.r.ReadByte()
	return err != nil && !isTimeout(err)
}

func want(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %q; want %q", what, got, want)
	}
}

func TestMalformedRequestsAnswerDeferAndKeepTheConnection(t *testing.T) {
	l := startLocal(t, Config{})
	c := l.dial(t)
	bad := []string{
		"garbage line\n\n",
		"=value\n\n",
		"\n",
		"request=junk\nprotocol_state=RCPT\n\n",
		"request=smtpd_access_policy\nclient_address=192.0.2.1\n\n",
		"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=999.1.1.1\n\n",
		"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=a\x00b\n\n",
	}
	for _, req := range bad {
		want(t, fmt.Sprintf("answer to %q", req), c.raw(req), "DEFER_IF_PERMIT Service temporarily unavailable")
	}
	// The same connection still serves well-formed requests.
	want(t, "answer after malformed requests", c.ask("RCPT", "recipient=bob@rcpt.example", "instance=1"), "PREPEND Authentication-Results: mw.test.example; none")
	if got := l.srv.Stats(); got.Malformed != int64(len(bad)) || got.Requests != int64(len(bad))+1 || got.Connections != 1 {
		t.Fatalf("stats = %+v; want %d malformed of %d requests on 1 connection", got, len(bad), len(bad)+1)
	}
	if n := strings.Count(l.log.String(), `msg="malformed policy request;`); n != len(bad) {
		t.Fatalf("%d malformed requests logged; want %d", n, len(bad))
	}
}

func TestOversizedRequestAnswersDeferAndCloses(t *testing.T) {
	for name, req := range map[string]string{
		"long line":   "request=smtpd_access_policy\nsender=" + strings.Repeat("x", MaxLine) + "\n\n",
		"big request": strings.Repeat("x_attr="+strings.Repeat("y", 900)+"\n", MaxRequest/900+1) + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			l := startLocal(t, Config{})
			c := l.dial(t)
			c.conn.SetDeadline(time.Now().Add(10 * time.Second))
			go io.WriteString(c.conn, req) // the server may stop reading midway
			a, err := c.answer()
			if err != nil || a != deferAnswer {
				t.Fatalf("answer = %q, %v; want %q", a, err, deferAnswer)
			}
			if !c.closed() {
				t.Fatal("connection still open after an oversized request")
			}
			if !strings.Contains(l.log.String(), "oversized policy request") {
				t.Fatal("oversized request not logged")
			}
			// The server itself goes on.
			want(t, "next connection", l.dial(t).ask("RCPT", "recipient=bob@rcpt.example", "instance=2", "client_port=2"),
				"PREPEND Authentication-Results: mw.test.example; none")
		})
	}
}

func TestTruncatedRequestIsNotAnswered(t *testing.T) {
	l := startLocal(t, Config{ReadTimeout: 200 * time.Millisecond})
	c := l.dial(t)
	io.WriteString(c.conn, "request=smtpd_access_policy\nprotocol_state=RCPT\n")
	// No empty line follows: the read timeout closes the connection
	// without an answer, which Postfix treats as a failed request.
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := c.r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("read %q, %v; want the connection closed unanswered", b, err)
	}
	if !strings.Contains(l.log.String(), "policy request not completed in time") {
		t.Fatal("timeout not logged")
	}
	c2 := l.dial(t)
	io.WriteString(c2.conn, "request=smtpd_access_policy\nprotocol_state=RCPT\n")
	c2.conn.Close()
	want(t, "next connection", l.dial(t).ask("CONNECT"), "DUNNO")
}

func TestIdleConnectionIsClosed(t *testing.T) {
	l := startLocal(t, Config{IdleTimeout: 200 * time.Millisecond})
	c := l.dial(t)
	want(t, "first request", c.ask("CONNECT"), "DUNNO")
	if !c.closed() {
		t.Fatal("idle connection not closed")
	}
	if n := l.eng.Open("policy"); n != 0 {
		t.Fatalf("%d engine connections open after the policy connection closed", n)
	}
}

// One message, three recipients: the engine's MAIL stage (SPF) runs once,
// each recipient once, and the instance is let go at end of message.
func TestOneMessageManyRecipients(t *testing.T) {
	l := startLocal(t, Config{})
	c := l.dial(t)
	inst := "instance=4a1.68ef0c.1a2b.0"
	for _, r := range []string{"one@rcpt.example", "refused@rcpt.example", "two@rcpt.example"} {
		c.ask("RCPT", "recipient="+r, inst)
	}
	// Postfix asks again when the check sits in two restriction lists.
	want(t, "repeated RCPT", c.ask("RCPT", "recipient=refused@rcpt.example", inst), "550 5.7.1 No such user here")
	want(t, "DATA", c.ask("DATA", inst, "recipient_count=2"), "DUNNO")
	if got := l.srv.Stats(); got.Instances != 1 || len(l.srv.byKeySnapshot()) != 1 {
		t.Fatalf("before end of message: %+v, keys %v", got, l.srv.byKeySnapshot())
	}
	want(t, "END-OF-MESSAGE", c.ask("END-OF-MESSAGE", inst, "recipient_count=2", "size=2048"), "OK")
	want(t, "repeated END-OF-MESSAGE", c.ask("END-OF-MESSAGE", inst, "recipient_count=2", "size=2048"), "OK")
	if got := fmt.Sprint(l.calls); got != "connect=1 helo=1 mail=1 rcpt=3 data=1 eom=1" {
		t.Fatalf("engine stages: %s", got)
	}
	if got := l.calls.eom[0]; got != "from=alice@sender.example rcpts=one@rcpt.example,two@rcpt.example size=2048 helo=mail.client.example" {
		t.Fatalf("engine at end of message: %s", got)
	}
	if keys := l.srv.byKeySnapshot(); len(keys) != 0 {
		t.Fatalf("instance still filed after end of message: %v", keys)
	}
	if !strings.Contains(l.log.String(), "headers=X-Mailward-Late") {
		t.Fatal("header edit at end of message not reported as unapplied")
	}
	c.conn.Close()
	waitFor(t, "engine connection closed with the policy connection", func() bool {
		return l.eng.Open("policy") == 0 && l.srv.Stats().Instances == 0
	})
}

// With smtpd_delay_reject = no Postfix asks at CONNECT, EHLO and MAIL
// before the message has an instance; RCPT then continues that session.
func TestEarlyStatesContinueIntoTheMessage(t *testing.T) {
	l := startLocal(t, Config{})
	c := l.dial(t)
	want(t, "CONNECT", c.ask("CONNECT", "helo_name=", "sender="), "DUNNO")
	want(t, "EHLO", c.ask("EHLO", "sender="), "DUNNO")
	want(t, "EHLO after STARTTLS", c.ask("EHLO", "sender=", "encryption_protocol=TLSv1.3"), "DUNNO")
	want(t, "MAIL", c.ask("MAIL"), "DUNNO")
	want(t, "RCPT", c.ask("RCPT", "recipient=bob@rcpt.example", "instance=a.1"), "PREPEND Authentication-Results: mw.test.example; none")
	want(t, "second RCPT", c.ask("RCPT", "recipient=carol@rcpt.example", "instance=a.1"), "DUNNO")
	want(t, "EOM", c.ask("END-OF-MESSAGE", "instance=a.1"), "OK")
	// The next message of the session keeps the connection's facts.
	want(t, "MAIL 2", c.ask("MAIL", "sender=spammer@bad.example"), "550 5.7.1 Sender spammer@bad.example refused")
	want(t, "RCPT 2", c.ask("RCPT", "sender=spammer@bad.example", "recipient=bob@rcpt.example", "instance=a.2"), "550 5.7.1 Sender spammer@bad.example refused")
	if got := fmt.Sprint(l.calls); got != "connect=1 helo=1 mail=2 rcpt=2 data=1 eom=1" {
		t.Fatalf("engine stages: %s", got)
	}
	// A new SMTP session (another client port) starts over.
	want(t, "new session", c.ask("RCPT", "client_port=40001", "recipient=bob@rcpt.example", "instance=b.1"), "PREPEND Authentication-Results: mw.test.example; none")
	if got := l.calls.count(policy.StageConnect); got != 2 {
		t.Fatalf("connect stage ran %d times; want 2", got)
	}
	if n := l.eng.Open("policy"); n != 1 {
		t.Fatalf("%d engine connections open; want the current session's only", n)
	}
}

func TestConnectRejectHoldsForTheSession(t *testing.T) {
	l := startLocal(t, Config{})
	c := l.dial(t, "client_address=192.0.2.66")
	want(t, "CONNECT", c.ask("CONNECT"), "554 5.7.1 Client blocked")
	want(t, "RCPT", c.ask("RCPT", "recipient=bob@rcpt.example", "instance=x.1"), "554 5.7.1 Client blocked")
}

// Headers go out one per RCPT or DATA answer: rule headers first, then
// Authentication-Results; never at END-OF-MESSAGE.
func TestPrependOnePerAnswer(t *testing.T) {
	l := startLocal(t, Config{})
	c := l.dial(t, "sender=prepend@sender.example")
	want(t, "RCPT 1", c.ask("RCPT", "recipient=bob@rcpt.example", "instance=p.1"),
		"PREPEND X-Mailward-Test: client=192.0.2.1 helo=mail.client.example rcpt=bob@rcpt.example")
	want(t, "RCPT refused", c.ask("RCPT", "recipient=refused@rcpt.example", "instance=p.1"), "550 5.7.1 No such user here")
	want(t, "RCPT 2", c.ask("RCPT", "recipient=carol@rcpt.example", "instance=p.1"),
		"PREPEND X-Mailward-Test: client=192.0.2.1 helo=mail.client.example rcpt=carol@rcpt.example")
	want(t, "DATA", c.ask("DATA", "instance=p.1"), "PREPEND Authentication-Results: mw.test.example; none")
	want(t, "EOM", c.ask("END-OF-MESSAGE", "instance=p.1"), "OK")

	// An accept before DATA answers OK at RCPT; its header waits for DATA.
	f := l.dial(t, "sender=friend@sender.example", "client_port=2")
	want(t, "friend RCPT", f.ask("RCPT", "recipient=bob@rcpt.example", "instance=f.1"), "OK")
	want(t, "friend DATA", f.ask("DATA", "instance=f.1"), "PREPEND X-Mailward-Friend: yes")
	want(t, "friend EOM", f.ask("END-OF-MESSAGE", "instance=f.1"), "OK")

	// Only the data check: the one recipient is replayed before it.
	d := l.dial(t, "sender=data@sender.example", "client_port=3")
	want(t, "data-only DATA", d.ask("DATA", "instance=d.1", "recipient=bob@rcpt.example", "recipient_count=1"), "PREPEND X-Mailward-Data: rcpts=bob@rcpt.example")
}

func TestQuarantineAndDiscard(t *testing.T) {
	l := startLocal(t, Config{})
	h := l.dial(t, "sender=hold@sender.example")
	want(t, "hold RCPT", h.ask("RCPT", "recipient=bob@rcpt.example", "instance=h.1"), "PREPEND Authentication-Results: mw.test.example; none")
	want(t, "hold EOM", h.ask("END-OF-MESSAGE", "instance=h.1"), "HOLD held for review by test")
	d := l.dial(t, "sender=discard@sender.example", "client_port=2")
	want(t, "discard RCPT", d.ask("RCPT", "recipient=bob@rcpt.example", "instance=d.1"), "DISCARD discarded by test")
	// A size from END-OF-MESSAGE reaches the rules.
	s := l.dial(t, "client_port=3")
	want(t, "big EOM", s.ask("END-OF-MESSAGE", "instance=s.1", "recipient=bob@rcpt.example", "size=2000000"), "550 5.7.1 Too big for this test")
}

func TestVrfyAndUnknownStatesAnswerDunno(t *testing.T) {
	l := startLocal(t, Config{})
	c := l.dial(t)
	want(t, "VRFY", c.ask("VRFY", "recipient=bob@rcpt.example"), "DUNNO")
	want(t, "ETRN", c.ask("ETRN", "etrn_domain=rcpt.example"), "DUNNO")
	want(t, "future state", c.ask("SOMETHING-NEW"), "DUNNO")
	if got := fmt.Sprint(l.calls); got != "connect=0 helo=0 mail=0 rcpt=0 data=0 eom=0" {
		t.Fatalf("engine ran for states it does not filter: %s", got)
	}
}

// A message whose END-OF-MESSAGE never comes is dropped by the TTL.
func TestInstanceTTL(t *testing.T) {
	l := startLocal(t, Config{InstanceTTL: time.Hour})
	c := l.dial(t)
	c.ask("RCPT", "recipient=bob@rcpt.example", "instance=t.1")
	if n := l.srv.sweep(time.Now()); n != 0 {
		t.Fatalf("swept %d fresh instances", n)
	}
	if n := l.srv.sweep(time.Now().Add(2 * time.Hour)); n != 1 {
		t.Fatalf("swept %d instances; want 1", n)
	}
	if got := l.srv.Stats(); got.Instances != 0 || l.eng.Open("policy") != 0 || len(l.srv.byKeySnapshot()) != 0 {
		t.Fatalf("after the sweep: %+v, %d engine connections, keys %v", got, l.eng.Open("policy"), l.srv.byKeySnapshot())
	}
	// A later request of that message starts it again.
	c.ask("RCPT", "recipient=carol@rcpt.example", "instance=t.1")
	if got := l.calls.count(policy.StageMail); got != 2 {
		t.Fatalf("mail stage ran %d times; want 2 (once before, once after expiry)", got)
	}
}

func TestMaxInstances(t *testing.T) {
	l := startLocal(t, Config{MaxInstances: 1})
	a := l.dial(t)
	a.ask("RCPT", "recipient=bob@rcpt.example", "instance=m.1")
	b := l.dial(t, "client_address=192.0.2.2")
	// Over the limit the request is still answered, without state.
	want(t, "stateless RCPT", b.ask("RCPT", "recipient=bob@rcpt.example", "instance=m.2"), "DUNNO")
	want(t, "stateless RCPT", b.ask("RCPT", "recipient=carol@rcpt.example", "instance=m.2"), "DUNNO")
	if got := l.srv.Stats().Instances; got != 1 {
		t.Fatalf("%d instances held; want 1", got)
	}
	if n := l.eng.Open("policy"); n != 1 {
		t.Fatalf("%d engine connections open; want 1", n)
	}
	if !strings.Contains(l.log.String(), "policy.max_instances reached") {
		t.Fatal("reaching max_instances not logged")
	}
}

// A request for a message begun on another connection continues it.
func TestMessageMovesToAnotherConnection(t *testing.T) {
	l := startLocal(t, Config{})
	a := l.dial(t)
	a.ask("RCPT", "recipient=bob@rcpt.example", "instance=mv.1")
	b := l.dial(t)
	want(t, "EOM on another connection", b.ask("END-OF-MESSAGE", "instance=mv.1"), "OK")
	if got := fmt.Sprint(l.calls); got != "connect=1 helo=1 mail=1 rcpt=1 data=1 eom=1" {
		t.Fatalf("engine stages: %s", got)
	}
	// The first connection no longer owns it: closing it closes nothing.
	a.conn.Close()
	waitFor(t, "first connection closed", func() bool { return l.srv.Stats().Open == 1 })
	if n := l.eng.Open("policy"); n != 1 {
		t.Fatalf("%d engine connections open; want 1", n)
	}
}

func TestShutdownClosesIdleConnections(t *testing.T) {
	l := startLocal(t, Config{})
	c := l.dial(t)
	c.ask("RCPT", "recipient=bob@rcpt.example", "instance=s.1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if !c.closed() {
		t.Fatal("idle connection left open by shutdown")
	}
	if n := l.eng.Open("policy"); n != 0 {
		t.Fatalf("%d engine connections open after shutdown", n)
	}
	if _, err := net.Dial("tcp", l.addr); err == nil {
		t.Fatal("still accepting connections after shutdown")
	}
}

func TestConfig(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	bad := Config{Listen: "tcp-ish", SocketMode: "999", IdleTimeout: -1, MaxInstances: -1}
	var ps config.Problems
	if !errors.As(bad.Validate(), &ps) {
		t.Fatalf("validate: %v is not config.Problems", bad.Validate())
	}
	var keys []string
	for _, p := range ps {
		keys = append(keys, p.Key)
	}
	if got := strings.Join(keys, " "); got != "listen socket_mode idle_timeout max_instances" {
		t.Errorf("problems at %s\n%v", got, ps)
	}
	for _, addr := range []string{"inet:127.0.0.1", "unix:", "udp:1.2.3.4:5"} {
		if _, err := Listen(Config{Listen: addr}); err == nil || !strings.Contains(err.Error(), "policy") {
			t.Errorf("Listen(%q) = %v; want a policy address error", addr, err)
		}
	}
	path := t.TempDir() + "/policy.sock"
	ln, err := Listen(Config{Listen: "unix:" + path, SocketMode: "0600"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	got := Config{}.withDefaults()
	if got.IdleTimeout != DefaultIdleTimeout || got.MaxInstances != DefaultMaxInstances || got.InstanceTTL != DefaultInstanceTTL {
		t.Fatalf("defaults not applied: %+v", got)
	}
}

func (s *Server) byKeySnapshot() []key {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []key
	for k := range s.byKey {
		out = append(out, k)
	}
	return out
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func BenchmarkReadAttrs(b *testing.B) {
	req := "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nhelo_name=mail.client.example\n" +
		"queue_id=8045F2AB23\nsender=alice@sender.example\nrecipient=bob@rcpt.example\nrecipient_count=0\n" +
		"client_address=192.0.2.1\nclient_name=mail.client.example\nreverse_client_name=mail.client.example\n" +
		"instance=123.456.7\nsasl_method=\nsasl_username=\nsasl_sender=\nsize=12345\nccert_subject=\nccert_issuer=\n" +
		"ccert_fingerprint=\nencryption_protocol=TLSv1.3\nencryption_cipher=TLS_AES_256_GCM_SHA384\nencryption_keysize=256\n" +
		"etrn_domain=\nstress=\nccert_pubkey_fingerprint=\nclient_port=40000\npolicy_context=\nserver_address=192.0.2.25\n" +
		"server_port=25\ncompatibility_level=3.6\nmail_version=3.7.11\n\n"
	in := strings.NewReader("")
	r := bufio.NewReaderSize(in, MaxLine)
	b.SetBytes(int64(len(req)))
	b.ReportAllocs()
	for b.Loop() {
		in.Reset(req)
		r.Reset(in)
		attrs, err := readAttrs(r)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := parseRequest(attrs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRecipient is the steady state: one more recipient of a
// message whose session is held, over a loopback connection.
func BenchmarkRecipient(b *testing.B) {
	eng := policy.NewEngine(policy.Settings{Hostname: "mw.bench.example"}, nil, nil, slog.New(slog.DiscardHandler))
	srv := New(eng, Config{}, slog.New(slog.DiscardHandler))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		// Twenty recipients a message: the MAIL stage runs at every twentieth.
		req := fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\nclient_port=40000\n"+
			"helo_name=mail.client.example\nsender=alice@sender.example\nrecipient=r%d@rcpt.example\ninstance=1.2.%d\n\n", i%20, i/20)
		i++
		if _, err := io.WriteString(c, req); err != nil {
			b.Fatal(err)
		}
		for range 2 {
			if _, err := r.ReadString('\n'); err != nil {
				b.Fatal(err)
			}
		}
	}
}
