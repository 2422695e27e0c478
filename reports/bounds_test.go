package reports

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
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

// TestLocalDoneLogBounded: the done log is read a line at a time, not
// whole: a line longer than any the store writes (here 32 MiB) is
// skipped without being held in memory, the lines after it still count,
// lines naming reports the snapshot does not hold are not kept, and the
// log is gone once the snapshot holds what it said.
func TestLocalDoneLogBounded(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "reports.json")
	at := time.Now().Add(-48 * time.Hour)
	cfg := LocalConfig{Interval: 24 * time.Hour, Path: path, SnapshotEvery: time.Hour}
	l, err := NewLocal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"a.example", "b.example", "c.example"} {
		if err := l.Add(ctx, at, observe(t, d, "192.0.2.1", "pass")); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	begin := PeriodStart(at, 24*time.Hour)
	line := func(d string, undo bool) string {
		b, _ := json.Marshal(doneLine{Begin: begin, Domain: d, Undo: undo})
		return string(b) + "\n"
	}
	var log strings.Builder
	log.WriteString(line("a.example", false))
	log.WriteString(strings.Repeat("x", 32<<20) + "\n")
	for i := range 1000 {
		log.WriteString(line(fmt.Sprintf("n%d.example", i), false))
	}
	log.WriteString(line("b.example", false))
	log.WriteString(line("c.example", false))
	log.WriteString(line("c.example", true))
	if err := os.WriteFile(path+".done", []byte(log.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	log.Reset()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	l, err = NewLocal(cfg)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if n := after.TotalAlloc - before.TotalAlloc; n > 8<<20 {
		t.Errorf("reading a 32 MiB done log allocated %d bytes", n)
	}
	var held []string
	ds, _ := l.Current(ctx)
	for _, d := range ds {
		held = append(held, d.Policy.Domain)
	}
	if !slices.Equal(held, []string{"c.example"}) {
		t.Errorf("held %v, want c.example only (a and b done, c undone)", held)
	}
	if _, err := os.Stat(path + ".done"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the done log is still there once the snapshot holds it: %v", err)
	}
}

// TestLocalDoneLogCap: a done log past its bound is read up to it, and
// the store starts.
func TestLocalDoneLogCap(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "reports.json")
	at := time.Now().Add(-48 * time.Hour)
	cfg := LocalConfig{Interval: 24 * time.Hour, Path: path, SnapshotEvery: time.Hour, maxDone: 4096}
	l, err := NewLocal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"a.example", "b.example"} {
		l.Add(ctx, at, observe(t, d, "192.0.2.1", "pass"))
	}
	l.Close()
	begin := PeriodStart(at, 24*time.Hour)
	var log []byte
	for _, d := range []string{"a.example", strings.Repeat("n", 5000) + ".example", "b.example"} {
		b, _ := json.Marshal(doneLine{Begin: begin, Domain: d})
		log = append(append(log, b...), '\n')
	}
	os.WriteFile(path+".done", log, 0o600)
	l, err = NewLocal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if ds, _ := l.Current(ctx); len(ds) != 1 || ds[0].Policy.Domain != "b.example" {
		t.Errorf("held %v, want b.example only: its line is past the bound", ds)
	}
}
