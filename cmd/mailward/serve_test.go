package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/mailward/mailward/internal/testenv"
)

// built holds the commands built for this test run, by package path.
var built sync.Map // string → func() (string, error)

// buildCommand builds the command in pkg (relative to this package) once
// per test run and returns the binary's path.
func buildCommand(t *testing.T, pkg, name string) string {
	t.Helper()
	f, _ := built.LoadOrStore(pkg, sync.OnceValues(func() (string, error) {
		dir, err := os.MkdirTemp("", name+"-bin-")
		if err != nil {
			return "", err
		}
		path := filepath.Join(dir, name)
		if out, err := exec.Command("go", "build", "-o", path, pkg).CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
		return path, nil
	}))
	path, err := f.(func() (string, error))()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// mailwardBinary builds the command once per test run.
func mailwardBinary(t *testing.T) string { return buildCommand(t, ".", "mailward") }

// proc is a mailward serve process.
type proc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func startProc(t *testing.T, config string, addr string) *proc {
	t.Helper()
	d := &proc{out: &syncBuffer{}, done: make(chan error, 1)}
	d.cmd = exec.Command(mailwardBinary(t), "serve", "--config", config)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("mailward output:\n%s", d.out.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("mailward did not listen on %s: %v\n%s", addr, err, d.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *proc) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-d.done:
		return err
	case <-time.After(within):
		t.Fatalf("mailward still running after %s\n%s", within, d.out.String())
		return nil
	}
}

func TestSIGTERMFinishesTransactionInFlight(t *testing.T) {
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg := writeFile(t, dir, "mailward.yaml", baseConfig(t, addr)+"admin:\n  listen: \"\"\ntimeouts:\n  shutdown: 20s\n")
	d := startProc(t, cfg, addr)

	client := gomilter.NewClientWithOptions("tcp", addr, gomilter.ClientOptions{
		ActionMask: gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptQuarantine,
	})
	defer client.Close()
	s, err := client.Session()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustContinue := func(what string, a *gomilter.Action, err error) {
		t.Helper()
		if err != nil || a.Code != gomilter.ActContinue {
			t.Fatalf("%s: %+v, %v", what, a, err)
		}
	}
	a, err := s.Conn("client.example", gomilter.FamilyInet, 25, "192.0.2.10")
	mustContinue("connect", a, err)
	a, err = s.Helo("client.example")
	mustContinue("helo", a, err)
	a, err = s.Mail("<a@sender.example>", nil)
	mustContinue("mail", a, err)

	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// New connections are refused while the open one finishes.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("mailward still accepts connections after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	a, err = s.Rcpt("<b@rcpt.example>", nil)
	mustContinue("rcpt", a, err)
	a, err = s.HeaderField("Subject", "in flight")
	mustContinue("header", a, err)
	a, err = s.HeaderEnd()
	mustContinue("eoh", a, err)
	mods, act, err := s.End()
	if err != nil || act.Code != gomilter.ActAccept {
		t.Fatalf("end of message: %+v, %v", act, err)
	}
	var ar bool
	for _, m := range mods {
		ar = ar || (m.Code == gomilter.ActInsertHeader || m.Code == gomilter.ActAddHeader) && m.HeaderName == "Authentication-Results"
	}
	if !ar {
		t.Fatalf("accepted message got no Authentication-Results: %+v", mods)
	}
	s.Close()
	client.Close()
	if err := d.wait(t, 15*time.Second); err != nil {
		t.Fatalf("mailward exited with %v; want 0\n%s", err, d.out.String())
	}
	if !strings.Contains(d.out.String(), "verdict=accept") {
		t.Fatalf("no transaction log line:\n%s", d.out.String())
	}
}

// fixtureZone answers the look-ups a test message causes: the loopback
// client's reverse DNS and the senders' domains.
const fixtureZone = `
. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300
1.0.0.127.in-addr.arpa. IN PTR localhost.test.
10.2.0.192.in-addr.arpa. IN PTR c.example.
localhost.test. IN A 127.0.0.1
c.example. IN A 192.0.2.10
good.example. IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
`

// baseConfig is a config that serves the milter on addr and asks only a
// fixture DNS server: tests never query the internet.
func baseConfig(t *testing.T, addr string) string {
	dns := testenv.StartDNS(t, fixtureZone)
	return testenv.BaseConfig(dns.Addr()) + "milter:\n  listen: inet:" + addr + "\n"
}

func httpDo(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAdminEndpointsAndReload(t *testing.T) {
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	good := baseConfig(t, addr) + "admin:\n  listen: " + adminAddr + "\n"
	cfg := writeFile(t, dir, "mailward.yaml", good)
	p := startProc(t, cfg, addr)
	base := "http://" + adminAddr
	waitHTTP(t, base+"/healthz")
	if code, body := httpDo(t, "GET", base+"/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %s", code, body)
	}
	// A milter transaction shows up in the metrics.
	sendOne(t, addr)
	if code, body := httpDo(t, "GET", base+"/metrics"); code != 200 || !strings.Contains(body, `mailward_transactions_total{front="milter",verdict="accept"} 1`) {
		t.Fatalf("/metrics = %d, no accepted milter transaction:\n%s", code, body)
	}
	// A broken config is refused over HTTP and the running one stays.
	writeFile(t, dir, "mailward.yaml", good+"bogus_key: 1\n")
	code, body := httpDo(t, "POST", base+"/reload")
	if code != 422 || !strings.Contains(body, "mailward.yaml:8:1: unknown key \"bogus_key\"") {
		t.Fatalf("bad reload = %d %q", code, body)
	}
	if code, _ := httpDo(t, "GET", base+"/readyz"); code != 200 {
		t.Fatalf("not ready after a failed reload")
	}
	// SIGHUP with the same broken file: logged, still serving.
	p.cmd.Process.Signal(syscall.SIGHUP)
	sendOne(t, addr)
	// The signal is handled in its own time: wait for its failed reload
	// before the file is fixed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, metrics := httpDo(t, "GET", base+"/metrics")
		if strings.Contains(metrics, `mailward_reloads_total{result="failure"} 2`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SIGHUP with a broken config: no second failed reload in the metrics:\n%s", p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	writeFile(t, dir, "mailward.yaml", good)
	if code, body := httpDo(t, "POST", base+"/reload"); code != 200 {
		t.Fatalf("good reload = %d %s", code, body)
	}
	_, metrics := httpDo(t, "GET", base+"/metrics")
	for _, want := range []string{`mailward_reloads_total{result="failure"} 2`, `mailward_reloads_total{result="success"} 1`, `mailward_transactions_total{front="milter",verdict="accept"} 2`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if !strings.Contains(p.out.String(), "reload failed; keeping the running config and rules") {
		t.Errorf("failed reload not logged:\n%s", p.out.String())
	}
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sendOne runs one accepted message through the milter.
func sendOne(t *testing.T, addr string) {
	t.Helper()
	client := gomilter.NewClientWithOptions("tcp", addr, gomilter.ClientOptions{
		ActionMask: gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptQuarantine,
	})
	defer client.Close()
	s, err := client.Session()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	steps := []func() (*gomilter.Action, error){
		func() (*gomilter.Action, error) { return s.Conn("c.example", gomilter.FamilyInet, 25, "192.0.2.1") },
		func() (*gomilter.Action, error) { return s.Helo("c.example") },
		func() (*gomilter.Action, error) { return s.Mail("<a@x.example>", nil) },
		func() (*gomilter.Action, error) { return s.Rcpt("<b@y.example>", nil) },
		func() (*gomilter.Action, error) { return s.HeaderEnd() },
	}
	for i, step := range steps {
		if a, err := step(); err != nil || a.Code != gomilter.ActContinue {
			t.Fatalf("step %d: %+v %v", i, a, err)
		}
	}
	if _, a, err := s.End(); err != nil || a.Code != gomilter.ActAccept {
		t.Fatalf("end: %+v %v", a, err)
	}
}

// TestReadyzIgnoresRedis: with a shared cache configured, /readyz stays
// 200 while Redis is down (mail flows past the breaker; a load balancer
// must not pull every instance at once); /healthz says how Redis is.
func TestReadyzIgnoresRedis(t *testing.T) {
	redis := testenv.StartRedis(t)
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg := writeFile(t, dir, "mailward.yaml", baseConfig(t, addr)+"admin:\n  listen: "+adminAddr+
		"\ncache:\n  type: redis\n  redis:\n    addrs: [\""+redis.Addr()+"\"]\n    timeout: 200ms\n")
	startProc(t, cfg, addr)
	base := "http://" + adminAddr
	waitHTTP(t, base+"/healthz")
	if code, body := httpDo(t, "GET", base+"/healthz"); code != 200 || !strings.Contains(body, "redis: ok") {
		t.Fatalf("/healthz with Redis up = %d %s", code, body)
	}
	redis.Stop()
	if code, body := httpDo(t, "GET", base+"/readyz"); code != 200 {
		t.Fatalf("/readyz with Redis down = %d %s; want 200: mail still flows", code, body)
	}
	if code, body := httpDo(t, "GET", base+"/healthz"); code != 200 || !strings.Contains(body, "redis: down") {
		t.Fatalf("/healthz with Redis down = %d %s", code, body)
	}
	sendOne(t, addr) // mail still flows
	redis.Start()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, body := httpDo(t, "GET", base+"/healthz")
		if strings.Contains(body, "redis: ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz never saw Redis again: %s", body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestReloadAppliesLogSettings: a reload switches log.format and
// log.level, for loggers already handed out too.
func TestReloadAppliesLogSettings(t *testing.T) {
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	good := baseConfig(t, addr) + "admin:\n  listen: " + adminAddr + "\n"
	cfg := writeFile(t, dir, "mailward.yaml", good+"log:\n  format: text\n  level: warn\n")
	p := startProc(t, cfg, addr)
	waitHTTP(t, "http://"+adminAddr+"/healthz")
	sendOne(t, addr)
	if strings.Contains(p.out.String(), "verdict=accept") {
		t.Fatalf("a transaction logged at level warn:\n%s", p.out.String())
	}
	writeFile(t, dir, "mailward.yaml", good+"log:\n  format: json\n  level: info\n")
	if code, body := httpDo(t, "POST", "http://"+adminAddr+"/reload"); code != 200 {
		t.Fatalf("reload = %d %s", code, body)
	}
	sendOne(t, addr)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.out.String(), `"verdict":"accept"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no JSON transaction line after the reload:\n%s", p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The policy front never sees the message: serve names the rules it
// skips there when it starts.
func TestServeNamesRulesThePolicyFrontSkips(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "r.yaml", "rules:\n  - name: no-message-id\n    when: message_id == \"\"\n    action: score\n    score: 1\n  - name: envelope\n    when: mail_from == \"\"\n    action: score\n    score: 1\n")
	policyAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg := writeFile(t, dir, "mailward.yaml", "hostname: mw.test.example\ndns:\n  servers: [\"127.0.0.1:1\"]\nrules:\n  files: [r.yaml]\npolicy:\n  listen: inet:"+policyAddr+"\n")
	p := startProc(t, cfg, policyAddr)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.out.String(), "skipped for its transactions") {
		if time.Now().After(deadline) {
			t.Fatalf("no word of the skipped rules:\n%s", p.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out := p.out.String(); !strings.Contains(out, "no-message-id") || strings.Contains(out, "envelope]") {
		t.Errorf("wrong rules named:\n%s", out)
	}
}

// TestMetricsOfRulesAndBuild: the build, ratelimit() outcomes, rule
// run-time errors, greylisting and the breaker's state are all metrics.
func TestMetricsOfRulesAndBuild(t *testing.T) {
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	writeFile(t, dir, "r.yaml", `rules:
  - name: per-client
    when: ratelimit("ip:" + ip, 100, "1h")
    action: tempfail
  - name: fragile
    when: int(header("X-Count")) > 3
    action: reject
`)
	cfg := writeFile(t, dir, "mailward.yaml", baseConfig(t, addr)+"admin:\n  listen: "+adminAddr+"\nrules:\n  files: [r.yaml]\n")
	startProc(t, cfg, addr)
	waitHTTP(t, "http://"+adminAddr+"/healthz")
	sendOne(t, addr)
	_, body := httpDo(t, "GET", "http://"+adminAddr+"/metrics")
	for _, want := range []string{
		`mailward_build_info{goversion="go`,
		`mailward_ratelimit_total{outcome="allowed"} 1`,
		`mailward_rule_errors_total{rule="fragile"} 1`,
		`mailward_cache_breaker_state{state="closed"} 1`,
		`mailward_cache_breaker_state{state="open"} 0`,
		`mailward_dns_queries_total{outcome="ok",type="PTR"} 1`,
		`mailward_dns_query_duration_seconds_count{type="PTR"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
