package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/testenv"
)

// hostileZone adds what the hostile inputs name: a bank at p=reject, a
// partner whose SPF passes from loopback, a sender whose SPF record
// sends the checker after ten MX hosts that do not exist.
const hostileZone = drillZone + `
partner.example. IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
bank.test. IN TXT "v=spf1 -all"
_dmarc.bank.test. IN TXT "v=DMARC1; p=reject"
void.test. IN TXT "v=spf1 mx:m1.void.test mx:m2.void.test mx:m3.void.test mx:m4.void.test mx:m5.void.test mx:m6.void.test mx:m7.void.test mx:m8.void.test mx:m9.void.test mx:m10.void.test -all"
`

// hostile is one input of the security review, as a sender writes it.
type hostile struct {
	name    string
	from    string // envelope sender
	xclient string // an XCLIENT command sent before MAIL, if any
	data    string // the message, CRLF line ends; "" for an XCLIENT-only case
	// accepted says the message is to be delivered; check looks at what
	// arrived. Otherwise it is to be refused with a 4xx or 5xx.
	accepted bool
	check    func(header string) error
}

func hostileInputs() []hostile {
	var dkimBomb strings.Builder
	dkimBomb.WriteString("DKIM-Signature: v=1; a=rsa-sha256; d=bank.test; s=sel; c=relaxed/relaxed;\r\n\th=from")
	for i := range 60000 {
		dkimBomb.WriteString(":a")
		if i%400 == 399 {
			dkimBomb.WriteString("\r\n\t")
		}
	}
	dkimBomb.WriteString(";\r\n\tbh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\r\nFrom: <ceo@bank.test>\r\nSubject: h= bomb\r\n")
	dkimBomb.WriteString(strings.Repeat("b: x\r\n", 150000))
	dkimBomb.WriteString("\r\nbody\r\n")

	folded := "From: <u@good.example>\r\nSubject: folded\r\nX-Folded: a\r\n" + strings.Repeat("\tb\r\n", 240000) + "\r\nbody\r\n"
	bigFrom := "From: <ceo@" + strings.Repeat("a.", 450000) + "bank.test>\r\nSubject: big From\r\n\r\nbody\r\n"

	var mime strings.Builder
	mime.WriteString("From: <u@good.example>\r\nSubject: nested\r\nMIME-Version: 1.0\r\n")
	for i := range 20000 {
		fmt.Fprintf(&mime, "Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n", i, i)
	}
	mime.WriteString("Content-Type: application/octet-stream; name=\"payload.exe\"\r\n\r\nMZ\r\n")

	noForged := func(h string) error {
		if strings.Contains(h, "header.d=bank.test") {
			return fmt.Errorf("the forged Authentication-Results arrived:\n%.2000s", h)
		}
		if !strings.Contains(h, "Authentication-Results: mw.test.example;") {
			return fmt.Errorf("no Authentication-Results of ours:\n%.2000s", h)
		}
		return nil
	}
	return []hostile{
		// Its signature cannot pass: the bank's p=reject refuses it.
		{name: "DKIM h= bomb", from: "u@good.example", data: dkimBomb.String()},
		{name: "240,000-line folded header", from: "u@good.example", data: folded, accepted: true},
		{name: "900 KB From domain", from: "u@good.example", data: bigFrom},
		{name: "20,000-deep nested MIME", from: "u@good.example", data: mime.String()},
		{name: "SPF void MX chain", from: "x@void.test", data: "From: <x@void.test>\r\nSubject: void\r\n\r\nbody\r\n", accepted: true, check: func(h string) error {
			if !strings.Contains(h, "spf=permerror") {
				return fmt.Errorf("want spf=permerror after the void look-up limit:\n%.2000s", h)
			}
			return nil
		}},
		{name: "forged A-R with an early accept", from: "billing@partner.example", accepted: true, check: noForged,
			data: "Authentication-Results: mw.test.example; dkim=pass header.d=bank.test; dmarc=pass header.from=bank.test\r\n" +
				"From: <billing@partner.example>\r\nSubject: forged results\r\n\r\nbody\r\n"},
		{name: "malformed From under p=reject", from: "u@good.example",
			data: "From: CEO <ceo@bank.test>\r\nFrom: x@elsewhere.example\r\nSubject: pay\r\n\r\nbody\r\n"},
		{name: "XCLIENT CR/LF", xclient: "XCLIENT NAME=evil.example+0D+0AX-Injected:+20yes"},
	}
}

// smtpResult is what a client saw of one transaction.
type smtpResult struct {
	code  int // the final reply's code, or the first refusal's
	stage string
	text  string
	took  time.Duration
	err   error
}

// deliver sends one message over SMTP to addr, as a client would, with
// an XCLIENT first when xclient is set.
func deliver(addr, from, xclient, data string) (res smtpResult) {
	start := time.Now()
	defer func() { res.took = time.Since(start) }()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return smtpResult{err: err}
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Minute))
	r := bufio.NewReader(c)
	read := func() (int, string, error) {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return 0, "", err
			}
			if len(line) < 4 || line[3] != '-' {
				code, _ := strconv.Atoi(line[:min(3, len(line))])
				return code, strings.TrimRight(line, "\r\n"), nil
			}
		}
	}
	step := func(stage, cmd string, want int) bool {
		if cmd != "" {
			if _, err := c.Write([]byte(cmd + "\r\n")); err != nil {
				res = smtpResult{stage: stage, err: err}
				return false
			}
		}
		code, text, err := read()
		res = smtpResult{code: code, stage: stage, text: text, err: err}
		return err == nil && code == want
	}
	if !step("greeting", "", 220) || !step("ehlo", "EHLO client.test.example", 250) {
		return res
	}
	if xclient != "" {
		if !step("xclient", xclient, 220) || !step("ehlo", "EHLO client.test.example", 250) {
			return res
		}
	}
	if !step("mail", "MAIL FROM:<"+from+">", 250) || !step("rcpt", "RCPT TO:<bob@rcpt.example>", 250) || !step("data", "DATA", 354) {
		return res
	}
	stuffed := strings.ReplaceAll(data, "\r\n.", "\r\n..")
	if _, err := c.Write([]byte(stuffed + ".\r\n")); err != nil {
		return smtpResult{stage: "eom", err: err}
	}
	step("eom", "", 250)
	c.Write([]byte("QUIT\r\n"))
	return res
}

// procCPU is a process's CPU time so far, from /proc.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name in parentheses: utime and stime are
	// the 12th and 13th, in clock ticks (100 a second on Linux).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// latencies summarises answer times: median, 95th percentile, slowest.
func latencies(ds []time.Duration) (p50, p95, slowest time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2], s[len(s)*95/100], s[len(s)-1]
}

// TestDrillHostileInputs sends each hostile input of the security review
// through the SMTP proxy and through Postfix with the milter, while other
// sessions send ordinary mail through both. Each hostile message gets a
// clear answer (refused, or delivered without what it forged) within a
// bounded time, all of them together cost a bounded amount of CPU, and
// the ordinary sessions keep being answered. The figures are logged; the
// bounds asserted are coarse, many times what a healthy run takes and
// far below what these inputs once cost (minutes of CPU each).
func TestDrillHostileInputs(t *testing.T) {
	testenv.Require(t, "postfix")
	allowlist, err := filepath.Abs("../../examples/rules/00-allowlist.yaml")
	if err != nil {
		t.Fatal(err)
	}
	proxySink, postfixSink := testenv.StartSink(t), testenv.StartSink(t)
	proxyAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	e := startDrill(t, "dmarc:\n  enforce: true\nrules:\n  files: [\""+allowlist+"\"]\n"+
		"smtp:\n  listen: "+proxyAddr+"\n  upstream: "+proxySink.Addr()+"\n  upstream_tls: \"off\"\n  trusted_networks: [127.0.0.0/8]\n", nil)
	if err := e.dns.SetZone(hostileZone); err != nil {
		t.Fatal(err)
	}
	main := testenv.ReadMainCf(t, "../../examples/postfix/main.cf.milter")
	main["smtpd_milters"] = "inet:" + e.addr
	main["smtpd_authorized_xclient_hosts"] = "127.0.0.0/8"
	pf := testenv.StartPostfix(t, testenv.PostfixConfig{RelayTo: postfixSink.Addr(), Main: main})
	fronts := []struct{ name, addr string }{{"proxy", proxyAddr}, {"milter", pf.SMTPAddr()}}
	pid := e.p.cmd.Process.Pid

	// Ordinary mail through both fronts, from start to end.
	type timed struct {
		at   time.Time
		took time.Duration
		res  smtpResult
	}
	var mu sync.Mutex
	var ordinary []timed
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, f := range fronts {
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					data := fmt.Sprintf("From: <u@good.example>\r\nSubject: ordinary %s %d %d\r\n\r\nHello.\r\n", f.name, w, n)
					r := deliver(f.addr, "u@good.example", "", data)
					mu.Lock()
					ordinary = append(ordinary, timed{time.Now(), r.took, r})
					mu.Unlock()
					time.Sleep(50 * time.Millisecond)
				}
			}()
		}
	}
	time.Sleep(4 * time.Second) // the baseline

	hostileStart := time.Now()
	cpuBefore := procCPU(t, pid)
	type outcome struct {
		front string
		h     hostile
		res   smtpResult
	}
	var outs []outcome
	var hw sync.WaitGroup
	var omu sync.Mutex
	for _, f := range fronts {
		hw.Add(1)
		go func() {
			defer hw.Done()
			for _, h := range slices.Concat(hostileInputs(), hostileInputs(), hostileInputs()) {
				data := h.data
				if data != "" {
					data = strings.Replace(data, "Subject: ", "Subject: "+f.name+" ", 1)
				}
				r := deliver(f.addr, h.from, h.xclient, data)
				omu.Lock()
				outs = append(outs, outcome{f.name, h, r})
				omu.Unlock()
			}
		}()
	}
	hw.Wait()
	hostileEnd := time.Now()
	cpuHostile := procCPU(t, pid) - cpuBefore
	time.Sleep(2 * time.Second) // ordinary mail after
	close(stop)
	wg.Wait()

	// Each hostile input: a clear answer within the bound.
	const perMessage = time.Minute
	for _, o := range outs {
		r := o.res
		t.Logf("%-6s %-32s %3d at %-8s after %6s %.80s", o.front, o.h.name, r.code, r.stage, r.took.Round(time.Millisecond), r.text)
		switch {
		case r.err != nil:
			t.Errorf("%s, %s: no answer: %v (at %s)", o.front, o.h.name, r.err, r.stage)
		case r.took > perMessage:
			t.Errorf("%s, %s: answered after %s; want within %s", o.front, o.h.name, r.took, perMessage)
		case o.h.accepted && r.code != 250:
			t.Errorf("%s, %s: %d %s; want it delivered", o.front, o.h.name, r.code, r.text)
		case !o.h.accepted && (r.code < 400 || r.code > 599):
			t.Errorf("%s, %s: %d %s; want it refused", o.front, o.h.name, r.code, r.text)
		}
	}
	// What was delivered carries nothing forged. Postfix relays in the
	// background: wait for the two checked inputs of three rounds.
	for _, f := range []struct {
		name string
		sink *testenv.Sink
	}{{"proxy", proxySink}, {"milter", postfixSink}} {
		var errs []error
		checked := 0
		for deadline := time.Now().Add(30 * time.Second); checked < 6 && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			errs, checked = nil, 0
			for _, m := range f.sink.Messages() {
				h := m.Header()
				for _, x := range hostileInputs() {
					if x.check == nil {
						continue
					}
					subject := strings.SplitN(x.data[strings.Index(x.data, "Subject: ")+9:], "\r\n", 2)[0]
					if !strings.Contains(h, "Subject: "+f.name+" "+subject+"\r\n") {
						continue
					}
					checked++
					if err := x.check(h); err != nil {
						errs = append(errs, fmt.Errorf("%s, %s: %w", f.name, x.name, err))
					}
				}
			}
		}
		for _, err := range errs {
			t.Error(err)
		}
		if checked != 6 {
			t.Errorf("%s: %d delivered hostile messages checked; want 6", f.name, checked)
		}
	}

	// CPU: all the hostile messages together, with the ordinary load beside.
	const cpuBound = 60 * time.Second
	if cpuHostile > cpuBound {
		t.Errorf("mailward used %s of CPU while the hostile messages were sent; want under %s", cpuHostile, cpuBound)
	}
	if n := e.metric(t, `mailward_messages_over_limit_total{limit="mime"}`); n < 1 {
		t.Errorf("the nested MIME was not counted as over its limit (%v)", n)
	}

	// The ordinary sessions: every one answered and delivered, none held.
	var before, during []time.Duration
	since := 0 // answered once the hostile messages started
	for _, o := range ordinary {
		if o.res.err != nil || o.res.code != 250 {
			t.Errorf("an ordinary message: %d %s at %s: %v", o.res.code, o.res.text, o.res.stage, o.res.err)
		}
		if !o.at.Before(hostileStart) {
			since++
		}
		switch {
		case o.at.Before(hostileStart):
			before = append(before, o.took)
		case o.at.Before(hostileEnd):
			during = append(during, o.took)
		}
	}
	b50, b95, bmax := latencies(before)
	d50, d95, dmax := latencies(during)
	const ordinaryBound = 15 * time.Second
	if dmax > ordinaryBound {
		t.Errorf("an ordinary message took %s while the hostile ones were sent; want under %s", dmax, ordinaryBound)
	}
	if since < 4 {
		t.Errorf("only %d ordinary messages answered once the hostile ones started", since)
	}
	t.Logf("hostile messages: %d in %s, mailward CPU %s (message_cpu charged %.2fs in all)", len(outs),
		hostileEnd.Sub(hostileStart).Round(time.Millisecond), cpuHostile, e.metric(t, "mailward_message_cpu_seconds_total"))
	t.Logf("ordinary messages: before %d (p50 %s, p95 %s, max %s); during %d (p50 %s, p95 %s, max %s); %d in all",
		len(before), b50.Round(time.Millisecond), b95.Round(time.Millisecond), bmax.Round(time.Millisecond),
		len(during), d50.Round(time.Millisecond), d95.Round(time.Millisecond), dmax.Round(time.Millisecond), len(ordinary))
}
