package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/testenv"
)

// TestReportsConfig: the reports: section's defaults, and its errors
// name file, line, column and key.
func TestReportsConfig(t *testing.T) {
	cfg, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Reports.Enabled || cfg.Reports.Period() != 24*time.Hour || cfg.Reports.Retries != 5 || cfg.Reports.StartTLS != "opportunistic" {
		t.Errorf("defaults %+v", cfg.Reports)
	}
	dir := t.TempDir()
	full := "reports:\n  enabled: true\n  org_name: Example\n  email: dmarc@example.net\n  relay: 127.0.0.1:25\n  from: reports@example.net\n"
	for name, tc := range map[string]struct{ yaml, want string }{
		"interval":     {"reports:\n  interval: 7h\n", `bad.yaml:3:3: reports.interval: 7h0m0s: want 24h or a part of a day`},
		"suppress":     {"reports:\n  suppress: [example.com, \"bad domain\"]\n", `bad.yaml:3:27: reports.suppress[1]: "bad domain": want a domain name`},
		"relay":        {"reports:\n  enabled: true\n  org_name: E\n  email: d@example.net\n  from: r@example.net\n", `reports.relay: required to send reports`},
		"org_name":     {"reports:\n  enabled: true\n  email: d@example.net\n  relay: 127.0.0.1:25\n  from: r@example.net\n", `reports.org_name: required`},
		"email":        {strings.Replace(full, "dmarc@example.net", "Dmarc <d@example.net>", 1), `bad.yaml:5:3: reports.email: "Dmarc <d@example.net>": want a bare address`},
		"starttls":     {full + "  starttls: maybe\n", `bad.yaml:8:3: reports.starttls: "maybe": want opportunistic, require or off`},
		"unknown key":  {full + "  max_per_hours: 3\n", `bad.yaml:8:3: unknown key "reports.max_per_hours" (did you mean "max_per_hour"?)`},
		"bad duration": {full + "  retry_backoff: soon\n", `bad.yaml:8:18: reports.retry_backoff: "soon"`},
	} {
		p := writeFile(t, dir, "bad.yaml", "hostname: mx.example\n"+tc.yaml)
		_, err := loadConfig(p)
		if want := strings.Replace(tc.want, "bad.yaml", p, 1); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v\nwant it to contain %q", name, err, tc.want)
		}
	}
	p := writeFile(t, dir, "ok.yaml", "hostname: mx.example\n"+full+"  interval: 6h\n  store: reports.json\n")
	cfg, err = loadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if rc := cfg.reportsConfig(); rc.Store != dir+"/reports.json" || rc.Period() != 6*time.Hour {
		t.Errorf("resolved %+v", rc)
	}
}

// reportsZone publishes a DMARC record asking for aggregate reports at
// the domain itself, so no external verification is needed.
const reportsZone = fixtureZone + `
_dmarc.rep.example. IN TXT "v=DMARC1; p=none; rua=mailto:dmarc@rep.example"
`

// reportsConfig is a milter on addr with reports on, into store, sent
// to relay without TLS.
func reportsTestConfig(t *testing.T, addr, store, relay, extra string) string {
	dns := testenv.StartDNS(t, reportsZone)
	return testenv.Config(t, testenv.BaseConfig(dns.Addr()), "milter:\n  listen: inet:"+addr+"\n",
		fmt.Sprintf("reports:\n  enabled: true\n  store: %s\n  org_name: Receiver Org\n  email: dmarc@mw.test.example\n  relay: %s\n  from: reports@mw.test.example\n  starttls: off\n  retry_backoff: 1s\n", store, relay), extra)
}

// TestServeRecordsReports: serve feeds both the journal and the report
// aggregates, exposes the report metrics, and SIGTERM saves the store.
func TestServeRecordsReports(t *testing.T) {
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	store := filepath.Join(dir, "reports.json")
	cfg := writeFile(t, dir, "mailward.yaml", reportsTestConfig(t, addr, store, "127.0.0.1:9", "admin:\n  listen: "+adminAddr+"\njournal:\n  path: journal.jsonl\n"))
	p := startProc(t, cfg, addr)
	for i := range 3 {
		if o := send(addr, message{n: i, from: "a@rep.example", subject: "hi"}); o.err != nil || o.code != 250 {
			t.Fatalf("message %d: %+v", i, o)
		}
	}
	_, metrics := httpDo(t, "GET", "http://"+adminAddr+"/metrics")
	for _, want := range []string{"mailward_dmarc_reports_built_total 0", "mailward_dmarc_reports_suppressed_total 0", "mailward_dmarc_report_messages_dropped_total 0", "mailward_dmarc_reports_deferred_total 0",
		"mailward_dmarc_reports_sent_total 0", "mailward_dmarc_reports_failed_total 0"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(t, 30*time.Second); err != nil {
		t.Fatalf("mailward exited with %v", err)
	}
	b, err := os.ReadFile(store)
	if err != nil || !strings.Contains(string(b), `"domain":"rep.example"`) || !strings.Contains(string(b), `:3}`) {
		t.Fatalf("store after SIGTERM: %v\n%s", err, b)
	}
	code, out, errs := runCmd("dmarc", "report", "--preview", "--config", cfg)
	if code != 0 || !strings.Contains(out, "<count>3</count>") || !strings.Contains(out, "<source_ip>192.0.2.10</source_ip>") || !strings.Contains(out, "# to dmarc@rep.example") {
		t.Errorf("preview after serve: exit %d\n%s\n%s", code, out, errs)
	}
	// What live traffic made is valid RFC 9990 XML.
	if i, j := strings.Index(out, "<?xml"), strings.Index(out, "</feedback>"); i >= 0 && j > i {
		validateReport(t, []byte(out[i:j+len("</feedback>")]))
	} else {
		t.Errorf("no XML in the preview:\n%s", out)
	}
	if j, err := os.ReadFile(filepath.Join(dir, "journal.jsonl")); err != nil || strings.Count(string(j), "\n") != 3 {
		t.Errorf("journal: %v\n%s", err, j)
	}
}

// validateReport checks doc against the RFC 9990 schema with xmllint.
func validateReport(t *testing.T, doc []byte) {
	t.Helper()
	xmllint, err := exec.LookPath("xmllint")
	if err != nil {
		if testenv.E2E() {
			t.Fatal("xmllint (libxml2-utils) is not installed")
		}
		t.Skip("xmllint (libxml2-utils) is not installed: the report was not validated")
	}
	file := filepath.Join(t.TempDir(), "report.xml")
	if err := os.WriteFile(file, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	schema := filepath.Join("..", "..", "reports", "testdata", "dmarc-2.0.xsd")
	if out, err := exec.Command(xmllint, "--noout", "--schema", schema, file).CombinedOutput(); err != nil {
		t.Fatalf("xmllint: %v\n%s\n%s", err, out, doc)
	}
}
