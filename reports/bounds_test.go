package reports

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/testenv"
)

// TestRedisTotalBound: the rows of every period and domain together are
// bounded across a fleet sharing one Redis, as a flood of forged From
// domains would otherwise grow it without limit; a row refused is
// counted as dropped, rows reported make room again, and the count
// expires with the rows it counts.
func TestRedisTotalBound(t *testing.T) {
	srv := testenv.StartRedis(t)
	ctx := context.Background()
	var stores [2]*Redis
	for i := range stores {
		stores[i] = newRedisStore(t, srv.Addr(), RedisConfig{Interval: 24 * time.Hour, MaxTotalRows: 3})
	}
	a, b := stores[0], stores[1]
	at := time.Now().Add(-48 * time.Hour)
	for i, d := range []string{"a.example", "b.example", "c.example"} {
		if err := stores[i%2].Add(ctx, at, observe(t, d, "192.0.2.1", "pass")); err != nil {
			t.Fatalf("%s: %v", d, err)
		}
	}
	// In another period too: the bound is over every period.
	if err := b.Add(ctx, at.Add(24*time.Hour), observe(t, "d.example", "192.0.2.1", "pass")); err != ErrBound {
		t.Fatalf("a fourth row past a total of 3: %v, want ErrBound", err)
	}
	if err := b.Add(ctx, at, observe(t, "a.example", "192.0.2.2", "pass")); err != ErrBound {
		t.Fatalf("a new row of a domain held past a total of 3: %v, want ErrBound", err)
	}
	if n := b.Dropped(); n != 2 {
		t.Errorf("dropped %d, want 2", n)
	}
	// A row held is still counted.
	if err := b.Add(ctx, at, observe(t, "a.example", "192.0.2.1", "pass")); err != nil {
		t.Fatalf("a row held again: %v", err)
	}
	for _, k := range strings.Fields(srv.MustDo("KEYS", "*")) {
		if ttl := srv.MustDo("PTTL", k); strings.HasPrefix(ttl, "-") {
			t.Errorf("%s has no TTL (%s)", k, ttl)
		}
	}

	// Reporting them frees their rows.
	var s sent
	r := &Reporter{Store: a, Meta: Meta{OrgName: "o", Email: "e@r.example", Submitter: "r.example"}, Send: &s}
	if n, err := r.Due(ctx, time.Now()); n != 3 || err != nil {
		t.Fatalf("%d reports (%v), want 3", n, err)
	}
	if got := countRows(t, s.list()[0].XML); got != 2 {
		t.Errorf("a.example's report holds %d messages, want 2", got)
	}
	now := time.Now()
	for _, d := range []string{"d.example", "e.example", "f.example"} {
		if err := b.Add(ctx, now, observe(t, d, "192.0.2.1", "pass")); err != nil {
			t.Fatalf("%s after the reports made room: %v", d, err)
		}
	}
	if err := a.Add(ctx, now, observe(t, "g.example", "192.0.2.1", "pass")); err != ErrBound {
		t.Fatalf("g.example past a total of 3: %v, want ErrBound", err)
	}

	// Once the rows counted may all have expired, so has their count,
	// even if nobody reported them.
	a.now = func() time.Time { return now.Add(DefaultKeep + 2*24*time.Hour) }
	if err := a.Add(ctx, a.now(), observe(t, "g.example", "192.0.2.1", "pass")); err != nil {
		t.Fatalf("a row once the counted ones expired: %v", err)
	}
	keys := strings.Fields(srv.MustDo("KEYS", "*"+keyRows))
	if len(keys) != 1 {
		t.Fatalf("row count keys %v, want 1", keys)
	}
	if got := strings.Fields(srv.MustDo("HVALS", keys[0])); len(got) != 1 || got[0] != "1" {
		t.Errorf("row count %v, want only the new row's day, 1", got)
	}
	// Done takes the rows off the count, Undo puts them back.
	k := Key{Begin: PeriodStart(a.now(), 24*time.Hour), Domain: "g.example"}
	d, err := a.Load(ctx, k)
	if err != nil || d == nil {
		t.Fatalf("load: %v %v", d, err)
	}
	if err := a.Done(ctx, k); err != nil {
		t.Fatal(err)
	}
	if got := srv.MustDo("HVALS", keys[0]); got != "" {
		t.Errorf("row count %q after Done, want none", got)
	}
	if err := a.Undo(ctx, k, d); err != nil {
		t.Fatal(err)
	}
	if got := srv.MustDo("HVALS", keys[0]); got != "1" {
		t.Errorf("row count %q after Undo, want 1", got)
	}
}
