package reports

import (
	"context"
	"testing"
	"time"

	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/reports/deliver"
)

type sent []deliver.Report

func (s *sent) Send(_ context.Context, r deliver.Report) error { *s = append(*s, r); return nil }

// TestReporterSuppresses: the suppression list and require-pass keep
// reports from domains; the rest get one report per period.
func TestReporterSuppresses(t *testing.T) {
	store, err := NewLocal(LocalConfig{Interval: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	add := func(domain, result string) {
		o, _ := Observe(finished(t, testRecord, result, policy.Accept, "192.0.2.1"), false)
		o.Policy.Domain = domain
		store.Add(context.Background(), at, o)
	}
	add("example.com", "pass")
	add("sub.quiet.example", "pass")
	add("forged.example", "fail")
	var s sent
	r := &Reporter{Store: store, Meta: Meta{OrgName: "o", Email: "e@r.example", Submitter: "r.example"}, Send: &s,
		Suppress: []string{"quiet.example"}, RequirePass: true}
	if n, _ := r.Due(context.Background(), at); n != 0 {
		t.Fatalf("%d reports before the period ended", n)
	}
	if n, _ := r.Due(context.Background(), at.Add(24*time.Hour)); n != 1 {
		t.Fatalf("%d reports, want 1", n)
	}
	if s[0].PolicyDomain != "example.com" || len(s[0].RUA) != 2 || s[0].End.Sub(s[0].Begin) != 24*time.Hour-time.Second {
		t.Errorf("report %+v", s[0])
	}
	if r.Built.Load() != 1 || r.Suppressed.Load() != 2 {
		t.Errorf("built %d, suppressed %d", r.Built.Load(), r.Suppressed.Load())
	}
	validate(t, s[0].XML)
	if n, _ := r.Due(context.Background(), at.Add(48*time.Hour)); n != 0 {
		t.Errorf("the period was reported again")
	}
}
