package reports

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/reports/deliver"
)

// observe is an observation of domain from ip.
func observe(t *testing.T, domain, ip, result string) Observation {
	t.Helper()
	o, ok := Observe(finished(t, testRecord, result, policy.Accept, ip), true)
	if !ok {
		t.Fatal("not observed")
	}
	o.Policy.Domain = domain
	return o
}

// countRows sums a report's counts from its XML.
func countRows(t *testing.T, doc []byte) int {
	t.Helper()
	n := 0
	for _, part := range strings.Split(string(doc), "<count>")[1:] {
		var c int
		fmt.Sscanf(part, "%d", &c)
		n += c
	}
	return n
}

// TestLocalRestartLosesNothing: aggregates saved on Close are there
// after a restart in the middle of the period, and a reported period
// is not reported again after the next restart.
func TestLocalRestartLosesNothing(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "reports.json")
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	open := func() *Local {
		l, err := NewLocal(LocalConfig{Interval: 24 * time.Hour, Path: path})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	l := open()
	for _, ip := range []string{"192.0.2.1", "192.0.2.1", "192.0.2.2"} {
		if err := l.Add(ctx, at, observe(t, "example.com", ip, "pass")); err != nil {
			t.Fatal(err)
		}
	}
	l.Add(ctx, at, observe(t, "example.org", "192.0.2.9", "fail"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = open()
	l.Add(ctx, at.Add(time.Hour), observe(t, "example.com", "192.0.2.1", "fail"))
	var s sent
	r := &Reporter{Store: l, Meta: Meta{OrgName: "o", Email: "e@r.example", Submitter: "r.example"}, Send: &s}
	if n, err := r.Due(ctx, at.Add(24*time.Hour)); n != 2 || err != nil {
		t.Fatalf("%d reports (%v), want 2", n, err)
	}
	got := s.list()
	if got[0].PolicyDomain != "example.com" || countRows(t, got[0].XML) != 4 || countRows(t, got[1].XML) != 1 {
		t.Errorf("counts %d and %d, want 4 and 1:\n%s", countRows(t, got[0].XML), countRows(t, got[1].XML), got[0].XML)
	}
	validate(t, got[0].XML)
	// A crash now, without Close: Done saved already.
	l = open()
	defer l.Close()
	if ks, _ := l.Ended(ctx, at.Add(48*time.Hour)); len(ks) != 0 {
		t.Errorf("reported periods back after a restart: %v", ks)
	}
}

// TestLocalSnapshotPeriodic: the store saves on its own, so a crash
// loses at most one snapshot interval.
func TestLocalSnapshotPeriodic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reports.json")
	l, err := NewLocal(LocalConfig{Interval: 24 * time.Hour, Path: path, SnapshotEvery: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Add(context.Background(), time.Now(), observe(t, "example.com", "192.0.2.1", "pass"))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(path); err == nil && strings.Contains(string(b), "example.com") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no snapshot written")
		}
	}
	l2, err := NewLocal(LocalConfig{Interval: 24 * time.Hour, Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if ds, _ := l2.Current(context.Background()); len(ds) != 1 || ds[0].Rows == nil {
		t.Errorf("loaded %v", ds)
	}
}

// TestLocalBadFile: an unreadable store is moved aside; mailward starts.
func TestLocalBadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reports.json")
	os.WriteFile(path, []byte("{not json"), 0o600)
	l, err := NewLocal(LocalConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := os.Stat(path + ".bad"); err != nil {
		t.Errorf("not moved aside: %v", err)
	}
}

func newRedisStore(t *testing.T, addr string, cfg RedisConfig, more ...string) *Redis {
	t.Helper()
	cc := cache.DefaultConfig()
	cc.Type = cache.TypeRedis
	cc.Redis.Addrs = append([]string{addr}, more...)
	cc.Redis.Timeout = cache.Duration(2 * time.Second)
	rc, err := cache.NewRedis(cc, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	return NewRedis(rc, cfg)
}

// TestRedisFleetOneReport: two instances share one Redis; both record,
// both run their Reporter at the same moment, and each domain gets
// exactly one report holding every message of both.
func TestRedisFleetOneReport(t *testing.T) {
	srv := testenv.StartRedis(t)
	ctx := context.Background()
	at := time.Now().Add(-24 * time.Hour)
	domains := []string{"a.example", "b.example", "c.example", "d.example"}
	var stores [2]*Redis
	for i := range stores {
		stores[i] = newRedisStore(t, srv.Addr(), RedisConfig{Interval: 24 * time.Hour})
	}
	var wg sync.WaitGroup
	for i, st := range stores {
		rec := NewRecorder(st, true, 0)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 25 {
				for _, d := range domains {
					f := finished(t, testRecord, "pass", policy.Accept, fmt.Sprintf("192.0.2.%d", 1+(i+j)%3))
					f.Facts.Time = at
					f.Facts.DMARC.PolicyDomain = d
					rec.Record(f)
				}
			}
			rec.Close()
			if rec.Dropped() != 0 {
				t.Errorf("instance %d dropped %d", i, rec.Dropped())
			}
		}()
	}
	wg.Wait()
	s := &sent{wait: 50 * time.Millisecond}
	var reporters [2]*Reporter
	for i, st := range stores {
		reporters[i] = &Reporter{Store: st, Meta: Meta{OrgName: "o", Email: "e@r.example", Submitter: "r.example"}, Send: s}
	}
	for _, r := range reporters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.Due(ctx, time.Now()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got := map[string]int{}
	for _, r := range s.list() {
		got[r.PolicyDomain]++
		if n := countRows(t, r.XML); n != 50 {
			t.Errorf("%s: %d messages in the report, want 50", r.PolicyDomain, n)
		}
	}
	for _, d := range domains {
		if got[d] != 1 {
			t.Errorf("%s: %d reports, want exactly 1", d, got[d])
		}
	}
	if b := reporters[0].Built.Load() + reporters[1].Built.Load(); b != int64(len(domains)) {
		t.Errorf("built %d", b)
	}
	validate(t, s.list()[0].XML)
	// Again, and after a late message for the reported period: nothing.
	stores[0].Add(ctx, at, observe(t, "a.example", "192.0.2.1", "pass"))
	for _, r := range reporters {
		if n, err := r.Due(ctx, time.Now()); n != 0 || err != nil {
			t.Errorf("%d more reports (%v)", n, err)
		}
	}
	if n := len(s.list()); n != len(domains) {
		t.Errorf("%d reports sent in all", n)
	}
}

// TestRedisKeysExpire: every key the store writes has a TTL, and a
// lock held by another instance keeps a report from being built.
func TestRedisKeysExpire(t *testing.T) {
	srv := testenv.StartRedis(t)
	ctx := context.Background()
	st := newRedisStore(t, srv.Addr(), RedisConfig{Interval: time.Hour, MaxRows: 2, MaxDomains: 1})
	at := time.Now().Add(-2 * time.Hour)
	for i, ip := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
		if err := st.Add(ctx, at, observe(t, "example.com", ip, "pass")); (err == nil) != (i < 2) {
			t.Errorf("row %d: %v", i, err)
		}
	}
	if err := st.Add(ctx, at, observe(t, "other.example", "192.0.2.1", "pass")); err != ErrBound {
		t.Errorf("a second domain past max_domains 1: %v", err)
	}
	keys := strings.Fields(srv.MustDo("KEYS", "*"))
	if len(keys) == 0 {
		t.Fatal("no keys")
	}
	for _, k := range strings.Fields(srv.MustDo("KEYS", "*")) {
		if ttl := srv.MustDo("PTTL", k); strings.HasPrefix(ttl, "-") {
			t.Errorf("%s has no TTL (%s)", k, ttl)
		}
	}
	ks, err := st.Ended(ctx, time.Now())
	if err != nil || len(ks) != 1 {
		t.Fatalf("ended %v, %v", ks, err)
	}
	release, ok, err := st.Claim(ctx, ks[0])
	if !ok || err != nil {
		t.Fatalf("claim: %v %v", ok, err)
	}
	if _, ok, _ := st.Claim(ctx, ks[0]); ok {
		t.Error("two holders of one lock")
	}
	release()
	release2, ok, _ := st.Claim(ctx, ks[0])
	if !ok {
		t.Fatal("lock not released")
	}
	defer release2()
	if err := st.Done(ctx, ks[0]); err != nil {
		t.Fatal(err)
	}
	for _, k := range strings.Fields(srv.MustDo("KEYS", "*")) {
		if ttl := srv.MustDo("PTTL", k); strings.HasPrefix(ttl, "-") {
			t.Errorf("%s has no TTL (%s)", k, ttl)
		}
	}
}

// TestRedisCluster: the store's scripts and transactions work on Redis
// Cluster, every key in the one slot of their hash tag.
func TestRedisCluster(t *testing.T) {
	cl := testenv.StartRedisCluster(t, 3)
	addrs := cl.Addrs()
	st := newRedisStore(t, addrs[0], RedisConfig{Interval: 24 * time.Hour}, addrs[1:]...)
	ctx := context.Background()
	at := time.Now().Add(-24 * time.Hour)
	for _, d := range []string{"a.example", "b.example"} {
		if err := st.Add(ctx, at, observe(t, d, "192.0.2.1", "pass")); err != nil {
			t.Fatal(err)
		}
	}
	var s sent
	r := &Reporter{Store: st, Meta: Meta{OrgName: "o", Email: "e@r.example", Submitter: "r.example"}, Send: &s}
	if n, err := r.Due(ctx, time.Now()); n != 2 || err != nil {
		t.Fatalf("%d reports on a cluster: %v", n, err)
	}
	if n, _ := r.Due(ctx, time.Now()); n != 0 {
		t.Errorf("%d reports again", n)
	}
}

// TestRedisDown: with Redis gone, adding fails fast and is counted, and
// the reporter says the store could not be read; nothing blocks.
func TestRedisDown(t *testing.T) {
	srv := testenv.StartRedis(t)
	st := newRedisStore(t, srv.Addr(), RedisConfig{Interval: 24 * time.Hour})
	ctx := context.Background()
	srv.Stop()
	rec := NewRecorder(st, true, 0)
	f := finished(t, testRecord, "pass", policy.Accept, "192.0.2.1")
	rec.Record(f)
	rec.Close()
	if rec.Dropped() != 1 {
		t.Errorf("dropped %d, want 1", rec.Dropped())
	}
	r := &Reporter{Store: st, Send: &sent{}}
	if _, err := r.Due(ctx, time.Now()); err == nil {
		t.Error("no error from a store that is down")
	}
}

// TestRunSendsEndedPeriods: Run reports a period once it ended, and
// stops with its context.
func TestRunSendsEndedPeriods(t *testing.T) {
	l, err := NewLocal(LocalConfig{Interval: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	l.Add(context.Background(), time.Now().Add(-24*time.Hour), observe(t, "example.com", "192.0.2.1", "pass"))
	s := &sent{}
	r := &Reporter{Store: l, Meta: Meta{OrgName: "o", Email: "e@r.example", Submitter: "r.example"}, Send: s}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx, 10*time.Millisecond, 0); close(done) }()
	for deadline := time.Now().Add(10 * time.Second); r.Built.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Run sent nothing")
		}
	}
	cancel()
	<-done
	if n := len(s.list()); n != 1 {
		t.Errorf("%d reports", n)
	}
}

// failing is a Sender that fails as a relay that is down does: every
// destination temporarily, none delivered.
type failing struct{ calls int }

func (f *failing) Send(_ context.Context, r deliver.Report) error {
	f.calls++
	return &deliver.SendError{ReportID: r.ReportID, Failed: []deliver.Destination{{URI: "mailto:d@example.com", Address: "d@example.com", Temporary: true, Reason: "451 try later"}}}
}

// TestUndoWhenNobodyGotIt: a report no destination got for a temporary
// reason is put back, across a restart of the file store and in Redis,
// and sent whole at the next try; a report some destination got is not.
func TestUndoWhenNobodyGotIt(t *testing.T) {
	ctx := context.Background()
	at := time.Now().Add(-24 * time.Hour)
	path := filepath.Join(t.TempDir(), "reports.json")
	local, err := NewLocal(LocalConfig{Interval: 24 * time.Hour, Path: path})
	if err != nil {
		t.Fatal(err)
	}
	srv := testenv.StartRedis(t)
	for name, st := range map[string]Store{"local": local, "redis": newRedisStore(t, srv.Addr(), RedisConfig{Interval: 24 * time.Hour})} {
		for _, ip := range []string{"192.0.2.1", "192.0.2.1", "192.0.2.2"} {
			st.Add(ctx, at, observe(t, "example.com", ip, "pass"))
		}
		local.Save() // the periodic snapshot
		meta := Meta{OrgName: "o", Email: "e@r.example", Submitter: "r.example"}
		f := &failing{}
		r := &Reporter{Store: st, Meta: meta, Send: f}
		r.Due(ctx, time.Now())
		if f.calls != 1 || r.Deferred.Load() != 1 || r.Failed.Load() != 0 {
			t.Fatalf("%s: %d sends, %d deferred, %d failed", name, f.calls, r.Deferred.Load(), r.Failed.Load())
		}
		if name == "local" {
			// A crash: no Close, the done log and its undo line stand.
			st, err = NewLocal(LocalConfig{Interval: 24 * time.Hour, Path: path})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
		}
		s := &sent{}
		r = &Reporter{Store: st, Meta: meta, Send: s}
		if n, err := r.Due(ctx, time.Now()); n != 1 || err != nil {
			t.Fatalf("%s: %d reports at the next try (%v)", name, n, err)
		}
		if got := s.list(); countRows(t, got[0].XML) != 3 {
			t.Errorf("%s: %d messages in the report sent later, want 3", name, countRows(t, got[0].XML))
		}
		if n, _ := r.Due(ctx, time.Now()); n != 0 {
			t.Errorf("%s: sent again", name)
		}
	}
}

// TestLocalGivesUp: a report not sent within a week of its period is
// dropped, as Redis lets its keys expire.
func TestLocalGivesUp(t *testing.T) {
	l, _ := NewLocal(LocalConfig{Interval: 24 * time.Hour})
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	l.Add(context.Background(), at, observe(t, "example.com", "192.0.2.1", "pass"))
	if ks, _ := l.Ended(context.Background(), at.Add(7*24*time.Hour)); len(ks) != 1 {
		t.Errorf("given up early: %v", ks)
	}
	if ks, _ := l.Ended(context.Background(), at.Add(9*24*time.Hour)); len(ks) != 0 {
		t.Errorf("kept past a week: %v", ks)
	}
	if ds, _ := l.Current(context.Background()); len(ds) != 0 {
		t.Errorf("still held: %v", ds)
	}
}

// TestRecordAfterClose: a transaction that ends after Close, as in a
// shutdown that timed out, is dropped, not a panic.
func TestRecordAfterClose(t *testing.T) {
	l, _ := NewLocal(LocalConfig{Interval: 24 * time.Hour})
	rec := NewRecorder(l, true, 0)
	rec.Record(finished(t, testRecord, "pass", policy.Accept, "192.0.2.1"))
	rec.Close()
	rec.Record(finished(t, testRecord, "pass", policy.Accept, "192.0.2.1"))
	rec.Close()
	if ds, _ := l.Current(context.Background()); len(ds) != 1 || rec.Dropped() != 1 {
		t.Errorf("%d aggregates, %d dropped; want the first recorded, the second dropped", len(ds), rec.Dropped())
	}
}

// TestLocalDoneFailureKeepsReport: a report whose done mark cannot be
// written (a full or failing disk) is not done: it is still in the store,
// to be tried again, and in the next snapshot.
func TestLocalDoneFailureKeepsReport(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "reports.json")
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	l, err := NewLocal(LocalConfig{Interval: 24 * time.Hour, Path: path, SnapshotEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Add(ctx, at, observe(t, "example.com", "192.0.2.1", "pass")); err != nil {
		t.Fatal(err)
	}
	// The done log cannot be opened for writing.
	if err := os.Mkdir(path+".done", 0o700); err != nil {
		t.Fatal(err)
	}
	var s sent
	r := &Reporter{Store: l, Meta: Meta{OrgName: "o", Email: "e@r.example", Submitter: "r.example"}, Send: &s}
	if n, err := r.Due(ctx, at.Add(24*time.Hour)); n != 0 || err == nil {
		t.Fatalf("%d reports (%v), want none and an error", n, err)
	}
	if ks, _ := l.Ended(ctx, at.Add(24*time.Hour)); len(ks) != 1 {
		t.Fatalf("the report not done is gone from the store: %v", ks)
	}
	os.Remove(path + ".done")
	if n, err := r.Due(ctx, at.Add(24*time.Hour)); n != 1 || err != nil {
		t.Fatalf("%d reports (%v) once the disk is back, want 1", n, err)
	}
	if got := s.list(); len(got) != 1 || countRows(t, got[0].XML) != 1 {
		t.Fatalf("sent %d reports, want 1 with 1 message", len(got))
	}
}

// TestRedisDoneFailureKeepsReport: when Redis refuses part of marking a
// report done, none of it is done, and the next Due sends the report
// rather than finding it marked and forgetting it unsent.
func TestRedisDoneFailureKeepsReport(t *testing.T) {
	srv := testenv.StartRedis(t)
	st := newRedisStore(t, srv.Addr(), RedisConfig{Interval: 24 * time.Hour})
	ctx := context.Background()
	at := time.Now().UTC().Add(-72 * time.Hour)
	if err := st.Add(ctx, at, observe(t, "example.com", "192.0.2.1", "pass")); err != nil {
		t.Fatal(err)
	}
	var s sent
	r := &Reporter{Store: st, Meta: Meta{OrgName: "o", Email: "e@r.example", Submitter: "r.example"}, Send: &s}
	// Deleting the aggregate fails after the done mark could be set.
	srv.MustDo("ACL", "SETUSER", "default", "-srem")
	if n, err := r.Due(ctx, time.Now()); n != 0 || err == nil {
		t.Fatalf("%d reports (%v), want none and an error", n, err)
	}
	srv.MustDo("ACL", "SETUSER", "default", "+srem")
	if n, err := r.Due(ctx, time.Now()); n != 1 || err != nil {
		t.Fatalf("%d reports (%v) once Redis is whole, want 1", n, err)
	}
	if got := s.list(); len(got) != 1 || countRows(t, got[0].XML) != 1 {
		t.Fatalf("sent %d reports, want 1 with 1 message", len(got))
	}
}
