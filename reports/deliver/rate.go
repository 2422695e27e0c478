package deliver

import (
	"context"
	"sync"
	"time"

	"github.com/mailward/mailward/cache"
)

// rateKey names the fleet-wide cap in the cache.
const rateKey = "dmarc-reports:rate"

// limiter is the max_per_hour cap on report messages: in the shared
// cache when there is one, so that a fleet sends no more than one
// instance would, else in the process.
type limiter struct {
	perHour int
	cache   cache.Cache

	mu   sync.Mutex
	next time.Time // when the next message may go, in-process
	now  func() time.Time
}

func newLimiter(perHour int, c cache.Cache) *limiter {
	return &limiter{perHour: perHour, cache: c, now: time.Now}
}

// wait blocks until one more message may be sent, or ctx ends.
func (l *limiter) wait(ctx context.Context, sleep func(context.Context, time.Duration) error) error {
	if l.perHour <= 0 {
		return nil
	}
	if l.cache != nil {
		for {
			ok, _, after, err := l.cache.Allow(ctx, rateKey, l.perHour, time.Hour)
			if err != nil {
				break // the cache is down: the process's own cap still holds
			}
			if ok {
				return nil
			}
			if err := sleep(ctx, max(after, time.Millisecond)); err != nil {
				return err
			}
		}
	}
	interval := time.Hour / time.Duration(l.perHour)
	l.mu.Lock()
	now := l.now()
	at := l.next
	if at.Before(now) {
		at = now
	}
	l.next = at.Add(interval)
	l.mu.Unlock()
	if d := at.Sub(now); d > 0 {
		return sleep(ctx, d)
	}
	return nil
}
