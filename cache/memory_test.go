package cache

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newMemory(t testing.TB, cfg Config) (*Memory, *fakeClock) {
	clk := newFakeClock()
	m := NewMemory(cfg, Options{Now: clk.Now})
	t.Cleanup(func() { m.Close() })
	return m, clk
}

func TestMemoryTTL(t *testing.T) {
	ctx := context.Background()
	m, clk := newMemory(t, DefaultConfig())
	m.Set(ctx, "short", []byte("v"), 10*time.Second)
	m.Set(ctx, "forever", []byte("v"), 0)
	clk.Add(9999 * time.Millisecond)
	if _, ok, _ := m.Get(ctx, "short"); !ok {
		t.Fatal("entry gone before its TTL")
	}
	clk.Add(time.Millisecond)
	if _, ok, _ := m.Get(ctx, "short"); ok {
		t.Fatal("expired entry returned")
	}
	if st := m.Stats(); st.Expired != 1 || st.Entries != 1 {
		t.Fatalf("stats %+v: want 1 expired, 1 entry left", st)
	}
	clk.Add(1000 * time.Hour)
	if _, ok, _ := m.Get(ctx, "forever"); !ok {
		t.Fatal("entry without TTL expired")
	}
	// A huge TTL saturates instead of wrapping into the past.
	m.Set(ctx, "huge", []byte("v"), time.Duration(math.MaxInt64))
	if _, ok, _ := m.Get(ctx, "huge"); !ok {
		t.Fatal("entry with a huge TTL is gone")
	}
}

func TestMemoryIncrTTL(t *testing.T) {
	ctx := context.Background()
	m, clk := newMemory(t, DefaultConfig())
	if n, _ := m.Incr(ctx, "c", 1, 10*time.Second); n != 1 {
		t.Fatalf("first Incr = %d", n)
	}
	clk.Add(6 * time.Second)
	if n, _ := m.Incr(ctx, "c", 1, 10*time.Second); n != 2 {
		t.Fatalf("second Incr = %d", n)
	}
	clk.Add(5 * time.Second) // 11s after creation: the window is over
	if n, _ := m.Incr(ctx, "c", 1, 10*time.Second); n != 1 {
		t.Fatalf("Incr after the TTL = %d, want a new counter", n)
	}
	m.Set(ctx, "max", []byte(strconv.FormatInt(math.MaxInt64, 10)), 0)
	if _, err := m.Incr(ctx, "max", 1, 0); err == nil {
		t.Fatal("overflow accepted")
	}
	if v, _, _ := m.Get(ctx, "max"); string(v) != strconv.FormatInt(math.MaxInt64, 10) {
		t.Fatalf("failed Incr changed the value to %q", v)
	}
}

func TestMemoryEntryBoundLRU(t *testing.T) {
	ctx := context.Background()
	m, _ := newMemory(t, Config{MaxEntries: 10})
	if len(m.shards) != 1 {
		t.Fatalf("a 10-entry cache has %d shards", len(m.shards))
	}
	for i := range 10 {
		m.Set(ctx, fmt.Sprint("k", i), []byte("v"), 0)
	}
	m.Get(ctx, "k0") // now the most recently used
	for i := 10; i < 15; i++ {
		m.Set(ctx, fmt.Sprint("k", i), []byte("v"), 0)
	}
	st := m.Stats()
	if st.Entries != 10 || st.Evictions != 5 {
		t.Fatalf("stats %+v: want 10 entries, 5 evictions", st)
	}
	for i := range 15 {
		_, ok, _ := m.Get(ctx, fmt.Sprint("k", i))
		want := i == 0 || i >= 6 // k1..k5 were least recently used
		if ok != want {
			t.Errorf("k%d present = %v, want %v", i, ok, want)
		}
	}
}

func TestMemoryEntryBoundSharded(t *testing.T) {
	ctx := context.Background()
	m, _ := newMemory(t, Config{MaxEntries: 10_000})
	if len(m.shards) < 2 {
		t.Fatalf("a 10000-entry cache has %d shard", len(m.shards))
	}
	sum := 0
	for i := range m.shards {
		sum += m.shards[i].maxEntries
	}
	if sum != 10_000 {
		t.Fatalf("shard bounds add up to %d", sum)
	}
	for i := range 50_000 {
		m.Set(ctx, strconv.Itoa(i), []byte("v"), 0)
	}
	st := m.Stats()
	if st.Entries > 10_000 || st.Entries < 9_000 {
		t.Fatalf("%d entries held, want at most 10000 and most of them used", st.Entries)
	}
	if st.Evictions != uint64(50_000-st.Entries) {
		t.Fatalf("%d evictions for %d entries of 50000", st.Evictions, st.Entries)
	}
}

func TestMemoryByteBound(t *testing.T) {
	ctx := context.Background()
	m, _ := newMemory(t, Config{MaxBytes: 64 << 10})
	val := make([]byte, 1000)
	for i := range 200 {
		if err := m.Set(ctx, strconv.Itoa(i), val, 0); err != nil {
			t.Fatal(err)
		}
	}
	st := m.Stats()
	if st.Bytes > 64<<10 {
		t.Fatalf("%d bytes held, bound is %d", st.Bytes, 64<<10)
	}
	if want := (64 << 10) / (1000 + entryOverhead + 3); st.Entries < want-1 {
		t.Fatalf("%d entries held, want about %d", st.Entries, want)
	}
	if _, ok, _ := m.Get(ctx, "199"); !ok {
		t.Fatal("the newest entry was evicted")
	}
	m.Set(ctx, "big", []byte("old"), 0)
	err := m.Set(ctx, "big", make([]byte, 65<<10), 0)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized Set: %v, want ErrTooLarge", err)
	}
	if v, ok, _ := m.Get(ctx, "big"); ok {
		t.Fatalf("a failed Set left the outdated value %q", v)
	}
	// Growing a value in place is bounded too.
	for i := range 200 {
		m.Incr(ctx, "ctr", 1, 0)
		m.Set(ctx, strconv.Itoa(i), make([]byte, 2000), 0)
	}
	if st := m.Stats(); st.Bytes > 64<<10 || st.Bytes < 0 {
		t.Fatalf("%d bytes held after resizing", st.Bytes)
	}
	var n int64
	for i := range m.shards {
		s := &m.shards[i]
		for _, e := range s.items {
			n += e.size()
		}
	}
	if n != m.Stats().Bytes {
		t.Fatalf("byte count %d, entries add up to %d", m.Stats().Bytes, n)
	}
}

func TestMemoryAllowGCRA(t *testing.T) {
	ctx := context.Background()
	m, clk := newMemory(t, DefaultConfig())
	allow := func(wantOK bool, wantRem int, wantRetry time.Duration) {
		t.Helper()
		ok, rem, retry, err := m.Allow(ctx, "sender@example.com", 5, 10*time.Second)
		if err != nil || ok != wantOK || rem != wantRem || retry != wantRetry {
			t.Fatalf("Allow = %v %d %s %v; want %v %d %s", ok, rem, retry, err, wantOK, wantRem, wantRetry)
		}
	}
	// A burst of 5, then one every 2s.
	for i := range 5 {
		allow(true, 4-i, 0)
	}
	allow(false, 0, 2*time.Second)
	clk.Add(1500 * time.Millisecond)
	allow(false, 0, 500*time.Millisecond)
	clk.Add(500 * time.Millisecond)
	allow(true, 0, 0)
	allow(false, 0, 2*time.Second)
	// Quiet for 5s: two and a half intervals drained, so two more pass.
	clk.Add(5 * time.Second)
	allow(true, 1, 0)
	allow(true, 0, 0)
	allow(false, 0, 1*time.Second)
	// A whole window of quiet restores the full burst.
	clk.Add(time.Minute)
	allow(true, 4, 0)
	if st := m.Stats(); st.Entries != 1 {
		t.Fatalf("%d entries for one rate limit", st.Entries)
	}
	// The state expires once it says nothing a missing key would not.
	clk.Add(time.Minute)
	key := "rate:sender@example.com"
	s := m.shard(key)
	s.mu.Lock()
	e := s.live(key, m.nowNS())
	s.mu.Unlock()
	if e != nil {
		t.Fatal("rate state outlived its TAT")
	}
	m.Allow(ctx, "sender@example.com", 5, 10*time.Second)
	if _, ok, _ := m.Get(ctx, key); ok {
		t.Fatal("rate state readable as a value")
	}
}

func TestMemoryGreylist(t *testing.T) {
	ctx := context.Background()
	m, clk := newMemory(t, DefaultConfig())
	g, err := NewGreylist(m, GreylistConfig{
		Delay: Duration(5 * time.Minute), RetryWindow: Duration(4 * time.Hour),
		Expiry: Duration(36 * 24 * time.Hour), AutoAllow: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	check := func(ip, from, to string, pass bool, reason Reason, retry time.Duration) {
		t.Helper()
		d, err := g.Check(ctx, netip.MustParseAddr(ip), from, to)
		if err != nil || d.Pass != pass || d.Reason != reason || d.RetryAfter != retry {
			t.Fatalf("Check(%s, %s, %s) = %+v, %v; want pass %v %s retry %s", ip, from, to, d, err, pass, reason, retry)
		}
	}
	check("198.51.100.7", "a@example.com", "x@example.org", false, ReasonNew, 5*time.Minute)
	clk.Add(time.Minute)
	check("198.51.100.7", "a@example.com", "x@example.org", false, ReasonEarly, 4*time.Minute)
	clk.Add(4 * time.Minute)
	// Retry from another address of the same /24.
	check("198.51.100.200", "a@example.com", "x@example.org", true, ReasonRetried, 0)
	clk.Add(30 * 24 * time.Hour)
	check("198.51.100.7", "a@example.com", "x@example.org", true, ReasonKnown, 0)
	// Known triplets expire 36 days after last use.
	clk.Add(36*24*time.Hour + time.Second)
	check("198.51.100.7", "a@example.com", "x@example.org", false, ReasonNew, 5*time.Minute)

	// Retry too late: the triplet starts over.
	check("203.0.113.1", "b@example.com", "x@example.org", false, ReasonNew, 5*time.Minute)
	clk.Add(4*time.Hour + time.Second)
	check("203.0.113.1", "b@example.com", "x@example.org", false, ReasonNew, 5*time.Minute)

	// BATV tags change per attempt and are ignored.
	check("192.0.2.1", "prvs=1234abcd=c@example.com", "y@example.org", false, ReasonNew, 5*time.Minute)
	clk.Add(6 * time.Minute)
	check("192.0.2.1", "prvs=9999ffff=c@example.com", "y@example.org", true, ReasonRetried, 0)
	// A second successful retry from 192.0.2.0/24 auto-allows the network.
	check("192.0.2.2", "d@example.com", "y@example.org", false, ReasonNew, 5*time.Minute)
	clk.Add(6 * time.Minute)
	check("192.0.2.2", "d@example.com", "y@example.org", true, ReasonRetried, 0)
	check("192.0.2.3", "new@example.net", "z@example.org", true, ReasonAutoAllowed, 0)
	check("192.0.3.3", "new@example.net", "z@example.org", false, ReasonNew, 5*time.Minute)

	// IPv6 clients group by /64; IPv4-mapped addresses count as IPv4.
	check("2001:db8:1:2::1", "e@example.com", "y@example.org", false, ReasonNew, 5*time.Minute)
	clk.Add(time.Minute)
	check("2001:db8:1:2:ffff::9", "e@example.com", "y@example.org", false, ReasonEarly, 4*time.Minute)
	check("2001:db8:1:3::1", "e@example.com", "y@example.org", false, ReasonNew, 5*time.Minute)
	check("::ffff:192.0.2.77", "any@example.com", "y@example.org", true, ReasonAutoAllowed, 0)
	if n, _ := g.Network(netip.MustParseAddr("fe80::1%eth0")); n != "fe80::/64" {
		t.Fatalf("zoned address network %q", n)
	}
}

// TestMemoryConcurrent runs every operation from many goroutines on
// shared keys (run with -race) and checks that counters, rate limits and
// greylisting stayed atomic.
func TestMemoryConcurrent(t *testing.T) {
	ctx := context.Background()
	m, clk := newMemory(t, Config{MaxEntries: 5000})
	g, _ := NewGreylist(m, GreylistConfig{Delay: Duration(time.Minute), RetryWindow: Duration(time.Hour)})
	const workers, each = 8, 500
	var allowed, firsts atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range each {
				key := strconv.Itoa(r.IntN(300))
				switch i % 5 {
				case 0:
					m.Set(ctx, key, []byte(key), time.Duration(r.IntN(10))*time.Second)
				case 1:
					if v, ok, _ := m.Get(ctx, key); ok && string(v) != key {
						t.Errorf("key %s holds %q", key, v)
					}
				case 2:
					m.Incr(ctx, "shared-counter", 1, 0)
				case 3:
					if ok, _, _, _ := m.Allow(ctx, "shared-limit", 100, time.Hour); ok {
						allowed.Add(1)
					}
				case 4:
					if d, _ := g.Check(ctx, netip.MustParseAddr("192.0.2.1"), "a@b", "c@d"); d.Reason == ReasonNew {
						firsts.Add(1)
					}
				}
				if i%100 == 0 {
					clk.Add(time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	if v, _, _ := m.Get(ctx, "shared-counter"); string(v) != strconv.Itoa(workers*each/5) {
		t.Errorf("counter %s, want %d", v, workers*each/5)
	}
	if allowed.Load() != 100 {
		t.Errorf("%d events allowed, limit 100", allowed.Load())
	}
	if firsts.Load() != 1 {
		t.Errorf("triplet seen first %d times", firsts.Load())
	}
	if st := m.Stats(); st.Entries > 5000 {
		t.Errorf("%d entries, bound 5000", st.Entries)
	}
}

func TestMemoryClosed(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(Config{}, Options{})
	m.Set(ctx, "k", []byte("v"), 0)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, _, err := m.Get(ctx, "k"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	if _, _, _, err := m.Allow(ctx, "k", 1, time.Second); !errors.Is(err, ErrClosed) {
		t.Fatalf("Allow after Close: %v", err)
	}
	if st := m.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Fatalf("closed cache holds %+v", st)
	}
}

// A value stored with SetValue comes back decoded, with its bytes still
// there for Get; Set, Incr and expiry take the decoded value away.
func TestMemoryDecodedValue(t *testing.T) {
	ctx := context.Background()
	m, clk := newMemory(t, Config{})
	type res struct{ Result string }
	if err := m.SetValue(ctx, "k", []byte(`{"Result":"pass"}`), res{"pass"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	v, ok, err := m.GetValue(ctx, "k")
	if err != nil || !ok || v.(res).Result != "pass" {
		t.Fatalf("GetValue = %v, %v, %v; want the stored value", v, ok, err)
	}
	if b, ok, _ := m.Get(ctx, "k"); !ok || string(b) != `{"Result":"pass"}` {
		t.Fatalf("Get = %q, %v; want the stored bytes", b, ok)
	}
	if err := m.Set(ctx, "k", []byte(`{"Result":"fail"}`), time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := m.GetValue(ctx, "k"); ok {
		t.Fatalf("after Set, GetValue still returns %v", v)
	}
	m.SetValue(ctx, "n", []byte("1"), 1, time.Minute)
	if _, err := m.Incr(ctx, "n", 1, 0); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := m.GetValue(ctx, "n"); ok {
		t.Fatalf("after Incr, GetValue still returns %v", v)
	}
	m.SetValue(ctx, "e", []byte("{}"), res{}, time.Minute)
	clk.Add(2 * time.Minute)
	if v, ok, _ := m.GetValue(ctx, "e"); ok {
		t.Fatalf("an expired value came back: %v", v)
	}
}
