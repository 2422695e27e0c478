package main

import (
	"context"
	"fmt"
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

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/reports"
)

// seedStore writes a report store as serve would leave it: yesterday's
// period of rep.example and of ext.example (whose external rua
// destination does not confirm), and today's running one.
func seedStore(t *testing.T, path string) {
	t.Helper()
	l, err := reports.NewLocal(reports.LocalConfig{Interval: 24 * time.Hour, Path: path})
	if err != nil {
		t.Fatal(err)
	}
	obs := func(domain, rua, ip string) reports.Observation {
		return reports.Observation{
			Policy: reports.Policy{Domain: domain, P: "none", RUA: []string{rua}, Discovery: "treewalk"},
			Row: reports.Row{SourceIP: ip, Disposition: "none", HeaderFrom: domain, EnvelopeFrom: domain,
				SPF: &reports.SPFAuth{Domain: domain, Result: "none"}},
		}
	}
	ctx := context.Background()
	yesterday, now := time.Now().Add(-24*time.Hour), time.Now()
	for _, a := range []struct {
		at     time.Time
		domain string
		rua    string
		ip     string
	}{
		{yesterday, "rep.example", "mailto:dmarc@rep.example", "192.0.2.10"},
		{yesterday, "rep.example", "mailto:dmarc@rep.example", "192.0.2.10"},
		{yesterday, "rep.example", "mailto:dmarc@rep.example", "2001:db8::1"},
		{yesterday, "ext.example", "mailto:agg@elsewhere.example", "192.0.2.10"},
		{now, "rep.example", "mailto:dmarc@rep.example", "192.0.2.11"},
	} {
		if err := l.Add(ctx, a.at, obs(a.domain, a.rua, a.ip)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func runCmd(args ...string) (int, string, string) {
	var out, errb strings.Builder
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestDMARCReportPreviewAndSend: --preview shows every report held with
// its destinations and sends nothing; --send sends the due ones, once,
// and refuses while another process holds the store.
func TestDMARCReportPreviewAndSend(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "reports.json")
	seedStore(t, store)
	sink := testenv.StartSink(t)
	cfg := writeFile(t, dir, "mailward.yaml", reportsTestConfig(t, "127.0.0.1:1", store, sink.Addr(), ""))

	code, out, errs := runCmd("dmarc", "report", "--preview", "--config", cfg)
	if code != 0 {
		t.Fatalf("preview: exit %d: %s", code, errs)
	}
	for _, want := range []string{"# policy domain rep.example, period ", "(ended, due now)", "(running: the counts so far; reported when it ends)",
		"# to dmarc@rep.example (mailto:dmarc@rep.example)", "# not to mailto:agg@elsewhere.example: ", "<domain>ext.example</domain>",
		`<feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0">`, "<count>2</count>", "<org_name>Receiver Org</org_name>"} {
		if !strings.Contains(out, want) {
			t.Errorf("preview lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "<feedback") != 3 {
		t.Errorf("preview shows %d reports, want 3", strings.Count(out, "<feedback"))
	}
	code, out, _ = runCmd("dmarc", "report", "--preview", "--domain", "ext.example", "--config", cfg)
	if code != 0 || strings.Count(out, "<feedback") != 1 || !strings.Contains(out, "<domain>ext.example</domain>") {
		t.Errorf("preview --domain ext.example: exit %d\n%s", code, out)
	}
	if n := len(sink.Messages()); n != 0 {
		t.Fatalf("the preview sent %d messages", n)
	}

	// serve holds the store: --send leaves the reports to it.
	held, err := reports.NewLocal(reports.LocalConfig{Path: store, Exclusive: true, ReadOnly: false})
	if err != nil {
		t.Fatal(err)
	}
	code, _, errs = runCmd("dmarc", "report", "--send", "--config", cfg)
	if code != 1 || !strings.Contains(errs, "in use by another process") {
		t.Errorf("--send beside a holder: exit %d, %s", code, errs)
	}
	held.Close()
	seedStore(t, store+".fresh")
	os.Rename(store+".fresh", store)

	code, out, errs = runCmd("dmarc", "report", "--send", "--config", cfg)
	if code != 0 || !strings.Contains(out, "reports due: 2 built, 0 suppressed, 0 not delivered") || !strings.Contains(errs, "dmarc report destination refused") {
		t.Fatalf("--send: exit %d\n%s\n%s", code, out, errs)
	}
	msgs := sink.Messages()
	if len(msgs) != 1 || strings.Join(msgs[0].To, ",") != "dmarc@rep.example" || !strings.Contains(msgs[0].Header(), "Report Domain: rep.example") {
		t.Fatalf("sink got %d messages: %+v", len(msgs), msgs)
	}
	code, out, _ = runCmd("dmarc", "report", "--send", "--config", cfg)
	if code != 0 || !strings.Contains(out, "reports due: 0 built") || len(sink.Messages()) != 1 {
		t.Errorf("a second --send: exit %d, %s, %d messages", code, out, len(sink.Messages()))
	}
	// The running period is still held for its own report.
	if _, out, _ = runCmd("dmarc", "report", "--preview", "--config", cfg); strings.Count(out, "<feedback") != 1 || !strings.Contains(out, "(running") {
		t.Errorf("after --send, preview:\n%s", out)
	}
	if code, _, errs := runCmd("dmarc", "report", "--config", cfg); code != 2 || !strings.Contains(errs, "one of --preview and --send") {
		t.Errorf("neither flag: exit %d %s", code, errs)
	}
}

// TestDMARCReportThroughPostfix: a report sent with --send through a
// private Postfix arrives as a message whose gzip attachment, read by
// Python's email package, is XML that validates against the RFC 9990
// schema.
func TestDMARCReportThroughPostfix(t *testing.T) {
	if !testenv.E2E() {
		t.Skip("set MAILWARD_E2E=1 to send a report through a private Postfix")
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is needed to read the report independently")
	}
	dir := t.TempDir()
	store := filepath.Join(dir, "reports.json")
	seedStore(t, store)
	sink := testenv.StartSink(t)
	pf := testenv.StartPostfix(t, testenv.PostfixConfig{RelayTo: sink.Addr()})
	cfg := writeFile(t, dir, "mailward.yaml", reportsTestConfig(t, "127.0.0.1:1", store, pf.SMTPAddr(), ""))
	if code, out, errs := runCmd("dmarc", "report", "--send", "--domain", "rep.example", "--config", cfg); code != 0 {
		t.Fatalf("--send: exit %d\n%s\n%s", code, out, errs)
	}
	msgs, err := sink.Wait(1, 30*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, pf.Log())
	}
	if !strings.Contains(msgs[0].Header(), "Received: ") {
		t.Errorf("not relayed by Postfix:\n%s", msgs[0].Header())
	}
	eml := filepath.Join(dir, "report.eml")
	xmlFile := filepath.Join(dir, "report.xml")
	os.WriteFile(eml, msgs[0].Data, 0o644)
	const extract = `
import email, email.policy, gzip, sys
msg = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=email.policy.default)
assert msg.defects == [], msg.defects
parts = [p for p in msg.walk() if p.get_content_type() == "application/gzip"]
assert len(parts) == 1, len(parts)
open(sys.argv[2], "wb").write(gzip.decompress(parts[0].get_payload(decode=True)))
print(parts[0].get_filename())
`
	out, err := exec.Command(py, "-c", extract, eml, xmlFile).CombinedOutput()
	if err != nil {
		t.Fatalf("python3 could not read the report: %v\n%s\n%s", err, out, msgs[0].Data)
	}
	if name := strings.TrimSpace(string(out)); !strings.HasPrefix(name, "mw.test.example!rep.example!") || !strings.HasSuffix(name, ".xml.gz") {
		t.Errorf("file name %q", name)
	}
	b, _ := os.ReadFile(xmlFile)
	validateReport(t, b)
	if !strings.Contains(string(b), "<count>2</count>") || !strings.Contains(string(b), "<source_ip>2001:db8::1</source_ip>") {
		t.Errorf("report content:\n%s", b)
	}
}

// TestDMARCReportFleet: two instances share Redis. What serve records
// through its milter is in the shared aggregates at once (a preview from
// elsewhere shows it), and two --send run at the same moment against
// ended periods send exactly one report per domain.
func TestDMARCReportFleet(t *testing.T) {
	srv := testenv.StartRedis(t)
	dir := t.TempDir()
	sink := testenv.StartSink(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	redisCfg := "cache:\n  type: redis\n  redis:\n    addrs: [\"" + srv.Addr() + "\"]\n    timeout: 2s\nadmin:\n  listen: \"\"\n"
	cfg := writeFile(t, dir, "mailward.yaml", reportsTestConfig(t, addr, "", sink.Addr(), redisCfg))
	startProc(t, cfg, addr)
	for i := range 2 {
		if o := send(addr, message{n: i, from: "a@rep.example", subject: "hi"}); o.err != nil || o.code != 250 {
			t.Fatalf("message %d: %+v", i, o)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, out, _ := runCmd("dmarc", "report", "--preview", "--config", cfg)
		if strings.Contains(out, "<count>2</count>") && strings.Contains(out, "(running") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the preview does not show serve's two messages:\n%s", out)
		}
	}

	// Yesterday's periods, as the fleet left them.
	cc := cache.DefaultConfig()
	cc.Type, cc.Redis.Addrs = cache.TypeRedis, []string{srv.Addr()}
	rc, err := cache.NewRedis(cc, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	st := reports.NewRedis(rc, reports.RedisConfig{Interval: 24 * time.Hour})
	domains := []string{"rep.example", "a.rep.example", "b.rep.example"}
	for _, d := range domains {
		o := reports.Observation{Policy: reports.Policy{Domain: d, P: "none", RUA: []string{"mailto:dmarc@rep.example"}, Discovery: "treewalk"},
			Row: reports.Row{SourceIP: "192.0.2.10", Disposition: "none", HeaderFrom: d, EnvelopeFrom: d}}
		if err := st.Add(context.Background(), time.Now().Add(-24*time.Hour), o); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, out, errs := runCmd("dmarc", "report", "--send", "--config", cfg); code != 0 {
				t.Errorf("--send: exit %d\n%s\n%s", code, out, errs)
			}
		}()
	}
	wg.Wait()
	msgs := sink.Messages()
	got := map[string]int{}
	for _, m := range msgs {
		for _, d := range domains {
			if h := strings.NewReplacer("\r\n ", " ", "\r\n\t", " ").Replace(m.Header()); strings.Contains(h, "Report Domain: "+d+" ") {
				got[d]++
			}
		}
	}
	for _, d := range domains {
		if got[d] != 1 {
			t.Errorf("%s: %d reports, want exactly 1 (%d messages in all)", d, got[d], len(msgs))
		}
	}
	// The running period stays for its own report.
	if _, out, _ := runCmd("dmarc", "report", "--preview", "--config", cfg); !strings.Contains(out, "<count>2</count>") || strings.Count(out, "<feedback") != 1 {
		t.Errorf("after --send, preview:\n%s", out)
	}
}

// busyRelay answers every connection with 421, as a relay that is
// overloaded does; it counts the sessions.
func busyRelay(t *testing.T) (string, *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			fmt.Fprint(c, "421 4.3.2 busy, try later\r\n")
			c.Close()
		}
	}()
	return ln.Addr().String(), &n
}

// TestServeKeepsReportOnShutdown: serve sends a due report at start;
// the relay defers it; SIGTERM during the retries keeps it in the store,
// and a later --send through a working relay delivers it whole.
func TestServeKeepsReportOnShutdown(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "reports.json")
	seedStore(t, store)
	relay, tries := busyRelay(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg := writeFile(t, dir, "mailward.yaml", reportsTestConfig(t, addr, store, relay, "admin:\n  listen: \"\"\n"))
	p := startProc(t, cfg, addr)
	for deadline := time.Now().Add(20 * time.Second); tries.Load() < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("serve did not try the relay twice:\n%s", p.out.String())
		}
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(t, 30*time.Second); err != nil {
		t.Fatalf("mailward exited with %v", err)
	}
	if !strings.Contains(p.out.String(), "kept for a later try") {
		t.Errorf("no report kept:\n%s", p.out.String())
	}
	sink := testenv.StartSink(t)
	cfg = writeFile(t, dir, "mailward.yaml", reportsTestConfig(t, addr, store, sink.Addr(), ""))
	if code, out, errs := runCmd("dmarc", "report", "--send", "--domain", "rep.example", "--config", cfg); code != 0 {
		t.Fatalf("--send: exit %d\n%s\n%s", code, out, errs)
	}
	msgs := sink.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want the kept report", len(msgs))
	}
}
