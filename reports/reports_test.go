package reports

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/dmarc"
	"github.com/mailward/mailward/checks/spf"
	"github.com/mailward/mailward/policy"
)

func finished(t testing.TB, testRecord, result string, v policy.Action, ip string) *policy.Finished {
	t.Helper()
	rec, err := dmarc.ParseRecord(testRecord)
	if err != nil {
		t.Fatal(err)
	}
	f := &policy.Finished{Verdict: policy.Verdict{Action: v}}
	f.Facts.IP = netip.MustParseAddr(ip)
	f.Facts.Time = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	f.Facts.MailFrom = "bounce@mail.example.com"
	f.Facts.SPF = &spf.Result{Result: "pass", Domain: "mail.example.com", Identity: "mailfrom"}
	f.Facts.DKIM = []dkim.Result{{Domain: "example.com", Selector: "s1", Result: "pass"}, {Domain: "esp.example", Selector: "x", Result: "fail"}}
	f.Facts.DMARC = &dmarc.Result{Result: result, Policy: "reject", Domain: "example.com", PolicyDomain: "example.com",
		DKIMAligned: result == "pass", Record: rec}
	if rec.Testing {
		f.Facts.DMARC.Policy = "quarantine"
		f.Facts.DMARC.Testing = true
	}
	return f
}

const testRecord = "v=DMARC1; p=reject; np=quarantine; rua=mailto:d@example.com!10m,mailto:agg@reports.example"

func TestObserveDisposition(t *testing.T) {
	for _, c := range []struct {
		name, record, result string
		action               policy.Action
		enforce              bool
		disp, reason         string
	}{
		{"pass", testRecord, "pass", policy.Accept, true, "pass", ""},
		{"enforced", testRecord, "fail", policy.Reject, true, "reject", ""},
		{"not enforced", testRecord, "fail", policy.Accept, false, "none", "local_policy"},
		{"rule accepted", testRecord, "fail", policy.Accept, true, "none", "other"},
		{"testing", "v=DMARC1; p=reject; t=y; rua=mailto:d@example.com", "fail", policy.Quarantine, true, "quarantine", "policy_test_mode"},
	} {
		o, ok := Observe(finished(t, c.record, c.result, c.action, "192.0.2.1"), c.enforce)
		if !ok {
			t.Fatalf("%s: not observed", c.name)
		}
		if o.Row.Disposition != c.disp {
			t.Errorf("%s: disposition %s, want %s", c.name, o.Row.Disposition, c.disp)
		}
		got := ""
		if len(o.Row.Reasons) > 0 {
			got = o.Row.Reasons[0].Type
		}
		if got != c.reason {
			t.Errorf("%s: reason %q, want %q", c.name, got, c.reason)
		}
	}
	o, _ := Observe(finished(t, testRecord, "pass", policy.Accept, "192.0.2.1"), true)
	if strings.Join(o.Policy.RUA, ",") != "mailto:d@example.com!10m,mailto:agg@reports.example" || o.Policy.NP != "quarantine" || o.Policy.Discovery != "treewalk" {
		t.Errorf("policy %+v", o.Policy)
	}
	if len(o.Row.DKIM) != 2 || o.Row.SPF == nil || o.Row.EnvelopeFrom != "mail.example.com" {
		t.Errorf("row %+v", o.Row)
	}
	if _, ok := Observe(finished(t, testRecord, "fail", policy.Tempfail, "192.0.2.1"), true); ok {
		t.Error("a deferred message was counted; its retry will be")
	}
	if _, ok := Observe(finished(t, "v=DMARC1; p=reject", "fail", policy.Reject, "192.0.2.1"), true); ok {
		t.Error("a testRecord without rua= was recorded")
	}
}

// TestReportValidates builds a report from recorded transactions and
// validates it against the RFC 9990 schema with xmllint.
func TestReportValidates(t *testing.T) {
	agg := NewAggregates(24*time.Hour, 0, 0)
	rec := NewRecorder(&Local{agg: agg}, true, 0)
	for range 3 {
		rec.Record(finished(t, testRecord, "pass", policy.Accept, "192.0.2.1"))
	}
	rec.Record(finished(t, testRecord, "fail", policy.Reject, "2001:db8::1"))
	null := finished(t, "v=DMARC1; p=quarantine; t=y; rua=mailto:d@example.com", "fail", policy.Accept, "198.51.100.7")
	null.Facts.MailFrom, null.Facts.SPF = "", nil
	rec.Record(null)
	rec.Close()
	if n := rec.Dropped(); n != 0 {
		t.Fatalf("%d dropped", n)
	}
	now := time.Date(2026, 12, 4, 0, 5, 0, 0, time.UTC)
	ds := agg.Ended(now, true)
	if len(ds) != 1 {
		t.Fatalf("%d reports, want one for example.com", len(ds))
	}
	d := ds[0]
	if len(d.Rows) != 3 || d.Passed != 3 {
		t.Fatalf("rows %v, passed %d", d.Rows, d.Passed)
	}
	xmlDoc, err := Build(Meta{OrgName: "Receiver Org", Email: "dmarc@receiver.example", Submitter: "receiver.example", Generator: "mailward test"}, d, agg.End(d))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0">`, "<begin>1796256000</begin>", "<end>1796342399</end>",
		"<count>3</count>", "<np>quarantine</np>", "<discovery_method>treewalk</discovery_method>", "<testing>y</testing>", "<envelope_from></envelope_from>",
		"<selector>s1</selector>", "<scope>mfrom</scope>", "<generator>mailward test</generator>"} {
		if !strings.Contains(string(xmlDoc), want) {
			t.Errorf("report lacks %s", want)
		}
	}
	validate(t, xmlDoc)
	if len(agg.Ended(now, true)) != 0 {
		t.Error("a period was reported twice")
	}
}

func validate(t *testing.T, doc []byte) {
	t.Helper()
	xmllint, err := exec.LookPath("xmllint")
	if err != nil {
		if os.Getenv("MAILWARD_E2E") != "" {
			t.Fatal("xmllint (libxml2-utils) is not installed")
		}
		t.Skip("xmllint (libxml2-utils) is not installed: the report was not validated against the schema")
	}
	file := filepath.Join(t.TempDir(), "report.xml")
	if err := os.WriteFile(file, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(xmllint, "--noout", "--schema", "testdata/dmarc-2.0.xsd", file).CombinedOutput()
	if err != nil {
		t.Fatalf("xmllint: %v\n%s\n%s", err, out, doc)
	}
}

// The rows held over every period and domain have one bound, and rows a
// report took are room again.
func TestAggregatesTotalBound(t *testing.T) {
	agg := NewAggregates(time.Hour, 100, 100)
	agg.maxTotal = 3
	at := time.Date(2026, 12, 3, 10, 30, 0, 0, time.UTC)
	add := func(at time.Time, domain, ip string) bool {
		o, _ := Observe(finished(t, testRecord, "pass", policy.Accept, ip), true)
		o.Policy.Domain = domain
		return agg.Add(at, o)
	}
	if !add(at, "a.example", "192.0.2.1") || !add(at, "b.example", "192.0.2.1") || !add(at.Add(time.Hour), "a.example", "192.0.2.2") {
		t.Fatal("rows within the bound refused")
	}
	if add(at.Add(time.Hour), "c.example", "192.0.2.3") {
		t.Error("a fourth row passed the total bound of 3")
	}
	if !add(at, "a.example", "192.0.2.1") {
		t.Error("a row held already was refused a count")
	}
	if n := len(agg.Ended(at.Add(30*time.Minute), true)); n != 2 {
		t.Fatalf("%d aggregates ended, want 2", n)
	}
	if !add(at.Add(time.Hour), "c.example", "192.0.2.3") {
		t.Error("the rows a report took were not room again")
	}
}

func TestAggregatesBounded(t *testing.T) {
	agg := NewAggregates(time.Hour, 2, 1)
	at := time.Date(2026, 12, 3, 10, 30, 0, 0, time.UTC)
	for i, ip := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
		o, _ := Observe(finished(t, testRecord, "pass", policy.Accept, ip), true)
		if ok := agg.Add(at, o); ok != (i < 2) {
			t.Errorf("row %d: added %v", i, ok)
		}
	}
	o, _ := Observe(finished(t, testRecord, "pass", policy.Accept, "192.0.2.1"), true)
	o.Policy.Domain = "other.example"
	if agg.Add(at, o) {
		t.Error("a second domain passed max_domains 1")
	}
	if agg.Dropped() != 2 {
		t.Errorf("dropped %d, want 2", agg.Dropped())
	}
	if got := PeriodStart(at, time.Hour); !got.Equal(time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("period start %s", got)
	}
	if len(agg.Ended(at, false)) != 0 || len(agg.Ended(at.Add(30*time.Minute), false)) != 1 {
		t.Error("the hour's period ended at the wrong time")
	}
}
