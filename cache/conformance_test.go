package cache

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is the injectable clock of the memory cache and the breaker.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// conformance checks what every Cache must do alike, without waiting for
// time to pass. Keys are prefixed by name so runs on one server do not meet.
func conformance(t *testing.T, c Cache, name string) {
	ctx := context.Background()
	k := func(s string) string { return name + ":" + s }
	before := c.Stats()

	if v, ok, err := c.Get(ctx, k("missing")); err != nil || ok || v != nil {
		t.Fatalf("Get missing = %q, %v, %v", v, ok, err)
	}
	val := []byte("a\x00b\xffc")
	if err := c.Set(ctx, k("bin"), val, time.Hour); err != nil {
		t.Fatalf("Set: %v", err)
	}
	val[0] = 'X' // the cache must have copied it
	if v, ok, err := c.Get(ctx, k("bin")); err != nil || !ok || !bytes.Equal(v, []byte("a\x00b\xffc")) {
		t.Fatalf("Get bin = %q, %v, %v", v, ok, err)
	}
	if err := c.Set(ctx, k("empty"), nil, 0); err != nil {
		t.Fatalf("Set empty: %v", err)
	}
	if v, ok, err := c.Get(ctx, k("empty")); err != nil || !ok || len(v) != 0 {
		t.Fatalf("Get empty = %q, %v, %v", v, ok, err)
	}
	if err := c.Set(ctx, k("bin"), []byte("second"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := c.Get(ctx, k("bin")); string(v) != "second" {
		t.Fatalf("overwritten value = %q", v)
	}
	if err := c.Delete(ctx, k("bin")); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := c.Delete(ctx, k("bin")); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	if _, ok, _ := c.Get(ctx, k("bin")); ok {
		t.Fatal("Get after Delete found the value")
	}
	st := c.Stats()
	if hits, misses := st.Hits-before.Hits, st.Misses-before.Misses; hits != 3 || misses != 2 {
		t.Fatalf("hits %d misses %d, want 3 and 2", hits, misses)
	}

	// Counters.
	for i, tc := range []struct{ delta, want int64 }{{1, 1}, {5, 6}, {-2, 4}} {
		if n, err := c.Incr(ctx, k("ctr"), tc.delta, time.Hour); err != nil || n != tc.want {
			t.Fatalf("Incr #%d = %d, %v; want %d", i, n, err, tc.want)
		}
	}
	if v, _, _ := c.Get(ctx, k("ctr")); string(v) != "4" {
		t.Fatalf("counter reads %q, want 4", v)
	}
	c.Set(ctx, k("text"), []byte("abc"), time.Hour)
	if _, err := c.Incr(ctx, k("text"), 1, 0); err == nil || errors.Is(err, ErrUnavailable) {
		t.Fatalf("Incr of text: %v, want a data error", err)
	}

	// Keys.
	if _, _, err := c.Get(ctx, ""); err == nil {
		t.Fatal("empty key accepted")
	}
	long1 := k(strings.Repeat("x", 2000) + "1")
	long2 := k(strings.Repeat("x", 2000) + "2")
	c.Set(ctx, long1, []byte("1"), time.Hour)
	c.Set(ctx, long2, []byte("2"), time.Hour)
	if v, _, _ := c.Get(ctx, long1); string(v) != "1" {
		t.Fatalf("long key 1 reads %q", v)
	}
	if v, _, _ := c.Get(ctx, long2); string(v) != "2" {
		t.Fatalf("long key 2 reads %q", v)
	}
	if err := c.Set(ctx, k("neg"), nil, -time.Second); err == nil {
		t.Fatal("negative TTL accepted")
	}

	// Rate limits: 3 an hour, so one every 20 minutes after the burst.
	for i := range 3 {
		ok, rem, retry, err := c.Allow(ctx, k("rl"), 3, time.Hour)
		if err != nil || !ok || rem != 2-i || retry != 0 {
			t.Fatalf("Allow #%d = %v %d %s %v; want allowed, %d left", i, ok, rem, retry, err, 2-i)
		}
	}
	ok, rem, retry, err := c.Allow(ctx, k("rl"), 3, time.Hour)
	if err != nil || ok || rem != 0 || retry <= 19*time.Minute || retry > 20*time.Minute {
		t.Fatalf("4th Allow = %v %d %s %v; want refused, retry in just under 20m", ok, rem, retry, err)
	}
	if ok, _, _, _ := c.Allow(ctx, k("rl2"), 3, time.Hour); !ok {
		t.Fatal("another key shares the limit")
	}
	if _, _, _, err := c.Allow(ctx, k("rl3"), 0, time.Hour); err == nil {
		t.Fatal("limit 0 accepted")
	}
	if _, _, _, err := c.Allow(ctx, k("rl3"), 1, 0); err == nil {
		t.Fatal("window 0 accepted")
	}

	// Greylisting without waiting: new, then early.
	g, err := NewGreylist(c, GreylistConfig{Delay: Duration(time.Hour), RetryWindow: Duration(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("192.0.2.10")
	d, err := g.Check(ctx, ip, name+"@sender.example", "rcpt@example.org")
	if err != nil || d.Pass || d.Reason != ReasonNew || d.RetryAfter != time.Hour {
		t.Fatalf("first Check = %+v, %v", d, err)
	}
	// Same /24, address case differs: the same triplet.
	d, err = g.Check(ctx, netip.MustParseAddr("192.0.2.99"), strings.ToUpper(name)+"@SENDER.example", "<Rcpt@example.org>")
	if err != nil || d.Pass || d.Reason != ReasonEarly || d.RetryAfter <= 59*time.Minute || d.RetryAfter > time.Hour {
		t.Fatalf("second Check = %+v, %v; want early", d, err)
	}
	if d.RetrySeconds() < 3540 || d.RetrySeconds() > 3600 {
		t.Fatalf("RetrySeconds = %d", d.RetrySeconds())
	}
	d, _ = g.Check(ctx, netip.MustParseAddr("192.0.3.10"), name+"@sender.example", "rcpt@example.org")
	if d.Reason != ReasonNew {
		t.Fatalf("another /24 is %s, want new", d.Reason)
	}
	if _, err := g.Check(ctx, netip.Addr{}, "a@b", "c@d"); err == nil {
		t.Fatal("greylisting without a client address gave no error")
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func TestMemoryConformance(t *testing.T) {
	m := NewMemory(DefaultConfig(), Options{})
	defer m.Close()
	conformance(t, m, "t")
}
