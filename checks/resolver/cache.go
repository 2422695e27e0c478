package resolver

import (
	"container/list"
	"sync"
	"time"
)

// cache holds outcomes until their TTL runs out, evicting the least
// recently used entry when full.
type cache struct {
	mu    sync.Mutex
	max   int
	items map[cacheKey]*list.Element
	order *list.List // front: most recently used
}

type cacheEntry struct {
	key     cacheKey
	out     outcome
	expires time.Time
}

func newCache(max int) *cache {
	return &cache{max: max, items: make(map[cacheKey]*list.Element), order: list.New()}
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
		c.order.Remove(el)
		delete(c.items, key)
		return outcome{}, false
	}
	c.order.MoveToFront(el)
	out := e.out
	out.ttl = uint32((left + time.Second - 1) / time.Second)
	return out, true
}

func (c *cache) put(key cacheKey, out outcome, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		el.Value = &cacheEntry{key, out, expires}
		c.order.MoveToFront(el)
		return
	}
	c.items[key] = c.order.PushFront(&cacheEntry{key, out, expires})
	for c.order.Len() > c.max {
		old := c.order.Back()
		c.order.Remove(old)
		delete(c.items, old.Value.(*cacheEntry).key)
	}
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
