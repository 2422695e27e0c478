package cache

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// keyVersion is part of every key, so that a change of what this package
// stores never reads data written in the old format.
const keyVersion = "v1:"

// Redis is the shared cache of a fleet, on one Redis node, Sentinel or
// Cluster. Every operation is bounded by the configured timeout, and a
// circuit breaker turns a dead Redis into immediate ErrUnavailable.
type Redis struct {
	client  redis.UniversalClient
	prefix  string // key_prefix + keyVersion
	timeout time.Duration
	br      *breaker
	log     *slog.Logger
	// reload asks a Cluster client to read the slot map again, nil for
	// other clients.
	reload func()

	hits, misses, errors, unavailable atomic.Uint64
	closed                            atomic.Bool
}

// NewRedis connects lazily: Redis may be down when mailward starts.
func NewRedis(cfg Config, opts Options) (*Redis, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rc := cfg.Redis
	if len(rc.Addrs) == 0 {
		return nil, errors.New("redis cache: no addresses")
	}
	password, err := rc.secret()
	if err != nil {
		return nil, err
	}
	timeout := time.Duration(rc.Timeout)
	var tlsCfg *tls.Config
	if rc.TLS {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
		if rc.CAFile != "" {
			pem, err := os.ReadFile(rc.CAFile)
			if err != nil {
				return nil, fmt.Errorf("reading redis ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("redis ca_file %s: no PEM certificates in it", rc.CAFile)
			}
			tlsCfg.RootCAs = pool
		}
	}
	// Our dialer honours the context, also during a TLS handshake.
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		nd := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
		if tlsCfg == nil {
			return nd.DialContext(ctx, network, addr)
		}
		return (&tls.Dialer{NetDialer: nd, Config: tlsCfg}).DialContext(ctx, network, addr)
	}
	log := opts.logger()
	client := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:      rc.Addrs,
		MasterName: rc.MasterName,
		Username:   rc.Username,
		Password:   password,
		// Sentinels usually share the servers' credentials.
		SentinelUsername: rc.Username,
		SentinelPassword: password,
		DB:               rc.DB,
		Dialer:           dial,

		DialTimeout:           timeout,
		ReadTimeout:           timeout,
		WriteTimeout:          timeout,
		PoolTimeout:           timeout,
		ContextTimeoutEnabled: true,
		DialerRetries:         1, // the breaker, not the dialer, handles a dead server
		// One retry replaces a pooled connection that died with a restarted
		// server; the timeout still bounds the whole operation.
		MaxRetries: 1,

		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	r := &Redis{
		client:  client,
		prefix:  rc.KeyPrefix + keyVersion,
		timeout: timeout,
		br:      newBreaker(cfg.Breaker, opts.clock(), log),
		log:     log,
	}
	if cc, ok := client.(*redis.ClusterClient); ok {
		// After a failover the client would keep sending a dead master's
		// slots to it until its periodic reload; with the breaker open it
		// sends too little to get there.
		r.reload = func() { cc.ReloadState(context.Background()) }
	}
	return r, nil
}

// run sends one operation through the breaker within the timeout.
func (r *Redis) run(ctx context.Context, op, key string, fn func(ctx context.Context) error) error {
	if r.closed.Load() {
		return ErrClosed
	}
	ok, probe := r.br.allow()
	if !ok {
		r.unavailable.Add(1)
		return ErrUnavailable
	}
	opCtx, cancel := context.WithTimeout(ctx, r.timeout)
	err := fn(opCtx)
	cancel()
	switch {
	case err == nil || errors.Is(err, redis.Nil):
		r.br.done(probe, succeeded, nil)
		return err
	case ctx.Err() != nil:
		// The caller gave up: that says nothing about Redis.
		r.br.done(probe, unknown, nil)
		return fmt.Errorf("redis %s %q: %w", op, key, ctx.Err())
	case isDataError(err):
		r.br.done(probe, succeeded, nil)
		return fmt.Errorf("redis %s %q: %w", op, key, err)
	}
	r.errors.Add(1)
	r.log.Debug("redis cache operation failed", "op", op, "key", key, "error", err)
	r.br.done(probe, failed, err)
	if r.reload != nil {
		r.reload() // asynchronous, and one at a time
	}
	return fmt.Errorf("redis %s %q: %w: %w", op, key, ErrUnavailable, err)
}

// isDataError tells an error about the data (the server is fine) from one
// about the server.
func isDataError(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "WRONGTYPE") || strings.Contains(msg, "not an integer") || strings.Contains(msg, "overflow")
}

// ttlMS is ttl in whole milliseconds, rounded up, as PEXPIRE takes it.
func ttlMS(ttl time.Duration) int64 {
	return int64((ttl + time.Millisecond - 1) / time.Millisecond)
}

// Get implements Cache.
func (r *Redis) Get(ctx context.Context, key string) ([]byte, bool, error) {
	key, err := normKey(key)
	if err != nil {
		return nil, false, err
	}
	var val []byte
	err = r.run(ctx, "get", key, func(ctx context.Context) error {
		var err error
		val, err = r.client.Get(ctx, r.prefix+key).Bytes()
		return err
	})
	switch {
	case errors.Is(err, redis.Nil):
		r.misses.Add(1)
		return nil, false, nil
	case err != nil:
		return nil, false, err
	}
	r.hits.Add(1)
	return val, true, nil
}

// Set implements Cache.
func (r *Redis) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	key, err := normKey(key)
	if err != nil {
		return err
	}
	if err := checkTTL(ttl); err != nil {
		return fmt.Errorf("setting %q: %w", key, err)
	}
	return r.run(ctx, "set", key, func(ctx context.Context) error {
		if ttl == 0 {
			return r.client.Set(ctx, r.prefix+key, value, 0).Err()
		}
		return r.client.Do(ctx, "SET", r.prefix+key, value, "PX", ttlMS(ttl)).Err()
	})
}

// Delete implements Cache.
func (r *Redis) Delete(ctx context.Context, key string) error {
	key, err := normKey(key)
	if err != nil {
		return err
	}
	return r.run(ctx, "delete", key, func(ctx context.Context) error {
		return r.client.Del(ctx, r.prefix+key).Err()
	})
}

// Incr implements Cache.
func (r *Redis) Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	key, err := normKey(key)
	if err != nil {
		return 0, err
	}
	if err := checkTTL(ttl); err != nil {
		return 0, fmt.Errorf("incrementing %q: %w", key, err)
	}
	var n int64
	err = r.run(ctx, "incr", key, func(ctx context.Context) error {
		var err error
		n, err = incrScript.Run(ctx, r.client, []string{r.prefix + key}, delta, ttlMS(ttl)).Int64()
		return err
	})
	return n, err
}

// Allow implements Cache with GCRA (see ratelimit.go) on the Redis
// server's clock, to the microsecond.
func (r *Redis) Allow(ctx context.Context, key string, limit int, window time.Duration) (bool, int, time.Duration, error) {
	key, err := normKey(key)
	if err != nil {
		return false, 0, 0, err
	}
	if err := checkLimit(limit, window); err != nil {
		return false, 0, 0, fmt.Errorf("rate limiting %q: %w", key, err)
	}
	var res []int64
	err = r.run(ctx, "rate limit", key, func(ctx context.Context) error {
		var err error
		res, err = rateScript.Run(ctx, r.client, []string{r.prefix + "rate:" + key}, limit, window.Microseconds()).Int64Slice()
		if err == nil && len(res) != 3 {
			err = fmt.Errorf("rate limit script returned %d values, want 3", len(res))
		}
		return err
	})
	if err != nil {
		return false, 0, 0, err
	}
	return res[0] == 1, int(res[1]), time.Duration(res[2]) * time.Microsecond, nil
}

// CheckTriplet implements Cache in one Lua script over the triplet's key
// and its network's key, which share a hash tag.
func (r *Redis) CheckTriplet(ctx context.Context, network, triplet string, cfg GreylistConfig) (Decision, error) {
	if err := cfg.checkTimes(); err != nil {
		return Decision{}, err
	}
	tkey, ckey := greyKeys(network, triplet)
	var res []any
	err := r.run(ctx, "greylist", tkey, func(ctx context.Context) error {
		var err error
		res, err = greyScript.Run(ctx, r.client, []string{r.prefix + tkey, r.prefix + ckey},
			time.Duration(cfg.Delay).Microseconds(), time.Duration(cfg.RetryWindow).Microseconds(),
			ttlMS(time.Duration(cfg.Expiry)), cfg.AutoAllow).Slice()
		return err
	})
	if err != nil {
		return Decision{}, err
	}
	if len(res) != 3 {
		return Decision{}, fmt.Errorf("greylist script returned %d values, want 3", len(res))
	}
	pass, _ := res[0].(int64)
	reason, _ := res[1].(string)
	retry, _ := res[2].(int64)
	return Decision{Pass: pass == 1, Reason: Reason(reason), RetryAfter: time.Duration(retry) * time.Microsecond}, nil
}

// Ping implements Cache; it goes through the breaker, so a readiness
// check may be the probe that finds Redis back.
func (r *Redis) Ping(ctx context.Context) error {
	return r.run(ctx, "ping", "", func(ctx context.Context) error {
		return r.client.Ping(ctx).Err()
	})
}

// Stats implements Cache.
func (r *Redis) Stats() Stats {
	state, opens := r.br.stats()
	return Stats{
		Hits:         r.hits.Load(),
		Misses:       r.misses.Load(),
		Errors:       r.errors.Load(),
		Unavailable:  r.unavailable.Load(),
		Breaker:      state,
		BreakerOpens: opens,
	}
}

// Close implements Cache: it closes every connection.
func (r *Redis) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	if err := r.client.Close(); err != nil {
		return fmt.Errorf("closing redis client: %w", err)
	}
	return nil
}

// RouteClientLogs sends the Redis client library's own messages (by
// default it writes every failed dial to stderr) to log at debug level:
// the breaker already reports outages once. The library has one logger
// per process, so main calls this once at start.
func RouteClientLogs(log *slog.Logger) {
	redis.SetLogger(clientLog{log})
}

type clientLog struct{ log *slog.Logger }

func (l clientLog) Printf(ctx context.Context, format string, args ...any) {
	l.log.DebugContext(ctx, "redis client: "+fmt.Sprintf(format, args...))
}

// Shared runs fn with the client and the key prefix, through the breaker
// and within the timeout like every operation here, for a package that
// keeps data of its own in the fleet's Redis (DMARC report aggregates).
// Its keys must start with prefix.
func (r *Redis) Shared(ctx context.Context, op string, fn func(ctx context.Context, c redis.UniversalClient, prefix string) error) error {
	return r.run(ctx, op, "", func(ctx context.Context) error { return fn(ctx, r.client, r.prefix) })
}
