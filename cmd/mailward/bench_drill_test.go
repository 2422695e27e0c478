package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/testenv"
)

// benchBinary builds mailward-bench once per test run.
func benchBinary(t *testing.T) string { return buildCommand(t, "../mailward-bench", "mailward-bench") }

// account is the bookkeeping of one mailward-bench smtp --account run.
type account struct {
	Sent         int            `json:"sent"`
	Accepted     int            `json:"accepted"`
	Refused      map[string]int `json:"refused"`
	NoAnswer     int            `json:"no_answer"`
	Arrived      int            `json:"arrived"`
	Lost         int            `json:"lost"`
	Duplicated   int            `json:"duplicated"`
	AfterRefusal int            `json:"after_refusal"`
	Unchecked    int            `json:"unchecked"`
	Problems     []string       `json:"problems"`
}

func (a *account) String() string {
	return fmt.Sprintf("sent %d, accepted %d, arrived %d, refused %v, no answer %d; lost %d, duplicated %d, after a refusal %d, unchecked %d",
		a.Sent, a.Accepted, a.Arrived, a.Refused, a.NoAnswer, a.Lost, a.Duplicated, a.AfterRefusal, a.Unchecked)
}

func (a *account) tempfails() int {
	n := 0
	for code, c := range a.Refused {
		if strings.HasPrefix(code, "4") {
			n += c
		}
	}
	return n
}

// benchCorpus is a corpus of the load tool with its zone served on
// loopback by the fixture DNS server.
type benchCorpus struct {
	bench, dir, dnsAddr, zone string
	dns                       *testenv.DNSServer
}

func newBenchCorpus(t *testing.T) *benchCorpus {
	t.Helper()
	c := &benchCorpus{bench: benchBinary(t), dir: filepath.Join(t.TempDir(), "corpus")}
	c.dnsAddr = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	if out, err := exec.Command(c.bench, "gen", "--out", c.dir, "--domains", "6", "--messages", "140", "--dns", c.dnsAddr).CombinedOutput(); err != nil {
		t.Fatalf("mailward-bench gen: %v\n%s", err, out)
	}
	zone, err := os.ReadFile(filepath.Join(c.dir, "zone.txt"))
	if err != nil {
		t.Fatal(err)
	}
	c.zone = string(zone)
	if err := c.startDNS(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.dns.Close() })
	return c
}

// startDNS serves the zone, again after a Close.
func (c *benchCorpus) startDNS() error {
	var err error
	c.dns, err = testenv.NewDNSServer(c.dnsAddr, c.zone)
	return err
}

// drive runs mailward-bench smtp --account against addr for d, with its
// sink on sinkAddr; the error is the load tool's verdict on the counts.
func (c *benchCorpus) drive(t *testing.T, addr, sinkAddr string, d time.Duration) (*account, error) {
	t.Helper()
	cmd := exec.Command(c.bench, "smtp", "--addr", addr, "--corpus", c.dir, "--xclient",
		"--sink", sinkAddr, "--sink-wait", "3s", "--account", "--authserv-id", "mx.bench.test",
		"--duration", d.String(), "--concurrency", "6", "--json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var res struct {
		Runs []struct {
			Account *account `json:"account"`
		} `json:"runs"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil || len(res.Runs) != 1 || res.Runs[0].Account == nil {
		t.Fatalf("mailward-bench: %v, output %v\n%s\n%s", runErr, err, stdout.String(), stderr.String())
	}
	return res.Runs[0].Account, runErr
}

// driveStrict is drive where every count must add up and some mail must
// be accepted.
func (c *benchCorpus) driveStrict(t *testing.T, addr, sinkAddr string, d time.Duration) *account {
	t.Helper()
	a, err := c.drive(t, addr, sinkAddr, d)
	if err != nil || a.NoAnswer != 0 || a.Accepted == 0 {
		t.Errorf("the counts do not add up (%v): %s\n%s", err, a, strings.Join(a.Problems, "\n"))
	}
	return a
}

// TestDrillPostfixUnderBenchLoad drives a private Postfix, with the real
// binary as its milter and Redis as its cache, with the load tool's SMTP
// driver and corpus while things break: DNS stops answering, mailward is
// killed with SIGKILL and restarts with a cold cache while DNS is still
// down, DNS comes back, Redis is killed and restarted, mailward is
// stopped with SIGTERM and started again, and a broken rule file is
// reloaded. The load tool counts every message:
// each arrives at its sink exactly once after a 250, with mailward's
// Authentication-Results, or was refused with a code the client saw and
// never arrives. A second run after the faults must see no 4xx at all.
func TestDrillPostfixUnderBenchLoad(t *testing.T) {
	testenv.Require(t, "postfix")
	c := newBenchCorpus(t)
	dir := t.TempDir()

	milterAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	rules, err := os.ReadFile(filepath.Join(c.dir, "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rulesFile := writeFile(t, dir, "rules.yaml", string(rules))
	redis := testenv.StartRedis(t)
	cfg := writeFile(t, dir, "mailward.yaml", fmt.Sprintf(`hostname: mx.bench.test
milter:
  listen: inet:%s
admin:
  listen: %s
dns:
  servers: [%q]
  timeout: 300ms
  retries: -1
timeouts:
  checks: 1s
dmarc:
  enforce: true
rules:
  files: [%q]
cache:
  type: redis
  redis:
    addrs: [%q]
    timeout: 200ms
  breaker:
    failures: 3
    cooldown: 1s
log:
  level: warn
`, milterAddr, adminAddr, c.dnsAddr, rulesFile, redis.Addr()))
	p := startProc(t, cfg, milterAddr)

	sinkAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	main := testenv.ReadMainCf(t, "../../examples/postfix/main.cf.milter")
	main["smtpd_milters"] = "inet:" + milterAddr
	// The load tool names each message's client with XCLIENT, so that
	// mailward checks it as the corpus intends.
	main["smtpd_authorized_xclient_hosts"] = "127.0.0.0/8"
	// Those clients are not in mynetworks: the corpus's recipient domain
	// is one this Postfix relays for.
	main["relay_domains"] = "rcpt.bench.test"
	pf := testenv.StartPostfix(t, testenv.PostfixConfig{RelayTo: sinkAddr, Main: main})

	// Postfix puts what mailward quarantines on hold: accepted, and never
	// relayed. The load tool sees those as not arrived; each must be on
	// hold, once.
	counted := map[string]bool{}
	held := func() int {
		t.Helper()
		files, err := pf.Held()
		if err != nil {
			t.Fatal(err)
		}
		seqs, n := map[string]bool{}, 0
		for id, f := range files {
			if counted[id] {
				continue
			}
			counted[id] = true
			n++
			const h = "X-Mailward-Bench-Seq: "
			i := bytes.Index(f, []byte(h))
			if i < 0 {
				t.Errorf("held message %s has no sequence number of the load tool", id)
				continue
			}
			seq := f[i+len(h):]
			seq = seq[:len(seq)-len(bytes.TrimLeft(seq, "0123456789"))]
			if seqs[string(seq)] {
				t.Errorf("send %s held twice", seq)
			}
			seqs[string(seq)] = true
		}
		return n
	}
	run := func(d time.Duration) (*account, string) {
		t.Helper()
		a, err := c.drive(t, pf.SMTPAddr(), sinkAddr, d)
		h := held()
		summary := fmt.Sprintf("%s; held by Postfix %d", a, h)
		refused := 0
		for _, n := range a.Refused {
			refused += n
		}
		// The load tool counts held mail as lost; the rest of its
		// bookkeeping must hold exactly.
		if a.Sent != a.Accepted+refused+a.NoAnswer || a.Accepted != a.Arrived+h || a.Lost != h ||
			a.Duplicated != 0 || a.AfterRefusal != 0 || a.Unchecked != 0 {
			t.Errorf("the counts do not add up (%v): %s\n%s", err, summary, strings.Join(a.Problems, "\n"))
		}
		return a, summary
	}

	// The faults, on a clock, while the load tool runs.
	faults := make(chan string, 8)
	go func() {
		defer close(faults)
		step := func(at time.Duration, what string, do func() error) {
			time.Sleep(at)
			if err := do(); err != nil {
				faults <- what + ": " + err.Error()
				return
			}
			faults <- what
		}
		step(2*time.Second, "DNS stops answering", func() error { c.dns.Close(); return nil })
		step(time.Second, "mailward killed with SIGKILL", func() error { return p.cmd.Process.Signal(syscall.SIGKILL) })
		step(2*time.Second, "mailward restarted, DNS still down", func() error { p = startProc(t, cfg, milterAddr); return nil })
		step(3*time.Second, "DNS back", c.startDNS)
		step(time.Second, "Redis killed", func() error { redis.Stop(); return nil })
		step(2*time.Second, "Redis back", func() error { redis.Start(); return nil })
		step(time.Second, "mailward stopped with SIGTERM", func() error {
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				return err
			}
			select {
			case err := <-p.done:
				if err != nil {
					return fmt.Errorf("exit: %v", err)
				}
				return nil
			case <-time.After(15 * time.Second):
				return errors.New("still running 15 s after SIGTERM")
			}
		})
		step(time.Second, "mailward started again", func() error { p = startProc(t, cfg, milterAddr); return nil })
		step(2*time.Second, "broken rule file reloaded with SIGHUP", func() error {
			writeFile(t, dir, "rules.yaml", "rules:\n  - name: broken\n    when: mail_from ==\n    action: reject\n")
			return p.cmd.Process.Signal(syscall.SIGHUP)
		})
	}()
	a, summary := run(18 * time.Second)
	for f := range faults {
		t.Logf("fault: %s", f)
		if strings.Contains(f, ": ") {
			t.Errorf("fault step failed: %s", f)
		}
	}
	t.Logf("under faults: %s", summary)
	if a.tempfails() == 0 || a.Accepted == 0 {
		t.Errorf("the drill needs both accepted and tempfailed mail to prove anything: %s", summary)
	}
	if code, _ := httpDo(t, "GET", "http://"+adminAddr+"/readyz"); code != 200 {
		t.Errorf("/readyz answered %d after a broken reload; want ready", code)
	}
	if !strings.Contains(p.out.String(), "rules.yaml:3:") {
		t.Errorf("the broken rule file's error does not name file and line:\n%s", p.out.String())
	}

	// Everything is back: every message gets a definitive answer again.
	a, summary = run(4 * time.Second)
	t.Logf("after recovery: %s", summary)
	if a.tempfails() != 0 || a.Accepted == 0 {
		t.Errorf("after recovery, want mail accepted and no tempfail: %s", summary)
	}
}

// upstreamRelay stands between the SMTP proxy and its upstream (the load
// tool's sink) and fails on request: down (connections refused), refusing
// (a 421 greeting), or hanging once the proxy sends DATA.
//
// A switch drops the open connections, so that the proxy's next
// transaction meets the new behaviour; but one whose message upstream has
// taken is dropped only once its reply has gone back. Cutting that reply
// off would leave the proxy unsure whether upstream took the message, the
// window in which SMTP itself may deliver twice (RFC 1047), and the drill
// counts only what the proxy can know.
type upstreamRelay struct {
	addr   string
	target string
	mu     sync.Mutex
	mode   string
	ln     net.Listener
	conns  map[*relayConn]bool
}

// relayConn is one proxy connection and its upstream one.
type relayConn struct {
	c, up    net.Conn
	inflight bool // the end of a message went up; its reply has not come back
	doomed   bool // close once the reply is back
}

func (rc *relayConn) close() {
	rc.c.Close()
	if rc.up != nil {
		rc.up.Close()
	}
}

func startUpstreamRelay(t *testing.T, target string) *upstreamRelay {
	r := &upstreamRelay{addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), target: target, conns: map[*relayConn]bool{}}
	if err := r.set("pass"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.set("down") })
	return r
}

func (r *upstreamRelay) set(mode string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mode = mode
	for rc := range r.conns {
		if rc.inflight {
			rc.doomed = true
			continue
		}
		rc.close()
		delete(r.conns, rc)
	}
	if mode == "down" {
		if r.ln != nil {
			r.ln.Close()
			r.ln = nil
		}
		return nil
	}
	if r.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		return err
	}
	r.ln = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.serve(c)
		}
	}()
	return nil
}

func (r *upstreamRelay) serve(c net.Conn) {
	rc := &relayConn{c: c}
	defer rc.close()
	r.mu.Lock()
	mode := r.mode
	if r.ln == nil {
		r.mu.Unlock()
		return
	}
	r.conns[rc] = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.conns, rc)
		r.mu.Unlock()
	}()
	if mode == "refuse" {
		fmt.Fprint(c, "421 4.3.2 upstream refuses mail for now\r\n")
		return
	}
	up, err := net.Dial("tcp", r.target)
	if err != nil {
		return
	}
	r.mu.Lock()
	rc.up = up
	r.mu.Unlock()

	// Upstream to proxy, a line at a time: the end of a reply to a
	// message's end closes a doomed connection.
	var held atomic.Bool
	go func() {
		br := bufio.NewReader(up)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				if !held.Load() {
					c.Close()
				}
				return
			}
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
			r.mu.Lock()
			if rc.inflight && len(line) >= 4 && line[3] == ' ' {
				rc.inflight = false
				if rc.doomed {
					rc.close()
				}
			}
			r.mu.Unlock()
		}
	}()
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if mode == "hang" && strings.EqualFold(strings.TrimSpace(line), "DATA") {
			// Nothing more either way, with the proxy's connection left
			// open: upstream never sees the message, the proxy never
			// hears back.
			held.Store(true)
			up.Close()
			io.Copy(io.Discard, br)
			return
		}
		if line == ".\r\n" {
			r.mu.Lock()
			rc.inflight = true
			r.mu.Unlock()
		}
		if _, err := io.WriteString(up, line); err != nil {
			return
		}
	}
}

// TestDrillProxyUpstreamUnderBenchLoad drives the SMTP proxy with the
// load tool while its upstream goes down, refuses mail, and hangs once
// DATA is sent. Every message must arrive once after a 250 or be refused
// with a code the client saw; a 250 is never given for mail upstream did
// not take.
func TestDrillProxyUpstreamUnderBenchLoad(t *testing.T) {
	c := newBenchCorpus(t)
	dir := t.TempDir()
	sinkAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	relay := startUpstreamRelay(t, sinkAddr)
	smtpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg := writeFile(t, dir, "mailward.yaml", fmt.Sprintf(`hostname: mx.bench.test
milter:
  listen: ""
smtp:
  listen: %s
  upstream: %s
  upstream_tls: "off"
  upstream_timeout: 1s
  trusted_networks: [127.0.0.1]
  max_connections_per_ip: 200
admin:
  listen: ""
dns:
  servers: [%q]
dmarc:
  enforce: true
rules:
  files: [%q]
log:
  level: warn
`, smtpAddr, relay.addr, c.dnsAddr, filepath.Join(c.dir, "rules.yaml")))
	startProc(t, cfg, smtpAddr)

	faults := make(chan string, 8)
	go func() {
		defer close(faults)
		for _, f := range []struct {
			after time.Duration
			mode  string
		}{{2 * time.Second, "down"}, {2 * time.Second, "pass"}, {2 * time.Second, "refuse"}, {2 * time.Second, "pass"}, {time.Second, "hang"}, {3 * time.Second, "pass"}} {
			time.Sleep(f.after)
			if err := relay.set(f.mode); err != nil {
				faults <- "upstream " + f.mode + ": " + err.Error()
				continue
			}
			faults <- "upstream " + f.mode
		}
	}()
	a := c.driveStrict(t, smtpAddr, sinkAddr, 14*time.Second)
	for f := range faults {
		t.Logf("fault: %s", f)
		if strings.Contains(f, ": ") {
			t.Errorf("fault step failed: %s", f)
		}
	}
	t.Logf("under faults: %s", a)
	if a.tempfails() == 0 {
		t.Errorf("no tempfail while upstream was failing: %s", a)
	}
	a = c.driveStrict(t, smtpAddr, sinkAddr, 4*time.Second)
	t.Logf("after recovery: %s", a)
	if a.tempfails() != 0 {
		t.Errorf("tempfails with upstream back: %s", a)
	}
}

// TestDrillRedisClusterFailoverUnderBenchLoad drives the SMTP proxy, with
// a Redis Cluster of three masters and three replicas as its cache, with
// the load tool while a master is killed and its replica takes over.
// Mail goes on with every message counted and none tempfailed (the
// checks run uncached while Redis fails), the breaker is closed again
// afterwards, and neither goroutines nor Redis connections pile up.
func TestDrillRedisClusterFailoverUnderBenchLoad(t *testing.T) {
	cluster := testenv.StartRedisClusterReplicas(t, 3, 1)
	c := newBenchCorpus(t)
	dir := t.TempDir()
	sinkAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	smtpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	addrs, _ := json.Marshal(cluster.Addrs())
	cfg := writeFile(t, dir, "mailward.yaml", fmt.Sprintf(`hostname: mx.bench.test
milter:
  listen: ""
smtp:
  listen: %s
  upstream: %s
  upstream_tls: "off"
  trusted_networks: [127.0.0.1]
  max_connections_per_ip: 200
admin:
  listen: %s
dns:
  servers: [%q]
dmarc:
  enforce: true
rules:
  files: [%q]
cache:
  type: redis
  redis:
    addrs: %s
    timeout: 200ms
  breaker:
    failures: 3
    cooldown: 1s
log:
  level: warn
`, smtpAddr, sinkAddr, adminAddr, c.dnsAddr, filepath.Join(c.dir, "rules.yaml"), addrs))
	startProc(t, cfg, smtpAddr)
	admin := "http://" + adminAddr
	waitHTTP(t, admin+"/healthz")
	metric := func(series string) float64 {
		_, body := httpDo(t, "GET", admin+"/metrics")
		for _, line := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(line, series+" "); ok {
				var f float64
				fmt.Sscan(v, &f)
				return f
			}
		}
		return -1
	}
	goroutinesBefore := metric("go_goroutines")

	failover := make(chan string, 1)
	go func() {
		time.Sleep(2 * time.Second)
		m, err := cluster.Master()
		if err != nil {
			failover <- err.Error()
			return
		}
		masters := cluster.Masters()
		m.Stop()
		start := time.Now()
		// The replica is promoted once the others have timed the master
		// out (cluster-node-timeout, 2 s).
		for cluster.Masters() < masters {
			if time.Since(start) > 20*time.Second {
				failover <- "no replica took over within 20 s"
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err := cluster.WaitOK(20 * time.Second); err != nil {
			failover <- err.Error()
			return
		}
		failover <- fmt.Sprintf("master %s killed; cluster ok again after %s", m.Addr(), time.Since(start).Round(time.Millisecond))
	}()
	a := c.driveStrict(t, smtpAddr, sinkAddr, 12*time.Second)
	t.Log(<-failover)
	t.Logf("during failover: %s", a)
	if a.tempfails() != 0 {
		t.Errorf("tempfails while Redis failed over: %s", a)
	}
	a = c.driveStrict(t, smtpAddr, sinkAddr, 3*time.Second)
	t.Logf("after failover: %s", a)
	if a.tempfails() != 0 {
		t.Errorf("tempfails after failover: %s", a)
	}
	if b := metric(`mailward_cache_breaker_state{state="closed"}`); b != 1 {
		t.Errorf("breaker closed = %v after failover; want 1", b)
	}
	// Once the load is gone, goroutines and Redis connections settle.
	var after float64
	deadline := time.Now().Add(5 * time.Second)
	for {
		after = metric("go_goroutines")
		if after <= goroutinesBefore+10 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if after > goroutinesBefore+10 {
		t.Errorf("go_goroutines %v before the drill, %v after: a leak", goroutinesBefore, after)
	}
	for _, a := range cluster.Addrs() {
		for i := range 6 {
			if n := cluster.Node(i); n.Addr() == a {
				if c, err := n.ConnectedClients(); err == nil && c > 40 {
					t.Errorf("%d connections to %s after the load", c, a)
				}
			}
		}
	}
	t.Logf("go_goroutines %v before, %v after", goroutinesBefore, after)
}
