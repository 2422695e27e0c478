package reports

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/reports/deliver"
)

// sent is a Sender that keeps what it is given; safe for concurrent
// use, and slow when told to be, so that competing reporters overlap.
type sent struct {
	mu   sync.Mutex
	reps []deliver.Report
	wait time.Duration
}

func (s *sent) Send(_ context.Context, r deliver.Report) error {
	time.Sleep(s.wait)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reps = append(s.reps, r)
	return nil
}

// list is what was sent, by policy domain.
func (s *sent) list() []deliver.Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.reps)
	slices.SortFunc(out, func(a, b deliver.Report) int { return strings.Compare(a.PolicyDomain, b.PolicyDomain) })
	return out
}

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
	got := s.list()
	if got[0].PolicyDomain != "example.com" || len(got[0].RUA) != 2 || got[0].End.Sub(got[0].Begin) != 24*time.Hour-time.Second {
		t.Errorf("report %+v", got[0])
	}
	if r.Built.Load() != 1 || r.Suppressed.Load() != 2 {
		t.Errorf("built %d, suppressed %d", r.Built.Load(), r.Suppressed.Load())
	}
	validate(t, got[0].XML)
	if n, _ := r.Due(context.Background(), at.Add(48*time.Hour)); n != 0 {
		t.Errorf("the period was reported again")
	}
}

// stuck is a Sender whose sends to one domain hang until released, as
// a destination in its retries does.
type stuck struct {
	sent
	domain  string
	release chan struct{}
}

func (s *stuck) Send(ctx context.Context, r deliver.Report) error {
	if r.PolicyDomain == s.domain {
		<-s.release
	}
	return s.sent.Send(ctx, r)
}

// TestReporterSlowDestination: a report stuck in retries does not hold
// up the others.
func TestReporterSlowDestination(t *testing.T) {
	store, _ := NewLocal(LocalConfig{Interval: 24 * time.Hour})
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	for _, d := range []string{"a.example", "b.example", "c.example"} {
		o, _ := Observe(finished(t, testRecord, "pass", policy.Accept, "192.0.2.1"), false)
		o.Policy.Domain = d
		store.Add(context.Background(), at, o)
	}
	s := &stuck{domain: "a.example", release: make(chan struct{})}
	r := &Reporter{Store: store, Meta: Meta{OrgName: "o", Email: "e@r.example", Submitter: "r.example"}, Send: s, Workers: 2}
	done := make(chan int)
	go func() { n, _ := r.Due(context.Background(), at.Add(24*time.Hour)); done <- n }()
	for deadline := time.Now().Add(10 * time.Second); len(s.list()) < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the other reports waited for a.example's: %d sent", len(s.list()))
		}
	}
	close(s.release)
	if n := <-done; n != 3 {
		t.Errorf("%d reports", n)
	}
}
