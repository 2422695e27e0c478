package cache

import (
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// entryOverhead is the estimated size of an entry beside its key and
// value: the map slot, the entry struct and its list links.
const entryOverhead = 96

// Memory is the embedded cache: a fixed set of shards, each a map with
// its own lock and its own least-recently-used list, bounded by entries
// and by estimated bytes. Expired entries are never returned; they are
// removed when met, or evicted by the bounds.
type Memory struct {
	shards []shard
	mask   uint64
	seed   maphash.Seed
	now    func() time.Time
	closed atomic.Bool
}

type shard struct {
	mu         sync.Mutex
	items      map[string]*entry
	root       entry // list sentinel: root.next is the most recently used
	maxEntries int   // 0: no bound
	maxBytes   int64 // 0: no bound
	bytes      int64

	hits, misses, evictions, expired uint64
	_                                [64]byte // keep shards' locks off each other's cache lines
}

type kind uint8

const (
	kindBytes      kind = iota // Get/Set/Incr value
	kindRate                   // a: TAT in ns
	kindGrey                   // a: first seen, b: passed (0: not yet), in ns
	kindGreyClient             // a: successful retries of the network
)

type entry struct {
	key        string
	val        []byte
	obj        any // val decoded, when stored with SetValue
	a, b       int64
	kind       kind
	expires    int64 // unix ns; 0: never
	prev, next *entry
}

func (e *entry) size() int64 { return int64(len(e.key) + len(e.val) + entryOverhead) }

// NewMemory builds a memory cache with cfg's bounds (zero bounds take the
// defaults). It never fails.
func NewMemory(cfg Config, opts Options) *Memory {
	cfg = cfg.withDefaults()
	maxEntries, maxBytes := max(cfg.MaxEntries, 0), max(cfg.MaxBytes, 0)
	// Bounds are per shard, so a small cache gets few shards to keep each
	// shard's share meaningful.
	n := 64
	for n > 1 && ((maxEntries > 0 && maxEntries/n < 64) || (maxBytes > 0 && maxBytes/int64(n) < 64<<10)) {
		n /= 2
	}
	m := &Memory{shards: make([]shard, n), mask: uint64(n - 1), seed: maphash.MakeSeed(), now: opts.clock()}
	for i := range m.shards {
		s := &m.shards[i]
		s.items = make(map[string]*entry)
		s.root.next, s.root.prev = &s.root, &s.root
		// Spread the remainder so the shards add up to the bound exactly.
		if maxEntries > 0 {
			s.maxEntries = maxEntries / n
			if i < maxEntries%n {
				s.maxEntries++
			}
		}
		if maxBytes > 0 {
			s.maxBytes = maxBytes / int64(n)
			if int64(i) < maxBytes%int64(n) {
				s.maxBytes++
			}
		}
	}
	return m
}

func (m *Memory) shard(key string) *shard {
	return &m.shards[maphash.String(m.seed, hashTag(key))&m.mask]
}

func (m *Memory) nowNS() int64 { return m.now().UnixNano() }

// deadline is when an entry stored now for ttl expires; 0 is never.
func deadline(now int64, ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	if d := now + int64(ttl); d > now {
		return d
	}
	return math.MaxInt64
}

// live returns the unexpired entry of key, removing an expired one.
func (s *shard) live(key string, now int64) *entry {
	e := s.items[key]
	if e == nil {
		return nil
	}
	if e.expires != 0 && e.expires <= now {
		s.remove(e)
		s.expired++
		return nil
	}
	return e
}

func (s *shard) remove(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	delete(s.items, e.key)
	s.bytes -= e.size()
}

func (s *shard) touch(e *entry) {
	if s.root.next == e {
		return
	}
	e.prev.next, e.next.prev = e.next, e.prev
	s.pushFront(e)
}

func (s *shard) pushFront(e *entry) {
	e.prev, e.next = &s.root, s.root.next
	s.root.next.prev = e
	s.root.next = e
}

// insert adds a new entry and evicts least recently used ones (never e)
// until the shard is within its bounds.
func (s *shard) insert(e *entry) {
	s.items[e.key] = e
	s.pushFront(e)
	s.bytes += e.size()
	s.shrink(e)
}

// resize accounts for a changed value of e and evicts if needed.
func (s *shard) resize(e *entry, val []byte) {
	s.bytes += int64(len(val) - len(e.val))
	e.val = val
	s.shrink(e)
}

func (s *shard) shrink(keep *entry) {
	for (s.maxEntries > 0 && len(s.items) > s.maxEntries) || (s.maxBytes > 0 && s.bytes > s.maxBytes) {
		old := s.root.prev
		if old == keep {
			old = old.prev
		}
		if old == &s.root {
			return
		}
		s.remove(old)
		s.evictions++
	}
}

func (m *Memory) check(key string) (string, error) {
	if m.closed.Load() {
		return "", ErrClosed
	}
	return normKey(key)
}

// Get implements Cache.
func (m *Memory) Get(ctx context.Context, key string) ([]byte, bool, error) {
	val, _, ok, err := m.get(key, false)
	return val, ok, err
}

// get looks key up as Get does; decoded asks for the value SetValue
// kept instead of a copy of the bytes.
func (m *Memory) get(key string, decoded bool) ([]byte, any, bool, error) {
	key, err := m.check(key)
	if err != nil {
		return nil, nil, false, err
	}
	now := m.nowNS()
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.live(key, now)
	if e == nil || e.kind != kindBytes || decoded && e.obj == nil {
		s.misses++
		return nil, nil, false, nil
	}
	s.touch(e)
	s.hits++
	if decoded {
		return nil, e.obj, true, nil
	}
	return append([]byte(nil), e.val...), nil, true, nil
}

// Set implements Cache. A value larger than a shard's byte bound gets
// ErrTooLarge.
func (m *Memory) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	return m.set(key, value, nil, ttl)
}

func (m *Memory) set(key string, value []byte, obj any, ttl time.Duration) error {
	key, err := m.check(key)
	if err != nil {
		return err
	}
	if err := checkTTL(ttl); err != nil {
		return fmt.Errorf("setting %q: %w", key, err)
	}
	s := m.shard(key)
	val := append([]byte(nil), value...)
	now := m.nowNS()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.maxBytes > 0 && int64(len(key)+len(value)+entryOverhead) > s.maxBytes {
		// The old value is outdated now: drop it rather than serve it.
		if e := s.items[key]; e != nil {
			s.remove(e)
		}
		return fmt.Errorf("setting %q (%d bytes): %w", key, len(value), ErrTooLarge)
	}
	if e := s.items[key]; e != nil {
		e.kind, e.a, e.b, e.expires, e.obj = kindBytes, 0, 0, deadline(now, ttl), obj
		s.touch(e)
		s.resize(e, val)
		return nil
	}
	s.insert(&entry{key: key, val: val, obj: obj, kind: kindBytes, expires: deadline(now, ttl)})
	return nil
}

// SetValue implements Decoded: Set, keeping v beside the bytes.
func (m *Memory) SetValue(ctx context.Context, key string, value []byte, v any, ttl time.Duration) error {
	return m.set(key, value, v, ttl)
}

// GetValue implements Decoded.
func (m *Memory) GetValue(ctx context.Context, key string) (any, bool, error) {
	_, v, ok, err := m.get(key, true)
	return v, ok, err
}

// Delete implements Cache.
func (m *Memory) Delete(ctx context.Context, key string) error {
	key, err := m.check(key)
	if err != nil {
		return err
	}
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.items[key]; e != nil {
		s.remove(e)
	}
	return nil
}

// Incr implements Cache.
func (m *Memory) Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	key, err := m.check(key)
	if err != nil {
		return 0, err
	}
	if err := checkTTL(ttl); err != nil {
		return 0, fmt.Errorf("incrementing %q: %w", key, err)
	}
	now := m.nowNS()
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.live(key, now)
	if e == nil || e.kind != kindBytes {
		if e != nil {
			s.remove(e)
		}
		s.insert(&entry{key: key, val: strconv.AppendInt(nil, delta, 10), kind: kindBytes, expires: deadline(now, ttl)})
		return delta, nil
	}
	n, err := strconv.ParseInt(string(e.val), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("incrementing %q: value is not an integer", key)
	}
	sum := n + delta
	if (delta > 0 && sum < n) || (delta < 0 && sum > n) {
		return 0, fmt.Errorf("incrementing %q by %d: integer overflow", key, delta)
	}
	if e.expires == 0 {
		e.expires = deadline(now, ttl)
	}
	s.touch(e)
	e.obj = nil
	s.resize(e, strconv.AppendInt(nil, sum, 10))
	return sum, nil
}

// Allow implements Cache with GCRA (see ratelimit.go), exact to the
// nanosecond.
func (m *Memory) Allow(ctx context.Context, key string, limit int, window time.Duration) (bool, int, time.Duration, error) {
	key, err := m.check(key)
	if err != nil {
		return false, 0, 0, err
	}
	if err := checkLimit(limit, window); err != nil {
		return false, 0, 0, fmt.Errorf("rate limiting %q: %w", key, err)
	}
	key = "rate:" + key
	now := m.nowNS()
	s := m.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.live(key, now)
	var tat int64
	if e != nil && e.kind == kindRate {
		tat = e.a
	}
	newTAT, ok, rem, retry := gcra(now, tat, limit, int64(window))
	if !ok {
		return false, 0, time.Duration(retry), nil
	}
	switch {
	case e == nil:
		s.insert(&entry{key: key, kind: kindRate, a: newTAT, expires: newTAT})
	default:
		e.kind, e.a, e.expires, e.obj = kindRate, newTAT, newTAT, nil
		s.touch(e)
		s.resize(e, nil)
	}
	return true, rem, 0, nil
}

// CheckTriplet implements Cache; the logic is the same as the Redis
// script's (see greylist.go).
func (m *Memory) CheckTriplet(ctx context.Context, network, triplet string, cfg GreylistConfig) (Decision, error) {
	if m.closed.Load() {
		return Decision{}, ErrClosed
	}
	if err := cfg.checkTimes(); err != nil {
		return Decision{}, err
	}
	tkey, ckey := greyKeys(network, triplet)
	delay, window, expiry := int64(cfg.Delay), int64(cfg.RetryWindow), time.Duration(cfg.Expiry)
	now := m.nowNS()
	s := m.shard(tkey) // the same shard as ckey: both hash by network
	s.mu.Lock()
	defer s.mu.Unlock()

	if cfg.AutoAllow > 0 {
		if c := s.live(ckey, now); c != nil && c.kind == kindGreyClient && c.a >= int64(cfg.AutoAllow) {
			c.expires = deadline(now, expiry)
			s.touch(c)
			return Decision{Pass: true, Reason: ReasonAutoAllowed}, nil
		}
	}
	e := s.live(tkey, now)
	if e != nil && e.kind != kindGrey {
		s.remove(e)
		e = nil
	}
	switch {
	case e == nil:
		s.insert(&entry{key: tkey, kind: kindGrey, a: now, expires: deadline(now, time.Duration(window))})
		return Decision{Reason: ReasonNew, RetryAfter: time.Duration(delay)}, nil
	case e.b != 0:
		e.expires = deadline(now, expiry)
		s.touch(e)
		return Decision{Pass: true, Reason: ReasonKnown}, nil
	case now-e.a < delay:
		s.touch(e)
		return Decision{Reason: ReasonEarly, RetryAfter: time.Duration(e.a + delay - now)}, nil
	case now-e.a > window:
		e.a, e.expires = now, deadline(now, time.Duration(window))
		s.touch(e)
		return Decision{Reason: ReasonNew, RetryAfter: time.Duration(delay)}, nil
	}
	e.b, e.expires = now, deadline(now, expiry)
	s.touch(e)
	if cfg.AutoAllow > 0 {
		c := s.live(ckey, now)
		if c == nil || c.kind != kindGreyClient {
			if c != nil {
				s.remove(c)
			}
			c = &entry{key: ckey, kind: kindGreyClient}
			s.insert(c)
		} else {
			s.touch(c)
		}
		c.a++
		c.expires = deadline(now, expiry)
	}
	return Decision{Pass: true, Reason: ReasonRetried}, nil
}

// Ping implements Cache.
func (m *Memory) Ping(ctx context.Context) error {
	if m.closed.Load() {
		return ErrClosed
	}
	return nil
}

// Stats implements Cache.
func (m *Memory) Stats() Stats {
	var st Stats
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		st.Hits += s.hits
		st.Misses += s.misses
		st.Evictions += s.evictions
		st.Expired += s.expired
		st.Entries += len(s.items)
		st.Bytes += s.bytes
		s.mu.Unlock()
	}
	return st
}

// Close implements Cache; it drops every entry.
func (m *Memory) Close() error {
	if m.closed.Swap(true) {
		return nil
	}
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		s.items = map[string]*entry{}
		s.root.next, s.root.prev = &s.root, &s.root
		s.bytes = 0
		s.mu.Unlock()
	}
	return nil
}
