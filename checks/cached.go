package checks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/checks/iprev"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/checks/spf"
	"github.com/mailward/mailward/checks/uribl"
	"github.com/mailward/mailward/policy"
)

// DefaultCacheTTL is how long a cached check result lives by default.
const DefaultCacheTTL = 10 * time.Minute

// CacheOptions tune Cached.
type CacheOptions struct {
	// MaxTTL is how long a result is kept at most; 0 means
	// DefaultCacheTTL. A result is kept no longer than the smallest TTL
	// of the DNS answers it was made from.
	MaxTTL time.Duration
	// Scope names the checks' configuration, so that results made under
	// another (other lists, other SPF limits) are not reused: pass
	// ConfigScope(cfg). Processes sharing a cache share results only
	// within one scope.
	Scope string
}

// ConfigScope is a short digest of what in cfg changes check results.
func ConfigScope(cfg Config) string {
	cfg.DNS = Config{}.DNS // the resolvers do not change answers
	data, err := json.Marshal(cfg)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:6])
}

// Cached runs inner's connection and envelope checks through c: SPF by
// (client IP, sender domain, HELO), SPF for HELO by (IP, HELO), reverse
// DNS with the IP lists by IP, domain lists by the names asked. Results
// are JSON under versioned keys ("check:v1:..."). A result with any DNS
// error (temperror, a failed list look-up) is never stored: the cache
// must not turn a temporary failure into a lasting verdict. Cache errors
// mean the check runs uncached. Message verification is not cached.
func Cached(inner policy.Checker, c cache.Cache, opts CacheOptions) policy.Checker {
	if opts.MaxTTL <= 0 {
		opts.MaxTTL = DefaultCacheTTL
	}
	return &cached{inner: inner, c: c, ttl: opts.MaxTTL, prefix: "check:v1:" + opts.Scope + ":"}
}

type cached struct {
	inner  policy.Checker
	c      cache.Cache
	ttl    time.Duration
	prefix string
}

var _ policy.Checker = (*cached)(nil)

// clientResult is what Client returns, as stored.
type clientResult struct {
	IPRev *iprev.Result  `json:"iprev"`
	DNSBL []dnsbl.Result `json:"dnsbl"`
}

func (k *cached) Client(ctx context.Context, ip netip.Addr) (*iprev.Result, []dnsbl.Result) {
	key := k.prefix + "client:" + ip.String()
	if r, ok := load[clientResult](ctx, k, key); ok {
		r = r.clone()
		return r.IPRev, r.DNSBL
	}
	var r clientResult
	tctx, ttls := resolver.WithTTLs(ctx)
	r.IPRev, r.DNSBL = k.inner.Client(tctx, ip)
	if (r.IPRev == nil || r.IPRev.Result != "temperror") && listsOK(r.DNSBL) && ctx.Err() == nil {
		k.store(ctx, key, r.clone(), ttls)
	}
	return r.IPRev, r.DNSBL
}

// clone copies what the memory cache would otherwise share between
// transactions.
func (r clientResult) clone() clientResult {
	if r.IPRev != nil {
		x := *r.IPRev
		r.IPRev = &x
	}
	r.DNSBL = slices.Clone(r.DNSBL)
	return r
}

func (k *cached) Domains(ctx context.Context, names ...string) []dnsbl.Result {
	if len(names) == 0 {
		return k.inner.Domains(ctx, names...)
	}
	norm := make([]string, len(names))
	for i, n := range names {
		norm[i] = strings.ToLower(strings.TrimSuffix(n, "."))
	}
	slices.Sort(norm)
	key := k.prefix + "domains:" + strings.Join(norm, ",")
	if r, ok := load[[]dnsbl.Result](ctx, k, key); ok {
		return slices.Clone(r)
	}
	tctx, ttls := resolver.WithTTLs(ctx)
	r := k.inner.Domains(tctx, names...)
	if listsOK(r) && ctx.Err() == nil {
		k.store(ctx, key, slices.Clone(r), ttls)
	}
	return r
}

// URLs caches the URI lists' answers by the names asked, in order (each
// list is asked about the first few), as a digest: a message's links can
// make a long key.
func (k *cached) URLs(ctx context.Context, urls []policy.URL) []uribl.Result {
	names := uriNames(urls)
	if s, ok := k.inner.(*Suite); len(names) == 0 || (ok && s.uris == nil) {
		// Nothing to ask: no round trip to the cache for it.
		return k.inner.URLs(ctx, urls)
	}
	h := sha256.New()
	seen := map[string]bool{}
	for _, n := range names {
		if n = strings.ToLower(strings.TrimSuffix(n, ".")); !seen[n] {
			seen[n] = true
			h.Write([]byte(n + "\n"))
		}
	}
	sum := h.Sum(nil)
	key := k.prefix + "uribl:" + hex.EncodeToString(sum[:16])
	if r, ok := load[[]uribl.Result](ctx, k, key); ok {
		return slices.Clone(r)
	}
	tctx, ttls := resolver.WithTTLs(ctx)
	r := k.inner.URLs(tctx, urls)
	if listsOK(r) && ctx.Err() == nil {
		k.store(ctx, key, slices.Clone(r), ttls)
	}
	return r
}

func (k *cached) SPFHelo(ctx context.Context, ip netip.Addr, helo string) *spf.Result {
	key := k.prefix + "spfhelo:" + ip.String() + ":" + strings.ToLower(helo)
	return k.spf(ctx, key, func(ctx context.Context) *spf.Result { return k.inner.SPFHelo(ctx, ip, helo) })
}

func (k *cached) SPF(ctx context.Context, ip netip.Addr, helo, sender string) *spf.Result {
	domain := policy.DomainOf(sender)
	if domain == "" {
		// The null sender is checked as postmaster@helo.
		domain = "@" + strings.ToLower(helo)
	}
	key := k.prefix + "spf:" + ip.String() + ":" + domain + ":" + strings.ToLower(helo)
	return k.spf(ctx, key, func(ctx context.Context) *spf.Result { return k.inner.SPF(ctx, ip, helo, sender) })
}

func (k *cached) spf(ctx context.Context, key string, run func(context.Context) *spf.Result) *spf.Result {
	if r, ok := load[spf.Result](ctx, k, key); ok {
		return &r
	}
	tctx, ttls := resolver.WithTTLs(ctx)
	res := run(tctx)
	if res != nil && res.Result != "temperror" && ctx.Err() == nil {
		k.store(ctx, key, *res, ttls)
	}
	return res
}

// Message is not cached: the verdict cache in policy covers whole messages.
func (k *cached) Message() policy.MessageVerifier { return k.inner.Message() }

// load reads key; false on a miss or any trouble. From the memory cache
// it takes the value as stored, with no decoding.
func load[T any](ctx context.Context, k *cached, key string) (T, bool) {
	var v T
	if d, ok := k.c.(cache.Decoded); ok {
		if x, ok, err := d.GetValue(ctx, key); err == nil && ok {
			if v, ok := x.(T); ok {
				return v, true
			}
		}
	}
	data, ok, err := k.c.Get(ctx, key)
	if err != nil || !ok {
		return v, false
	}
	return v, json.Unmarshal(data, &v) == nil
}

// store keeps v for the configured TTL, or less if a DNS answer it was
// made from expires sooner.
func (k *cached) store(ctx context.Context, key string, v any, ttls *resolver.TTLs) {
	ttl := k.ttl
	if d, ok := ttls.Min(); ok {
		ttl = min(ttl, d)
	}
	if ttl < time.Second {
		return // an answer not to be cached makes a result not to be cached
	}
	data, err := json.Marshal(v)
	if err != nil {
		return
	}
	// A result not kept is looked up again.
	if d, ok := k.c.(cache.Decoded); ok {
		_ = d.SetValue(ctx, key, data, v, ttl)
		return
	}
	_ = k.c.Set(ctx, key, data, ttl)
}

// listsOK reports whether every list look-up got an answer.
func listsOK(rs []dnsbl.Result) bool {
	for _, r := range rs {
		if r.Error != "" {
			return false
		}
	}
	return true
}
