package reports

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"

	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailward/mailward/cache"
)

// Defaults of a Redis store.
const (
	// DefaultKeep is how long an aggregate waits, after its period ended,
	// for an instance to report it before Redis lets it expire.
	DefaultKeep = 7 * 24 * time.Hour
	// DefaultLockTTL bounds how long a report's lock outlives an instance
	// that died holding it.
	DefaultLockTTL = 10 * time.Minute
	// scanCount is how many fields one HSCAN asks for, so that no single
	// operation outlasts the cache timeout on a large report.
	scanCount = 1000
)

// Every key shares the hash tag {dmarc}: Redis Cluster keeps them in one
// slot, so that one script may touch a report's hash and its indexes.
const (
	keyPeriods = "{dmarc}:periods"  // set of period begins (unix seconds)
	keyDomains = "{dmarc}:domains:" // + begin: set of the period's policy domains
	keyAgg     = "{dmarc}:agg:"     // + begin:domain: hash of row JSON → count, "policy", "passed"
	keySent    = "{dmarc}:sent:"    // + begin:domain: the report was done
	keyLock    = "{dmarc}:lock:"    // + begin:domain: the instance building it
	keyRows    = "{dmarc}:rows"     // hash of day → rows held, for the total bound
	fieldPol   = "policy"
	fieldPass  = "passed"
)

// addScript counts one row in one atomic step, within the bounds, and
// refuses a period already reported (a late message). KEYS[5] is the
// store's row count, a hash of day (of the period's begin, unix days) →
// rows: a day whose every key has expired (day < ARGV[10]) is dropped
// from it, so that the count expires with the rows it counts.
var addScript = redis.NewScript(`
local agg, doms, periods, sent, rows = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local maxRows, maxDoms, ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[4])
local day, maxTotal, cutoff = ARGV[9], tonumber(ARGV[11]), tonumber(ARGV[10])
if redis.call('EXISTS', sent) == 1 then return 2 end
if redis.call('SISMEMBER', doms, ARGV[7]) == 0 and redis.call('SCARD', doms) >= maxDoms then return 0 end
if redis.call('HEXISTS', agg, ARGV[1]) == 0 then
  if redis.call('HLEN', agg) >= maxRows + 2 then return 0 end
  local counts, total = redis.call('HGETALL', rows), 0
  for i = 1, #counts, 2 do
    if tonumber(counts[i]) < cutoff then
      redis.call('HDEL', rows, counts[i])
    else
      total = total + tonumber(counts[i+1])
    end
  end
  if total >= maxTotal then return 3 end
  redis.call('HINCRBY', rows, day, 1)
  if redis.call('PTTL', rows) < ttl then redis.call('PEXPIRE', rows, ttl) end
end
redis.call('HINCRBY', agg, ARGV[1], 1)
redis.call('HSET', agg, 'policy', ARGV[2])
redis.call('HINCRBY', agg, 'passed', ARGV[3])
redis.call('SADD', doms, ARGV[7])
redis.call('SADD', periods, ARGV[8])
redis.call('PEXPIRE', agg, ttl)
redis.call('PEXPIRE', doms, ttl)
redis.call('PEXPIRE', periods, ttl)
return 1
`)

// uncountScript takes an aggregate's rows off the store's row count
// before the aggregate is deleted, in the same transaction: KEYS are
// the aggregate and the count, ARGV[1] the day of its period.
var uncountScript = redis.NewScript(`
local agg, rows, day = KEYS[1], KEYS[2], ARGV[1]
local n = redis.call('HLEN', agg) - redis.call('HEXISTS', agg, 'policy') - redis.call('HEXISTS', agg, 'passed')
local have = tonumber(redis.call('HGET', rows, day) or '0')
if n <= 0 or have == 0 then return 0 end
if have <= n then redis.call('HDEL', rows, day) else redis.call('HINCRBY', rows, day, -n) end
return n
`)

// undoScript puts a report's aggregate back and takes its done mark
// away: ARGV holds ttl, domain, begin, policy, passed, day, then row,
// count pairs. The rows it puts back are counted again, past the total
// bound if need be: they were held before.
var undoScript = redis.NewScript(`
local agg, doms, periods, sent, rows = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local ttl = tonumber(ARGV[1])
redis.call('DEL', sent)
redis.call('HSET', agg, 'policy', ARGV[4])
redis.call('HINCRBY', agg, 'passed', ARGV[5])
local added = 0
for i = 7, #ARGV, 2 do
  if redis.call('HEXISTS', agg, ARGV[i]) == 0 then added = added + 1 end
  redis.call('HINCRBY', agg, ARGV[i], ARGV[i+1])
end
if added > 0 then
  redis.call('HINCRBY', rows, ARGV[6], added)
  if redis.call('PTTL', rows) < ttl then redis.call('PEXPIRE', rows, ttl) end
end
redis.call('SADD', doms, ARGV[2])
redis.call('SADD', periods, ARGV[3])
redis.call('PEXPIRE', agg, ttl)
redis.call('PEXPIRE', doms, ttl)
redis.call('PEXPIRE', periods, ttl)
return 1
`)

// releaseScript deletes the lock only if it is still ours.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// RedisConfig sets up a Redis store.
type RedisConfig struct {
	Interval   time.Duration
	MaxRows    int
	MaxDomains int
	// MaxTotalRows bounds the rows held over every period and domain of
	// the store's key prefix, shared by the fleet; 0 takes MaxTotalRows.
	MaxTotalRows int
	// Keep and LockTTL: 0 takes DefaultKeep and DefaultLockTTL.
	Keep    time.Duration
	LockTTL time.Duration
	Log     *slog.Logger
}

// Redis is the Store of a fleet: every instance adds to the same
// aggregates in the cache's Redis, and a lock per report lets exactly
// one build and send it.
type Redis struct {
	rc      *cache.Redis
	cfg     RedisConfig
	log     *slog.Logger
	dropped atomic.Int64
	now     func() time.Time
}

// NewRedis keeps the aggregates in rc, the cache's Redis.
func NewRedis(rc *cache.Redis, cfg RedisConfig) *Redis {
	if cfg.MaxRows <= 0 {
		cfg.MaxRows = DefaultMaxRows
	}
	if cfg.MaxDomains <= 0 {
		cfg.MaxDomains = DefaultMaxDomains
	}
	if cfg.MaxTotalRows <= 0 {
		cfg.MaxTotalRows = MaxTotalRows
	}
	if cfg.Keep <= 0 {
		cfg.Keep = DefaultKeep
	}
	if cfg.LockTTL <= 0 {
		cfg.LockTTL = DefaultLockTTL
	}
	r := &Redis{rc: rc, cfg: cfg, log: cfg.Log, now: time.Now}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	return r
}

func keyOf(k Key) string {
	return strconv.FormatInt(k.Begin.Unix(), 10) + ":" + k.Domain
}

// ttl is how long a key of the period beginning at begin lives from now:
// until Keep after its end.
func (r *Redis) ttl(begin time.Time, extra time.Duration) time.Duration {
	return max(time.Second, periodEnd(begin, r.cfg.Interval).Add(r.cfg.Keep+extra).Sub(r.now()))
}

// dayOf names the row count's bucket of the period beginning at begin.
func dayOf(begin time.Time) string {
	return strconv.FormatInt(begin.Unix()/86400, 10)
}

// liveDays is the first day of the row count whose periods' keys may
// not have expired yet: a day's last period ends when the day does and
// its keys live Keep longer.
func (r *Redis) liveDays() int64 {
	return r.now().Add(-r.cfg.Keep-24*time.Hour).Unix()/86400 + 1
}

// Add implements Store.
func (r *Redis) Add(ctx context.Context, t time.Time, o Observation) error {
	row, err := json.Marshal(o.Row)
	if err != nil {
		return fmt.Errorf("encoding a report row: %w", err)
	}
	pol, err := json.Marshal(o.Policy)
	if err != nil {
		return fmt.Errorf("encoding a report policy: %w", err)
	}
	begin := PeriodStart(t, r.cfg.Interval)
	k := Key{Begin: begin, Domain: o.Policy.Domain}
	b := strconv.FormatInt(begin.Unix(), 10)
	passed := 0
	if o.Passed {
		passed = 1
	}
	var res int64
	err = r.rc.Shared(ctx, "dmarc report add", func(ctx context.Context, c redis.UniversalClient, p string) error {
		var err error
		res, err = addScript.Run(ctx, c, []string{p + keyAgg + keyOf(k), p + keyDomains + b, p + keyPeriods, p + keySent + keyOf(k), p + keyRows},
			row, pol, passed, r.ttl(begin, 0).Milliseconds(), r.cfg.MaxRows, r.cfg.MaxDomains, o.Policy.Domain, b,
			dayOf(begin), r.liveDays(), r.cfg.MaxTotalRows).Int64()
		return err
	})
	switch {
	case err != nil:
		r.dropped.Add(1)
		return fmt.Errorf("adding to the DMARC report of %s: %w", o.Policy.Domain, err)
	case res == 0 || res == 3:
		// res 3: the store's total bound, against a flood of forged
		// From domains that the per-report bounds would let fill Redis.
		r.dropped.Add(1)
		return ErrBound
	case res == 2:
		// Its period was reported already: too late to count.
		r.dropped.Add(1)
		return nil
	}
	return nil
}

// Ended implements Store.
func (r *Redis) Ended(ctx context.Context, now time.Time) ([]Key, error) {
	var begins []string
	err := r.rc.Shared(ctx, "dmarc report periods", func(ctx context.Context, c redis.UniversalClient, p string) error {
		var err error
		begins, err = c.SMembers(ctx, p+keyPeriods).Result()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing DMARC report periods: %w", err)
	}
	var keys []Key
	for _, b := range sortedBegins(begins) {
		if periodEnd(b, r.cfg.Interval).After(now) {
			continue
		}
		ks, err := r.domains(ctx, b)
		if err != nil {
			return keys, err
		}
		keys = append(keys, ks...)
	}
	return keys, nil
}

// domains lists the period's policy domains; a period none are left of
// is taken off the list.
func (r *Redis) domains(ctx context.Context, begin time.Time) ([]Key, error) {
	b := strconv.FormatInt(begin.Unix(), 10)
	var names []string
	err := r.rc.Shared(ctx, "dmarc report domains", func(ctx context.Context, c redis.UniversalClient, p string) error {
		var err error
		names, err = c.SMembers(ctx, p+keyDomains+b).Result()
		if err == nil && len(names) == 0 {
			err = c.SRem(ctx, p+keyPeriods, b).Err()
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing the DMARC reports of the period %s: %w", begin.Format(time.RFC3339), err)
	}
	keys := make([]Key, 0, len(names))
	for _, n := range sortedStrings(names) {
		keys = append(keys, Key{Begin: begin, Domain: n})
	}
	return keys, nil
}

// Claim implements Store with SET NX PX and a random token; a report
// already done is cleaned up and refused.
func (r *Redis) Claim(ctx context.Context, k Key) (func(), bool, error) {
	var tok [16]byte
	rand.Read(tok[:])
	token := hex.EncodeToString(tok[:])
	var ok, sent bool
	err := r.rc.Shared(ctx, "dmarc report lock", func(ctx context.Context, c redis.UniversalClient, p string) error {
		var err error
		ok, err = c.SetNX(ctx, p+keyLock+keyOf(k), token, r.cfg.LockTTL).Result()
		if err != nil || !ok {
			return err
		}
		n, err := c.Exists(ctx, p+keySent+keyOf(k)).Result()
		sent = n == 1
		return err
	})
	release := func() {
		// Released even when the caller's context has ended.
		ctx := context.WithoutCancel(ctx)
		err := r.rc.Shared(ctx, "dmarc report unlock", func(ctx context.Context, c redis.UniversalClient, p string) error {
			return releaseScript.Run(ctx, c, []string{p + keyLock + keyOf(k)}, token).Err()
		})
		if err != nil {
			r.log.Warn("DMARC report lock not released; it expires", "policy_domain", k.Domain, "err", err)
		}
	}
	if err != nil {
		if ok {
			release()
		}
		return nil, false, fmt.Errorf("locking the DMARC report of %s: %w", k.Domain, err)
	}
	if !ok {
		return nil, false, nil
	}
	if sent {
		// Done already (by another instance): what is left is cleaned up.
		err := r.forget(ctx, k)
		release()
		return nil, false, err
	}
	return release, true, nil
}

// Load implements Store, a scan at a time.
func (r *Redis) Load(ctx context.Context, k Key) (*Domain, error) {
	d := &Domain{Begin: k.Begin.UTC(), Rows: map[string]int64{}}
	var cursor uint64
	seen := false
	for {
		var fields []string
		err := r.rc.Shared(ctx, "dmarc report load", func(ctx context.Context, c redis.UniversalClient, p string) error {
			var err error
			fields, cursor, err = c.HScan(ctx, p+keyAgg+keyOf(k), cursor, "", scanCount).Result()
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("loading the DMARC report of %s: %w", k.Domain, err)
		}
		for i := 0; i+1 < len(fields); i += 2 {
			f, v := fields[i], fields[i+1]
			seen = true
			switch f {
			case fieldPol:
				if err := json.Unmarshal([]byte(v), &d.Policy); err != nil {
					return nil, fmt.Errorf("reading the stored policy of %s: %w", k.Domain, err)
				}
			case fieldPass:
				d.Passed, _ = strconv.ParseInt(v, 10, 64)
			default:
				if len(d.Rows) >= r.cfg.MaxRows {
					continue
				}
				n, err := strconv.ParseInt(v, 10, 64)
				if err == nil && n > 0 {
					d.Rows[f] = n
				}
			}
		}
		if cursor == 0 {
			break
		}
	}
	if !seen {
		return nil, nil
	}
	if d.Policy.Domain == "" {
		d.Policy.Domain = k.Domain
	}
	return d, nil
}

// Done implements Store: the mark outlives the aggregate's keys, so
// that a late message cannot make the report again. Mark and deletion are
// one transaction: a mark set without the deletion would make the next
// Claim forget a report the Reporter left for later because Done failed.
func (r *Redis) Done(ctx context.Context, k Key) error {
	b := strconv.FormatInt(k.Begin.Unix(), 10)
	err := r.rc.Shared(ctx, "dmarc report done", func(ctx context.Context, c redis.UniversalClient, p string) error {
		_, err := c.TxPipelined(ctx, func(tx redis.Pipeliner) error {
			tx.Set(ctx, p+keySent+keyOf(k), "1", r.ttl(k.Begin, 24*time.Hour))
			uncountScript.Eval(ctx, tx, []string{p + keyAgg + keyOf(k), p + keyRows}, dayOf(k.Begin))
			tx.Del(ctx, p+keyAgg+keyOf(k))
			tx.SRem(ctx, p+keyDomains+b, k.Domain)
			return nil
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("marking the DMARC report of %s done: %w", k.Domain, err)
	}
	return nil
}

// Undo implements Store.
func (r *Redis) Undo(ctx context.Context, k Key, d *Domain) error {
	pol, err := json.Marshal(d.Policy)
	if err != nil {
		return fmt.Errorf("encoding a report policy: %w", err)
	}
	b := strconv.FormatInt(k.Begin.Unix(), 10)
	args := []any{r.ttl(k.Begin, 0).Milliseconds(), k.Domain, b, pol, d.Passed, dayOf(k.Begin)}
	for row, n := range d.Rows {
		args = append(args, row, n)
	}
	err = r.rc.Shared(ctx, "dmarc report undo", func(ctx context.Context, c redis.UniversalClient, p string) error {
		return undoScript.Run(ctx, c, []string{p + keyAgg + keyOf(k), p + keyDomains + b, p + keyPeriods, p + keySent + keyOf(k), p + keyRows}, args...).Err()
	})
	if err != nil {
		return fmt.Errorf("keeping the DMARC report of %s for later: %w", k.Domain, err)
	}
	return nil
}

// forget deletes k's aggregate and takes it off its period's list.
func (r *Redis) forget(ctx context.Context, k Key) error {
	b := strconv.FormatInt(k.Begin.Unix(), 10)
	err := r.rc.Shared(ctx, "dmarc report forget", func(ctx context.Context, c redis.UniversalClient, p string) error {
		_, err := c.TxPipelined(ctx, func(tx redis.Pipeliner) error {
			uncountScript.Eval(ctx, tx, []string{p + keyAgg + keyOf(k), p + keyRows}, dayOf(k.Begin))
			tx.Del(ctx, p+keyAgg+keyOf(k))
			tx.SRem(ctx, p+keyDomains+b, k.Domain)
			return nil
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("deleting the DMARC report aggregate of %s: %w", k.Domain, err)
	}
	return nil
}

// Current implements Store.
func (r *Redis) Current(ctx context.Context) ([]*Domain, error) {
	keys, err := r.Ended(ctx, time.Unix(1<<40, 0))
	if err != nil {
		return nil, err
	}
	var out []*Domain
	for _, k := range keys {
		d, err := r.Load(ctx, k)
		if err != nil {
			return out, err
		}
		if d != nil {
			out = append(out, d)
		}
	}
	return out, nil
}

// End implements Store.
func (r *Redis) End(begin time.Time) time.Time { return periodEnd(begin, r.cfg.Interval) }

// Dropped implements Store.
func (r *Redis) Dropped() int64 { return r.dropped.Load() }

// Close implements Store; the cache owns the client.
func (r *Redis) Close() error { return nil }
