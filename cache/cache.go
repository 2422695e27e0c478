// Package cache keeps what mailward learns between transactions: check
// verdicts, counters, rate limits and greylisting triplets. Memory is the
// default and needs nothing beside mailward; Redis lets a fleet of
// mailwards share one view.
//
// A cache is an optimisation, never a dependency: every error, and
// ErrUnavailable in particular, means "run without the cache".
package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Cache is what checks and the engine use. All methods are safe for
// concurrent use.
type Cache interface {
	// Get returns the value stored under key; ok is false when there is
	// none or it has expired.
	Get(ctx context.Context, key string) (value []byte, ok bool, err error)
	// Set stores value under key for ttl; ttl 0 keeps it until evicted.
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Incr adds delta to the decimal counter under key and returns the new
	// value. A new counter starts at 0 and expires ttl after it was created
	// (ttl 0: never); later increments do not extend it, which makes
	// fixed-window counters.
	Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error)
	// Allow takes one event from the rate limit named key: limit events
	// per window, in bursts of up to limit (GCRA, see ratelimit.go). When
	// refused, retryAfter says when the next event would be allowed.
	Allow(ctx context.Context, key string, limit int, window time.Duration) (allowed bool, remaining int, retryAfter time.Duration, err error)
	// CheckTriplet is the atomic step of greylisting, for Greylist: network
	// is the client's network, triplet identifies sender and recipient.
	CheckTriplet(ctx context.Context, network, triplet string, cfg GreylistConfig) (Decision, error)
	// Ping reports whether the cache answers, for readiness checks.
	Ping(ctx context.Context) error
	// Stats returns counters since the cache was made.
	Stats() Stats
	// Close releases connections; later calls return ErrClosed.
	Close() error
}

// Decoded is implemented by a cache that lives in the process (Memory):
// beside a value's bytes it keeps the value decoded, so that a hit costs
// no decoding. The byte bound counts the bytes. Callers must not change
// a value after storing it or once they got it: every hit shares it.
type Decoded interface {
	// SetValue is Set, with v the decoded form of value.
	SetValue(ctx context.Context, key string, value []byte, v any, ttl time.Duration) error
	// GetValue returns what SetValue stored under key; ok is false when
	// there is none, it has expired, or it was stored with Set.
	GetValue(ctx context.Context, key string) (v any, ok bool, err error)
}

var (
	// ErrUnavailable means the shared cache cannot be used right now
	// (down, slow, or the circuit breaker is open): run uncached.
	ErrUnavailable = errors.New("cache unavailable")
	// ErrClosed is returned by a cache after Close.
	ErrClosed = errors.New("cache closed")
	// ErrTooLarge is returned by Memory.Set for a value that cannot fit
	// in the cache's byte bound.
	ErrTooLarge = errors.New("value too large for the cache")
)

// Options are what a cache needs beside its config.
type Options struct {
	// Logger receives the breaker's state changes; nil discards them.
	Logger *slog.Logger
	// Now is the clock of the memory cache and of the breaker; nil means
	// time.Now. Redis keeps its own time for rate limits and greylisting,
	// so that every mailward of a fleet uses the same clock.
	Now func() time.Time
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

func (o Options) clock() func() time.Time {
	if o.Now == nil {
		return time.Now
	}
	return o.Now
}

// Stats are a cache's counters, for metrics and logs.
type Stats struct {
	Hits   uint64 // Get found a value
	Misses uint64 // Get found none
	// Memory only.
	Entries   int    // entries held, including expired ones not yet removed
	Bytes     int64  // their estimated size
	Evictions uint64 // entries removed to stay within bounds
	Expired   uint64 // entries found expired and removed
	// Redis only.
	Errors       uint64       // operations that failed: timeouts, refused connections
	Unavailable  uint64       // operations refused at once by the open breaker
	Breaker      BreakerState // closed (normal), open or half-open
	BreakerOpens uint64       // times the breaker opened
}

// New builds the cache cfg describes: Memory for type "memory" (or
// empty), Redis for type "redis". Zero fields take their defaults.
func New(cfg Config, opts Options) (Cache, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch cfg.Type {
	case TypeMemory:
		return NewMemory(cfg, opts), nil
	case TypeRedis:
		return NewRedis(cfg, opts)
	}
	return nil, fmt.Errorf("unknown cache type %q", cfg.Type)
}

// Keys longer than this are shortened to a prefix and a hash, so that a
// long envelope address can neither bloat the cache nor slip past a rate
// limit.
const maxKeyLen = 512

// normKey checks key and shortens a long one.
func normKey(key string) (string, error) {
	if key == "" {
		return "", errors.New("empty cache key")
	}
	if len(key) <= maxKeyLen {
		return key, nil
	}
	sum := sha256.Sum256([]byte(key))
	return key[:maxKeyLen-65] + "#" + hex.EncodeToString(sum[:]), nil
}

// greyKeys are the keys of one greylisting step. The client's network is
// the hash tag of both, so Redis Cluster keeps them in one slot and a
// script may touch both.
func greyKeys(network, triplet string) (tripletKey, clientKey string) {
	base := "grey:{" + network + "}:"
	return base + "t:" + triplet, base + "ok"
}

// hashTag is the part of key Redis Cluster hashes: the first {...} with
// something inside, else the whole key. Memory shards by it too.
func hashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

func checkTTL(ttl time.Duration) error {
	if ttl < 0 {
		return fmt.Errorf("negative TTL %s", ttl)
	}
	return nil
}

// maxWindow keeps rate limit arithmetic far from overflow.
const maxWindow = 3650 * 24 * time.Hour

func checkLimit(limit int, window time.Duration) error {
	if limit <= 0 {
		return fmt.Errorf("rate limit %d: want a positive number of events", limit)
	}
	if window <= 0 || window > maxWindow {
		return fmt.Errorf("rate window %s: want a positive duration up to %s", window, maxWindow)
	}
	return nil
}
