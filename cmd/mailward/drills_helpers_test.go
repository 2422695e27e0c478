package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/mailward/mailward/internal/testenv"
)

// drillZone is fixtureZone plus a sender domain the drills break. Its TXT
// record lives one second so that a fault is seen soon after it starts.
const drillZone = fixtureZone + `
drill.example. 1 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
`

// drillEnv is a running mailward with its own fixture DNS server and an
// admin listener.
type drillEnv struct {
	dir   string
	dns   *testenv.DNSServer
	addr  string // milter
	admin string // http://host:port
	cfg   string
	p     *proc
}

// startDrill writes files (name → content) and a config of extra on top
// of the milter, DNS servers and admin keys, then starts mailward.
func startDrill(t *testing.T, extra string, files map[string]string) *drillEnv {
	t.Helper()
	e := &drillEnv{dir: t.TempDir(), dns: testenv.StartDNS(t, drillZone)}
	e.addr = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	e.admin = "http://" + adminAddr
	for name, content := range files {
		if err := os.MkdirAll(filepath.Join(e.dir, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, e.dir, name, content)
	}
	// Only the fixture server is asked; extra may set other dns keys.
	e.cfg = writeFile(t, e.dir, "mailward.yaml", testenv.Config(t, testenv.BaseConfig(e.dns.Addr()),
		"milter:\n  listen: inet:"+e.addr+"\nadmin:\n  listen: "+adminAddr+"\n", extra))
	e.p = startProc(t, e.cfg, e.addr)
	waitHTTP(t, e.admin+"/healthz")
	return e
}

// metric returns the value of the sample named exactly series (name and
// labels as /metrics prints them), or -1 if absent.
func (e *drillEnv) metric(t *testing.T, series string) float64 {
	t.Helper()
	_, body := httpDo(t, "GET", e.admin+"/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %q: %v", series, v, err)
			}
			return f
		}
	}
	return -1
}

// message is one milter transaction a drill sends.
type message struct {
	n       int
	from    string
	helo    string // default c.example; varied to miss cached check results
	subject string
	body    io.Reader // nil: a short text
	// beforeBody, if set, runs after the headers are through.
	beforeBody func()
}

// outcome is what the MTA side saw for one message.
type outcome struct {
	n       int
	from    string
	code    int    // 250 accepted; otherwise the SMTP code of the refusal
	reply   string // the refusal's text
	stage   string // where the final answer came
	authres string // our Authentication-Results value, when accepted
	took    time.Duration
	err     error // no answer at all: the connection failed
}

// send runs m through the milter at addr, as Postfix would, and times it
// from connect to the final answer.
func send(addr string, m message) (o outcome) {
	o = outcome{n: m.n, from: m.from}
	start := time.Now()
	defer func() { o.took = time.Since(start) }()
	client := gomilter.NewClientWithOptions("tcp", addr, gomilter.ClientOptions{
		ActionMask:   gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptQuarantine,
		ReadTimeout:  30 * time.Second,
		WriteTimeout: 30 * time.Second,
	})
	defer client.Close()
	s, err := client.Session()
	if err != nil {
		o.err = fmt.Errorf("negotiating: %w", err)
		return o
	}
	defer s.Close()
	helo := m.helo
	if helo == "" {
		helo = "c.example"
	}
	final := func(stage string, a *gomilter.Action) bool {
		o.stage = stage
		switch a.Code {
		case gomilter.ActContinue:
			return false
		case gomilter.ActAccept:
			o.code = 250
		case gomilter.ActReplyCode:
			o.code, o.reply = a.SMTPCode, a.SMTPText
		case gomilter.ActTempFail:
			o.code = 451
		case gomilter.ActReject:
			o.code = 550
		case gomilter.ActDiscard:
			o.code = 250
			o.reply = "discarded"
		default:
			o.err = fmt.Errorf("%s: unexpected action %q", stage, a.Code)
		}
		return true
	}
	steps := []struct {
		name string
		run  func() (*gomilter.Action, error)
	}{
		{"connect", func() (*gomilter.Action, error) {
			return s.Conn("c.example", gomilter.FamilyInet, 25, "192.0.2.10")
		}},
		{"helo", func() (*gomilter.Action, error) { return s.Helo(helo) }},
		{"mail", func() (*gomilter.Action, error) { return s.Mail("<"+m.from+">", nil) }},
		{"rcpt", func() (*gomilter.Action, error) { return s.Rcpt("<bob@rcpt.example>", nil) }},
		{"header", func() (*gomilter.Action, error) { return s.HeaderField("From", "<"+m.from+">") }},
		{"header", func() (*gomilter.Action, error) { return s.HeaderField("Subject", m.subject) }},
		{"eoh", s.HeaderEnd},
	}
	for _, st := range steps {
		a, err := st.run()
		if err != nil {
			o.err = fmt.Errorf("%s: %w", st.name, err)
			return o
		}
		if final(st.name, a) {
			return o
		}
	}
	if m.beforeBody != nil {
		m.beforeBody()
	}
	body := m.body
	if body == nil {
		body = strings.NewReader("drill message " + strconv.Itoa(m.n) + "\r\n")
	}
	mods, a, err := s.BodyReadFrom(body)
	if err != nil {
		o.err = fmt.Errorf("body: %w", err)
		return o
	}
	if final("eom", a) && o.code == 250 {
		for _, mod := range mods {
			if (mod.Code == gomilter.ActInsertHeader || mod.Code == gomilter.ActAddHeader) && mod.HeaderName == "Authentication-Results" {
				o.authres = mod.HeaderValue
			}
		}
	}
	return o
}

// tally counts outcomes; each drill checks its own rules against it.
type tally struct {
	mu   sync.Mutex
	outs []outcome
}

func (ta *tally) add(o outcome) {
	ta.mu.Lock()
	ta.outs = append(ta.outs, o)
	ta.mu.Unlock()
}

func (ta *tally) all() []outcome {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	return append([]outcome(nil), ta.outs...)
}

// summary says what was sent, accepted and refused with which codes.
func (ta *tally) summary() string {
	outs := ta.all()
	codes := map[string]int{}
	var slowest time.Duration
	for _, o := range outs {
		switch {
		case o.err != nil:
			codes["no answer"]++
		case o.code == 250:
			codes["250 accepted"]++
		default:
			codes[strconv.Itoa(o.code)+" at "+o.stage]++
		}
		slowest = max(slowest, o.took)
	}
	keys := make([]string, 0, len(codes))
	for k := range codes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	fmt.Fprintf(&b, "sent %d:", len(outs))
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, codes[k])
	}
	fmt.Fprintf(&b, "; slowest answer %s", slowest.Round(time.Millisecond))
	return b.String()
}

// load sends messages from workers until stop is closed; next builds the
// n-th message.
func load(ta *tally, addr string, workers int, stop <-chan struct{}, next func(n int) message) *sync.WaitGroup {
	var wg sync.WaitGroup
	var mu sync.Mutex
	n := 0
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				n++
				i := n
				mu.Unlock()
				ta.add(send(addr, next(i)))
			}
		}()
	}
	return &wg
}

var rssLine = regexp.MustCompile(`(?m)^(VmRSS|VmHWM):\s+(\d+) kB`)

// memory returns the process's resident set size and its peak, in bytes.
func memory(t *testing.T, pid int) (rss, peak int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("reading process status: %v", err)
	}
	for _, m := range rssLine.FindAllSubmatch(b, -1) {
		kb, _ := strconv.ParseInt(string(m[2]), 10, 64)
		if string(m[1]) == "VmRSS" {
			rss = kb << 10
		} else {
			peak = kb << 10
		}
	}
	if rss == 0 || peak == 0 {
		t.Fatalf("no VmRSS/VmHWM in /proc/%d/status", pid)
	}
	return rss, peak
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
