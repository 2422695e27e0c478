package resolver

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/miekg/dns"
)

// Shared is a cache several mailward processes share (the cache package's
// Redis or memory cache). TXT answers — SPF and DMARC records, DKIM keys —
// are kept there by their DNS TTL, so a fleet looks each one up once per
// TTL rather than once per process.
type Shared interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
}

// SetShared makes r use s for TXT answers. Call it before the first query.
func (r *Resolver) SetShared(s Shared) { r.shared = s }

// sharedAnswer is an outcome as stored in the shared cache; the key's
// version changes with this format.
type sharedAnswer struct {
	RRs     []string `json:"rrs,omitempty"`
	Expires int64    `json:"exp"` // unix seconds: the remaining TTL is derived from it
	AD      bool     `json:"ad,omitempty"`
	Chase   string   `json:"chase,omitempty"`
	Kind    string   `json:"kind,omitempty"` // nxdomain or nodata
}

func sharedKey(k cacheKey) string { return "dns:v1:" + dns.TypeToString[k.qtype] + ":" + k.name }

// fromShared returns a stored answer that has not expired. Any trouble
// with the shared cache means asking DNS instead.
func (r *Resolver) fromShared(ctx context.Context, k cacheKey) (outcome, bool) {
	if r.shared == nil || k.qtype != dns.TypeTXT {
		return outcome{}, false
	}
	b, ok, err := r.shared.Get(ctx, sharedKey(k))
	if err != nil || !ok {
		return outcome{}, false
	}
	var sa sharedAnswer
	if json.Unmarshal(b, &sa) != nil {
		return outcome{}, false
	}
	left := sa.Expires - r.now().Unix()
	if left <= 0 {
		return outcome{}, false
	}
	out := outcome{ttl: uint32(left), ad: sa.AD, chase: sa.Chase}
	switch sa.Kind {
	case "nxdomain":
		out.kind = ErrNXDomain
	case "nodata":
		out.kind = ErrNoData
	}
	for _, s := range sa.RRs {
		rr, err := dns.NewRR(s)
		if err != nil || rr == nil {
			return outcome{}, false
		}
		out.rrs = append(out.rrs, rr)
	}
	return out, true
}

// toShared stores an answer DNS gave; only answers, never failures.
func (r *Resolver) toShared(ctx context.Context, k cacheKey, out outcome) {
	if r.shared == nil || k.qtype != dns.TypeTXT || out.ttl == 0 {
		return
	}
	if entrySize(k, out) > maxCachedAnswer {
		return // as in the local cache: the sender's, and too big to keep
	}
	ttl := min(time.Duration(out.ttl)*time.Second, maxTTL)
	sa := sharedAnswer{Expires: r.now().Add(ttl).Unix(), AD: out.ad, Chase: out.chase}
	switch {
	case errors.Is(out.kind, ErrNXDomain):
		sa.Kind = "nxdomain"
	case errors.Is(out.kind, ErrNoData):
		sa.Kind = "nodata"
	}
	for _, rr := range out.rrs {
		sa.RRs = append(sa.RRs, rr.String())
	}
	b, err := json.Marshal(sa)
	if err != nil {
		return
	}
	r.shared.Set(ctx, sharedKey(k), b, ttl)
}
