package cache

import (
	"log/slog"
	"sync"
	"time"
)

// BreakerState is the state of the circuit breaker in front of Redis.
type BreakerState int

const (
	// BreakerClosed: operations go to Redis.
	BreakerClosed BreakerState = iota
	// BreakerOpen: operations fail at once with ErrUnavailable.
	BreakerOpen
	// BreakerHalfOpen: the cooldown is over and one probe is let through.
	BreakerHalfOpen
)

func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return "unknown"
}

// outcome is what an operation says about Redis's health.
type outcome int

const (
	succeeded outcome = iota // Redis answered
	failed                   // Redis did not answer in time or refused us
	unknown                  // the caller gave up first: says nothing
)

// breaker opens after `max` consecutive failures, so that a dead Redis
// costs nothing per message; after cooldown one operation probes, and
// its success closes the breaker again.
type breaker struct {
	max      int
	cooldown time.Duration
	now      func() time.Time
	log      *slog.Logger

	mu       sync.Mutex
	state    BreakerState
	failures int // consecutive, while closed
	openedAt time.Time
	downAt   time.Time // first opening of this outage, for the recovery log
	probing  bool
	opens    uint64
}

func newBreaker(cfg BreakerConfig, now func() time.Time, log *slog.Logger) *breaker {
	return &breaker{max: cfg.Failures, cooldown: time.Duration(cfg.Cooldown), now: now, log: log}
}

// allow says whether an operation may go to Redis, and whether it is the
// half-open probe. Each allowed operation must be followed by done.
func (b *breaker) allow() (ok, probe bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case BreakerClosed:
		return true, false
	case BreakerOpen:
		if b.now().Sub(b.openedAt) < b.cooldown {
			return false, false
		}
		b.state = BreakerHalfOpen
		fallthrough
	default: // half-open
		if b.probing {
			return false, false
		}
		b.probing = true
		b.log.Debug("redis cache: probing after cooldown")
		return true, true
	}
}

// done records the outcome of an allowed operation.
func (b *breaker) done(probe bool, o outcome, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe {
		b.probing = false
	}
	switch o {
	case succeeded:
		b.failures = 0
		// Only the probe closes: a slow answer to an operation sent before
		// the breaker opened says little about now.
		if probe && b.state == BreakerHalfOpen {
			b.state = BreakerClosed
			b.log.Info("redis cache available again", "down", b.now().Sub(b.downAt).Round(time.Millisecond))
		}
	case failed:
		switch {
		case probe && b.state == BreakerHalfOpen:
			b.state = BreakerOpen
			b.openedAt = b.now()
			b.log.Warn("redis cache still unavailable: running uncached", "error", err, "retry_in", b.cooldown)
		case b.state == BreakerClosed:
			b.failures++
			if b.failures >= b.max {
				b.state = BreakerOpen
				b.openedAt = b.now()
				b.downAt = b.openedAt
				b.failures = 0
				b.opens++
				b.log.Warn("redis cache unavailable: running uncached", "failures", b.max, "error", err, "retry_in", b.cooldown)
			}
		}
	}
}

func (b *breaker) stats() (BreakerState, uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state, b.opens
}
