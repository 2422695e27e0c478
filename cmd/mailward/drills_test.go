package main

// Fault drills: the real binary under load while a part it depends on
// fails. Every message sent is counted: it must end accepted once or
// refused with a code the client saw, within the configured bounds.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/mailward/mailward/internal/testenv"
)

// checkBound is timeouts.checks in the DNS drill; answers may take it
// plus slack for scheduling on a loaded machine.
const (
	checkBound = 2 * time.Second
	slack      = time.Second
)

// TestDrillDNSFailure: the sender domain's DNS answers SERVFAIL, then
// nothing at all, then too slowly: its messages are tempfailed within the
// check bound. Truncated UDP answers are asked again over TCP and pass.
// Once DNS is back mail is accepted again without a restart.
func TestDrillDNSFailure(t *testing.T) {
	e := startDrill(t, "dns:\n  timeout: 300ms\n  retries: -1\ntimeouts:\n  checks: "+checkBound.String()+"\n", nil)
	ta := &tally{}
	seq := 0
	// Each message has its own HELO name so that no cached SPF result
	// hides the fault.
	msg := func(phase string) message {
		seq++
		return message{n: seq, from: "a@drill.example", helo: fmt.Sprintf("h%d.c.example", seq), subject: phase}
	}
	phase := func(name string, n int, want func(o outcome) error) {
		t.Helper()
		var wg sync.WaitGroup
		for range n {
			m := msg(name)
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := send(e.addr, m)
				ta.add(o)
				if o.err != nil {
					t.Errorf("%s: message %d got no answer: %v", name, o.n, o.err)
				} else if err := want(o); err != nil {
					t.Errorf("%s: message %d: %v (code %d %q at %s, %s)", name, o.n, err, o.code, o.reply, o.stage, o.authres)
				}
				if o.took > checkBound+slack {
					t.Errorf("%s: message %d answered after %s, over the %s bound", name, o.n, o.took, checkBound+slack)
				}
			}()
		}
		wg.Wait()
	}
	accepted := func(spf string) func(outcome) error {
		return func(o outcome) error {
			if o.code != 250 || !strings.Contains(o.authres, "spf="+spf) {
				return fmt.Errorf("want accepted with spf=%s", spf)
			}
			return nil
		}
	}
	tempfailed := func(o outcome) error {
		if o.code != 451 {
			return fmt.Errorf("want 451")
		}
		return nil
	}

	phase("healthy", 4, accepted("pass"))
	e.dns.ServFail("drill.example")
	time.Sleep(1200 * time.Millisecond) // the TXT record's TTL runs out
	phase("servfail", 4, tempfailed)
	e.dns.Reset("drill.example")
	e.dns.Drop("drill.example")
	phase("timeout", 4, tempfailed)
	t.Logf("after timeouts: %s", ta.summary())
	e.dns.Reset("drill.example")
	// Answers slower than dns.timeout are timeouts too.
	e.dns.Delay("drill.example", time.Second)
	phase("slow", 4, tempfailed)
	e.dns.Reset("drill.example")
	// A truncated UDP answer is asked again over TCP, which answers whole.
	e.dns.Truncate("drill.example")
	phase("truncated", 4, accepted("pass"))
	e.dns.Reset("drill.example")

	// Recovery by itself: a SERVFAIL or timeout may be remembered briefly,
	// not for good.
	start := time.Now()
	for {
		o := send(e.addr, msg("recovery"))
		ta.add(o)
		if o.code == 250 && strings.Contains(o.authres, "spf=pass") {
			break
		}
		if o.err != nil || o.code != 451 {
			t.Fatalf("during recovery: %+v", o)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("still %d %q %s after DNS came back", o.code, o.reply, time.Since(start))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("recovered %s after DNS came back", time.Since(start).Round(time.Millisecond))
	phase("recovered", 4, accepted("pass"))
	t.Log(ta.summary())
}

// TestDrillDNSFailureOnErrorAccept: with on_error: accept a sender domain
// whose DNS fails is let through, marked spf=temperror.
func TestDrillDNSFailureOnErrorAccept(t *testing.T) {
	e := startDrill(t, "on_error: accept\ndns:\n  timeout: 300ms\n  retries: -1\ntimeouts:\n  checks: "+checkBound.String()+"\n", nil)
	e.dns.ServFail("drill.example")
	ta := &tally{}
	for n := range 4 {
		o := send(e.addr, message{n: n, from: "a@drill.example", helo: fmt.Sprintf("h%d.c.example", n), subject: "servfail"})
		ta.add(o)
		if o.err != nil || o.code != 250 || !strings.Contains(o.authres, "spf=temperror") {
			t.Errorf("message %d: want accepted with spf=temperror, got %d %q %q %v", n, o.code, o.reply, o.authres, o.err)
		}
		if o.took > checkBound+slack {
			t.Errorf("message %d answered after %s", n, o.took)
		}
	}
	t.Log(ta.summary())
}

const rateLimitRules = `rules:
  - name: per-sender
    description: a marker sender may send two messages an hour
    when: mail_from == "limited@good.example" && ratelimit("from:" + mail_from, 2, "1h")
    action: tempfail
    code: "451 4.7.1"
    message: "Rate limited"
  - name: per-client
    when: ratelimit("ip:" + ip, 100000, "1h")
    action: tempfail
`

// TestDrillRedisDown: Redis, holding the rate limits, is killed while mail
// flows and comes back. Every message is still answered within the cache
// timeout's bound; the breaker follows Redis while /readyz stays 200
// (mail flows past the breaker); no goroutines pile up.
func TestDrillRedisDown(t *testing.T) {
	redis := testenv.StartRedis(t)
	e := startDrill(t, "cache:\n  type: redis\n  redis:\n    addrs: [\""+redis.Addr()+"\"]\n    timeout: 200ms\n"+
		"  breaker:\n    failures: 3\n    cooldown: 1s\nrules:\n  files: [\"rules.yaml\"]\n",
		map[string]string{"rules.yaml": rateLimitRules})
	const bound = 2 * time.Second // a handful of 200ms cache operations, and slack

	// The rate limit is counted in Redis: the marker's third message is
	// refused.
	for n := 1; n <= 3; n++ {
		o := send(e.addr, message{n: n, from: "limited@good.example", subject: "limited"})
		want := 250
		if n == 3 {
			want = 451
		}
		if o.err != nil || o.code != want {
			t.Fatalf("limited sender's message %d: %d %q %v; want %d", n, o.code, o.reply, o.err, want)
		}
	}
	ready := func() int { code, _ := httpDo(t, "GET", e.admin+"/readyz"); return code }
	breaker := func() string {
		for _, st := range []string{"closed", "open", "half_open"} {
			if e.metric(t, `mailward_cache_breaker_state{state="`+st+`"}`) == 1 {
				return st
			}
		}
		return "none"
	}
	if c, b := ready(), breaker(); c != 200 || b != "closed" {
		t.Fatalf("before the drill: /readyz %d, breaker %v", c, b)
	}
	goroutinesBefore := e.metric(t, "go_goroutines")

	ta := &tally{}
	stop := make(chan struct{})
	wg := load(ta, e.addr, 4, stop, func(n int) message {
		return message{n: n, from: fmt.Sprintf("u%d@good.example", n), subject: "load"}
	})
	waitFor := func(what string, within time.Duration, ok func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !ok() {
			if time.Since(start) > within {
				close(stop)
				wg.Wait()
				t.Fatalf("%s: not within %s (%s)", what, within, ta.summary())
			}
			time.Sleep(50 * time.Millisecond)
		}
		return time.Since(start)
	}
	time.Sleep(500 * time.Millisecond)
	redis.Stop()
	downAt := len(ta.all())
	t.Logf("breaker open after %s", waitFor("breaker open", 5*time.Second, func() bool { return breaker() == "open" }))
	if c := ready(); c != 200 {
		t.Errorf("/readyz with Redis down = %d; want 200: mail still flows", c)
	}
	time.Sleep(2 * time.Second) // mail keeps flowing through a few cooldowns
	redis.Start()
	upAt := len(ta.all())
	t.Logf("breaker closed after %s", waitFor("breaker closed", 10*time.Second, func() bool { return breaker() == "closed" }))
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()

	outs := ta.all()
	if upAt-downAt < 4 {
		t.Errorf("only %d messages were sent while Redis was down", upAt-downAt)
	}
	for _, o := range outs {
		if o.err != nil || o.code != 250 {
			t.Errorf("message %d: %d %q at %s, %v; want accepted", o.n, o.code, o.reply, o.stage, o.err)
		}
		if o.took > bound {
			t.Errorf("message %d answered after %s, over %s", o.n, o.took, bound)
		}
	}
	// Redis restarted empty, but the limit counts again.
	for n := 1; n <= 3; n++ {
		o := send(e.addr, message{n: n, from: "limited@good.example", subject: "limited again"})
		if want := map[bool]int{true: 451, false: 250}[n == 3]; o.err != nil || o.code != want {
			t.Errorf("after Redis came back, limited sender's message %d: %d %v; want %d", n, o.code, o.err, want)
		}
	}
	// Goroutines settle back once the load is gone.
	var after float64
	deadline := time.Now().Add(5 * time.Second)
	for {
		after = e.metric(t, "go_goroutines")
		if after <= goroutinesBefore+5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if after > goroutinesBefore+5 {
		t.Errorf("go_goroutines %v before the drill, %v after: a leak", goroutinesBefore, after)
	}
	t.Logf("%s; %d sent while Redis was down; go_goroutines %v before, %v after", ta.summary(), upAt-downAt, goroutinesBefore, after)
}

// TestDrillBrokenReloadUnderLoad: a broken rule file is saved while mail
// flows, then reloaded over HTTP and by SIGHUP. The running rules keep
// serving (the marker sender is still refused), the error names file and
// line, and mailward stays ready throughout.
func TestDrillBrokenReloadUnderLoad(t *testing.T) {
	e := startDrill(t, "rules:\n  files: [\"rules.d/*.yaml\"]\n", map[string]string{"rules.d/local.yaml": rejectSenderRules})
	ta := &tally{}
	stop := make(chan struct{})
	wg := load(ta, e.addr, 3, stop, func(n int) message {
		if n%3 == 0 {
			return message{n: n, from: "spammer@bad.example", subject: "marker"}
		}
		return message{n: n, from: fmt.Sprintf("u%d@good.example", n), subject: "load"}
	})
	var notReady []int
	var readyMu sync.Mutex
	readyDone := make(chan struct{})
	go func() {
		defer close(readyDone)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if code, _ := httpDo(t, "GET", e.admin+"/readyz"); code != 200 {
				readyMu.Lock()
				notReady = append(notReady, code)
				readyMu.Unlock()
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	writeFile(t, e.dir, "rules.d/local.yaml", strings.Replace(rejectSenderRules, `mail_from ==`, `mail_frm ==`, 1))
	waitOutput(t, e.p, "rule files changed but do not compile", 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	code, body := httpDo(t, "POST", e.admin+"/reload")
	if code != 422 || !strings.Contains(body, "local.yaml:4:") {
		t.Errorf("POST /reload with a broken rule file = %d %q; want 422 naming local.yaml:4", code, body)
	}
	time.Sleep(300 * time.Millisecond)
	e.p.cmd.Process.Signal(syscall.SIGHUP)
	waitOutput(t, e.p, "reload failed; keeping the running config and rules", 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	<-readyDone

	var markers, others int
	for _, o := range ta.all() {
		switch {
		case o.err != nil:
			t.Errorf("message %d from %s got no answer: %v", o.n, o.from, o.err)
		case o.from == "spammer@bad.example":
			markers++
			if o.code != 550 || !strings.Contains(o.reply, "refused by policy") {
				t.Errorf("marker message %d: %d %q; want the old rule's 550", o.n, o.code, o.reply)
			}
		default:
			others++
			if o.code != 250 {
				t.Errorf("message %d from %s: %d %q; want accepted", o.n, o.from, o.code, o.reply)
			}
		}
	}
	if markers < 5 || others < 5 {
		t.Errorf("too few messages to tell: %d markers, %d others", markers, others)
	}
	if len(notReady) > 0 {
		t.Errorf("/readyz answered %v during the drill", notReady)
	}
	out := e.p.out.String()
	if n := strings.Count(out, "local.yaml:4:"); n < 2 {
		t.Errorf("reload errors name local.yaml:4 %d times; want the watcher's and SIGHUP's:\n%s", n, out)
	}
	if m := e.metric(t, `mailward_reloads_total{result="success"}`); m > 0 {
		t.Errorf("%v reloads succeeded with a broken rule file", m)
	}
	if m := e.metric(t, `mailward_reloads_total{result="failure"}`); m < 3 {
		t.Errorf("%v failed reloads counted; want the watcher's, POST's and SIGHUP's", m)
	}
	t.Logf("%s (%d markers refused with 550, %d others accepted); /readyz 200 throughout", ta.summary(), markers, others)
}

// TestDrillSIGTERMUnderLoad: SIGTERM with many milter sessions open, some
// waiting on slow DNS at end of message, some between commands. All of
// them finish with their verdicts, new connections are refused, and the
// process exits 0.
func TestDrillSIGTERMUnderLoad(t *testing.T) {
	e := startDrill(t, "timeouts:\n  shutdown: 20s\n", nil)
	const waiting, parked = 16, 16
	// The sender domain's answers are slow, so the first group is still
	// in its checks when the signal comes.
	e.dns.Delay("drill.example", 1500*time.Millisecond)
	ta := &tally{}
	var wg sync.WaitGroup
	for n := range waiting {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ta.add(send(e.addr, message{n: n, from: "a@drill.example", helo: fmt.Sprintf("h%d.c.example", n), subject: "in checks"}))
		}()
	}
	// The second group stops after MAIL FROM and goes on after the signal.
	type open struct {
		n int
		c *gomilter.Client
		s *gomilter.ClientSession
	}
	var sessions []open
	for n := waiting; n < waiting+parked; n++ {
		c := gomilter.NewClientWithOptions("tcp", e.addr, gomilter.ClientOptions{
			ActionMask:  gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptQuarantine,
			ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		})
		defer c.Close()
		s, err := c.Session()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for _, step := range []func() (*gomilter.Action, error){
			func() (*gomilter.Action, error) { return s.Conn("c.example", gomilter.FamilyInet, 25, "192.0.2.10") },
			func() (*gomilter.Action, error) { return s.Helo("c.example") },
			func() (*gomilter.Action, error) { return s.Mail(fmt.Sprintf("<u%d@good.example>", n), nil) },
		} {
			if a, err := step(); err != nil || a.Code != gomilter.ActContinue {
				t.Fatalf("parked session %d: %+v %v", n, a, err)
			}
		}
		sessions = append(sessions, open{n, c, s})
	}
	time.Sleep(300 * time.Millisecond) // the first group reaches end of message
	if open := e.metric(t, `mailward_connections_open{front="milter"}`); open < waiting+parked {
		t.Fatalf("%v milter connections open before the signal; want %d", open, waiting+parked)
	}
	signalled := time.Now()
	if err := e.p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	refusedAfter := time.Duration(-1)
	for time.Since(signalled) < 5*time.Second {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			refusedAfter = time.Since(signalled)
			break
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
	if refusedAfter < 0 {
		t.Fatal("mailward still accepts connections 5s after SIGTERM")
	}
	if o := send(e.addr, message{n: -1, from: "late@good.example", subject: "late"}); o.err == nil {
		t.Errorf("a new session after SIGTERM was served: %d %q", o.code, o.reply)
	}
	for _, p := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := outcome{n: p.n, from: "parked"}
			start := time.Now()
			defer func() { o.took = time.Since(start); ta.add(o) }()
			for _, step := range []func() (*gomilter.Action, error){
				func() (*gomilter.Action, error) { return p.s.Rcpt("<bob@rcpt.example>", nil) },
				func() (*gomilter.Action, error) { return p.s.HeaderField("Subject", "parked") },
				p.s.HeaderEnd,
			} {
				a, err := step()
				if err != nil || a.Code != gomilter.ActContinue {
					o.err = fmt.Errorf("after SIGTERM: %+v %v", a, err)
					return
				}
			}
			mods, a, err := p.s.End()
			if err != nil {
				o.err = err
				return
			}
			o.stage = "eom"
			if a.Code == gomilter.ActAccept {
				o.code = 250
			} else {
				o.code = a.SMTPCode
			}
			for _, m := range mods {
				if m.HeaderName == "Authentication-Results" {
					o.authres = m.HeaderValue
				}
			}
		}()
	}
	wg.Wait()
	for _, p := range sessions {
		p.s.Close()
		p.c.Close()
	}
	err := e.p.wait(t, 15*time.Second)
	exited := time.Since(signalled)
	for _, o := range ta.all() {
		if o.err != nil || o.code != 250 || !strings.Contains(o.authres, "mw.test.example") {
			t.Errorf("in-flight message %d (%s): %d %q %q %v; want accepted with Authentication-Results", o.n, o.from, o.code, o.reply, o.authres, o.err)
		}
		if o.from == "a@drill.example" && !strings.Contains(o.authres, "spf=pass") {
			t.Errorf("message %d finished without its SPF check: %q", o.n, o.authres)
		}
	}
	if n := len(ta.all()); n != waiting+parked {
		t.Errorf("%d of %d in-flight sessions answered", n, waiting+parked)
	}
	if err != nil {
		t.Errorf("mailward exited with %v; want 0", err)
	}
	t.Logf("%s; new connections refused %s after SIGTERM, exit 0 after %s", ta.summary(), refusedAfter.Round(time.Millisecond), exited.Round(time.Millisecond))
}

// TestDrillAbuse: what a hostile or broken MTA side can do to one process.
func TestDrillAbuse(t *testing.T) {
	t.Run("HugePacketLength", func(t *testing.T) {
		e := startDrill(t, "", nil)
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// A packet claiming 2^31 bytes: it must not be allocated or
		// waited for.
		if _, err := c.Write([]byte{0x80, 0, 0, 0, 'O', 0, 0, 0, 6}); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		n, err := c.Read(make([]byte, 64))
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("the connection stayed open after a 2 GiB packet length")
		}
		if n != 0 || err == nil {
			t.Fatalf("read %d bytes, %v; want the connection closed", n, err)
		}
		closedAfter := time.Since(start)
		select {
		case err := <-e.p.done:
			t.Fatalf("mailward exited: %v\n%s", err, e.p.out.String())
		default:
		}
		o := send(e.addr, message{n: 1, from: "u@good.example", subject: "after abuse"})
		if o.err != nil || o.code != 250 {
			t.Fatalf("the next session: %d %q %v", o.code, o.reply, o.err)
		}
		t.Logf("connection closed %s after a 2^31 packet length (%v); next session accepted", closedAfter.Round(time.Millisecond), err)
	})

	t.Run("IdleConnections", func(t *testing.T) {
		e := startDrill(t, "", nil)
		base, _ := memory(t, e.p.cmd.Process.Pid)
		const idle = 1000
		for n := range idle {
			c := gomilter.NewClientWithOptions("tcp", e.addr, gomilter.ClientOptions{ActionMask: gomilter.OptAddHeader})
			s, err := c.Session()
			if err != nil {
				t.Fatalf("connection %d: %v", n, err)
			}
			defer s.Close()
			if a, err := s.Conn("c.example", gomilter.FamilyInet, 25, "192.0.2.10"); err != nil || a.Code != gomilter.ActContinue {
				t.Fatalf("connection %d: %+v %v", n, a, err)
			}
		}
		if open := e.metric(t, `mailward_connections_open{front="milter"}`); open != idle {
			t.Fatalf("%v milter connections open; want %d", open, idle)
		}
		rss, peak := memory(t, e.p.cmd.Process.Pid)
		const limit = 128 << 20
		if rss > limit {
			t.Errorf("RSS %s with %d idle milter connections; want at most %s", mib(rss), idle, mib(limit))
		}
		o := send(e.addr, message{n: 1, from: "u@good.example", subject: "beside idle ones"})
		if o.err != nil || o.code != 250 {
			t.Errorf("a session beside %d idle ones: %d %v", idle, o.code, o.err)
		}
		t.Logf("%d idle milter connections: RSS %s (peak %s, %s before them)", idle, mib(rss), mib(peak), mib(base))
	})

	t.Run("ConcurrentLargeBodies", func(t *testing.T) {
		e := startDrill(t, "", nil)
		base, _ := memory(t, e.p.cmd.Process.Pid)
		const sessions, size = 64, 1 << 20
		line := strings.Repeat("x", 76) + "\r\n"
		body := []byte(strings.Repeat(line, size/len(line)+1)[:size])
		ta := &tally{}
		var wg, atBody sync.WaitGroup
		// Every session has its headers through before any body goes:
		// all 64 bodies stream at once.
		atBody.Add(sessions)
		barrier := func() { atBody.Done(); atBody.Wait() }
		for n := range sessions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ta.add(send(e.addr, message{n: n, from: fmt.Sprintf("u%d@good.example", n), subject: "1 MB", body: bytes.NewReader(body), beforeBody: barrier}))
			}()
		}
		wg.Wait()
		for _, o := range ta.all() {
			if o.err != nil || o.code != 250 {
				t.Errorf("message %d: %d %q %v", o.n, o.code, o.reply, o.err)
			}
		}
		_, peak := memory(t, e.p.cmd.Process.Pid)
		const limit = 64 << 20
		if peak > limit {
			t.Errorf("peak RSS %s with %d concurrent 1 MB messages; want at most %s", mib(peak), sessions, mib(limit))
		}
		t.Logf("%s; peak RSS %s (%s idle before)", ta.summary(), mib(peak), mib(base))
	})
}

// smtpLine is a raw SMTP client for the abuse drill: it sends what a
// well-behaved client never would.
type smtpLine struct {
	c net.Conn
	r *bufio.Reader
}

func dialSMTP(t *testing.T, addr string) *smtpLine {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	return &smtpLine{c: c, r: bufio.NewReader(c)}
}

// reply reads one reply, multi-line or not, and returns its last line.
func (s *smtpLine) reply(t *testing.T) string {
	t.Helper()
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading a reply: %v", err)
		}
		if len(line) < 4 || line[3] != '-' {
			return strings.TrimRight(line, "\r\n")
		}
	}
}

func (s *smtpLine) cmd(t *testing.T, line string) string {
	t.Helper()
	if _, err := io.WriteString(s.c, line+"\r\n"); err != nil {
		t.Fatal(err)
	}
	return s.reply(t)
}

// TestDrillSMTPAbuse puts the SMTP proxy of the real binary through what
// abusive clients do: 10,000 recipients, a 1 GB message, a client sending
// a byte a second, and 1,000 connections at once. Each gets a clear SMTP
// answer within the configured limits and timeouts, and memory stays
// within 64 MiB.
func TestDrillSMTPAbuse(t *testing.T) {
	sink := testenv.StartSink(t)
	smtpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	e := startDrill(t, "smtp:\n  listen: "+smtpAddr+"\n  upstream: "+sink.Addr()+"\n  upstream_tls: \"off\"\n  command_timeout: 2s\n"+
		"  max_connections: 500\n  max_connections_per_ip: 2000\n", nil)
	waitHTTP(t, e.admin+"/readyz")
	pid := e.p.cmd.Process.Pid
	base, _ := memory(t, pid)

	t.Run("TenThousandRecipients", func(t *testing.T) {
		s := dialSMTP(t, smtpAddr)
		s.reply(t)
		s.cmd(t, "EHLO c.example")
		s.cmd(t, "MAIL FROM:<a@good.example>")
		// Pipelined, as an abusive client would send them.
		var b strings.Builder
		for i := range 10000 {
			fmt.Fprintf(&b, "RCPT TO:<r%d@rcpt.example>\r\n", i)
		}
		go io.WriteString(s.c, b.String())
		codes := map[string]int{}
		for codes["421"] == 0 && codes["250"]+codes["452"] < 10000 {
			codes[s.reply(t)[:3]]++
		}
		// Refused recipients move no mail: past smtp.max_junk_commands
		// (100) the session ends rather than take 9,900 of them.
		if codes["250"] != 100 || codes["452"] != 100 || codes["421"] != 1 {
			t.Fatalf("replies %v; want 100 accepted (smtp.max_recipients), 100 refused with 452, then 421 (smtp.max_junk_commands)", codes)
		}
		if _, err := s.r.ReadString('\n'); err == nil {
			t.Fatal("the connection stayed open after the 421")
		}
		t.Logf("10,000 recipients: %v, then closed", codes)
	})

	t.Run("OneGigabyteMessage", func(t *testing.T) {
		s := dialSMTP(t, smtpAddr)
		s.reply(t)
		s.cmd(t, "EHLO c.example")
		s.cmd(t, "MAIL FROM:<a@good.example>")
		s.cmd(t, "RCPT TO:<bob@rcpt.example>")
		if r := s.cmd(t, "DATA"); !strings.HasPrefix(r, "354") {
			t.Fatalf("DATA: %s", r)
		}
		start := time.Now()
		io.WriteString(s.c, "From: <a@good.example>\r\nSubject: huge\r\n\r\n")
		line := []byte(strings.Repeat("x", 1022) + "\r\n")
		chunk := bytes.Repeat(line, 64) // 64 KiB
		for range 1 << 14 {             // 1 GiB
			if _, err := s.c.Write(chunk); err != nil {
				t.Fatalf("the server stopped reading after %s: %v", time.Since(start), err)
			}
		}
		io.WriteString(s.c, ".\r\n")
		r := s.reply(t)
		if !strings.HasPrefix(r, "552") {
			t.Fatalf("1 GB message: %s; want 552 (smtp.max_message_size)", r)
		}
		_, peak := memory(t, pid)
		if peak > 64<<20 {
			t.Errorf("peak RSS %s after a 1 GB message; want at most 64 MiB", mib(peak))
		}
		if n := len(sink.Messages()); n != 0 {
			t.Errorf("%d messages relayed", n)
		}
		t.Logf("1 GB message refused with %q after %s; peak RSS %s (%s before)", r, time.Since(start).Round(time.Millisecond), mib(peak), mib(base))
	})

	t.Run("ByteASecond", func(t *testing.T) {
		s := dialSMTP(t, smtpAddr)
		s.reply(t)
		start := time.Now()
		done := make(chan struct{})
		go func() {
			for _, b := range []byte("EHLO slow.example\r\n") {
				select {
				case <-done:
					return
				case <-time.After(time.Second):
				}
				if _, err := s.c.Write([]byte{b}); err != nil {
					return
				}
			}
		}()
		r := s.reply(t)
		close(done)
		if !strings.HasPrefix(r, "421 4.4.2") || time.Since(start) > 4*time.Second {
			t.Fatalf("byte-a-second client: %q after %s; want 421 4.4.2 at smtp.command_timeout (2s)", r, time.Since(start))
		}
		t.Logf("byte-a-second client: %q after %s", r, time.Since(start).Round(time.Millisecond))
	})

	t.Run("ThousandConnectionsAtOnce", func(t *testing.T) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		codes := map[string]int{}
		conns := make(chan net.Conn, 1000)
		for range 1000 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.Dial("tcp", smtpAddr)
				if err != nil {
					mu.Lock()
					codes["dial: "+err.Error()]++
					mu.Unlock()
					return
				}
				conns <- c
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				code := "no answer"
				if err == nil && len(line) >= 3 {
					code = line[:3]
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		rss, _ := memory(t, pid)
		close(conns)
		for c := range conns {
			c.Close()
		}
		if codes["220"] != 500 || codes["421"] != 500 {
			t.Errorf("greetings %v; want 500 served (smtp.max_connections) and 500 refused with 421", codes)
		}
		if rss > 64<<20 {
			t.Errorf("RSS %s with 500 sessions open; want at most 64 MiB", mib(rss))
		}
		t.Logf("1,000 connections at once: %v; RSS %s", codes, mib(rss))
	})
}
