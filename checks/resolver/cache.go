package resolver

import (
	"container/list"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// cache holds outcomes until their TTL runs out, evicting the least
// recently used entry when it holds too many entries or too many bytes.
// The answers are the senders' to choose (their SPF records, their DKIM
// keys), so the byte budget, not the entry count, is what bounds memory.
type cache struct {
	mu       sync.Mutex
	max      int
	maxBytes int64
	maxEntry int64 // larger answers are not cached at all
	bytes    int64
	items    map[cacheKey]*list.Element
	order    *list.List // front: most recently used

	evictions uint64
	oversized uint64
}

type cacheEntry struct {
	key     cacheKey
	out     outcome
	expires time.Time
	size    int64
}

// CacheStats describes the cache, for metrics.
type CacheStats struct {
	Entries   int
	Bytes     int64  // estimated memory held by the entries
	MaxBytes  int64  // the byte budget
	Evictions uint64 // entries dropped to make room, since start
	Oversized uint64 // answers not cached because they were too large
}

// Sizes estimated per entry, beyond the records' wire size: the map slot,
// list element, entry and key, and each record's header and slice slot.
const (
	entryOverhead = 200
	rrOverhead    = 64
	// maxCachedAnswer is the largest answer cached. Real answers are a
	// few hundred bytes to a few KB; bigger ones are fetched again.
	maxCachedAnswer = 16 << 10
)

func newCache(max int, maxBytes int64) *cache {
	return &cache{max: max, maxBytes: maxBytes, maxEntry: min(maxCachedAnswer, maxBytes/16),
		items: make(map[cacheKey]*list.Element), order: list.New()}
}

// entrySize estimates the memory an outcome holds in the cache.
func entrySize(key cacheKey, out outcome) int64 {
	n := entryOverhead + len(key.name) + len(out.chase)
	for _, rr := range out.rrs {
		n += rrOverhead + dns.Len(rr)
	}
	return int64(n)
}

// get returns the outcome for key with its TTL lowered to what remains.
func (c *cache) get(key cacheKey, now time.Time) (outcome, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return outcome{}, false
	}
	e := el.Value.(*cacheEntry)
	left := e.expires.Sub(now)
	if left <= 0 {
		c.remove(el)
		return outcome{}, false
	}
	c.order.MoveToFront(el)
	out := e.out
	out.ttl = uint32((left + time.Second - 1) / time.Second)
	return out, true
}

func (c *cache) put(key cacheKey, out outcome, expires time.Time) {
	size := entrySize(key, out)
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.remove(el)
	}
	if size > c.maxEntry {
		c.oversized++
		return
	}
	c.items[key] = c.order.PushFront(&cacheEntry{key, out, expires, size})
	c.bytes += size
	for c.order.Len() > c.max || c.bytes > c.maxBytes {
		c.remove(c.order.Back())
		c.evictions++
	}
}

func (c *cache) remove(el *list.Element) {
	e := el.Value.(*cacheEntry)
	c.order.Remove(el)
	delete(c.items, e.key)
	c.bytes -= e.size
}

func (c *cache) stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{Entries: c.order.Len(), Bytes: c.bytes, MaxBytes: c.maxBytes, Evictions: c.evictions, Oversized: c.oversized}
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
