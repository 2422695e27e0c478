package resolver

import (
	"context"
	"sync"
	"time"
)

// TTLs collects the smallest TTL of the answers a computation used, so
// that a result derived from DNS (an SPF verdict, a DNSBL listing) is not
// kept longer than the data it came from.
type TTLs struct {
	mu   sync.Mutex
	min  uint32
	seen bool
}

type ttlsKey struct{}

// WithTTLs returns a context under which every answer the resolver gives,
// from the network or its cache, positive or negative, is recorded in the
// returned TTLs. Failures record nothing.
func WithTTLs(ctx context.Context) (context.Context, *TTLs) {
	t := &TTLs{}
	return context.WithValue(ctx, ttlsKey{}, t), t
}

// Min is the smallest TTL recorded; ok is false when no answer was used.
func (t *TTLs) Min() (d time.Duration, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return time.Duration(t.min) * time.Second, t.seen
}

func (t *TTLs) add(ttl uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.seen || ttl < t.min {
		t.min, t.seen = ttl, true
	}
}

// recordTTL notes ttl in ctx's TTLs, if it has one.
func recordTTL(ctx context.Context, ttl uint32) {
	if t, ok := ctx.Value(ttlsKey{}).(*TTLs); ok {
		t.add(ttl)
	}
}
