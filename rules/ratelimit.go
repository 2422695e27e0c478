package rules

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/expr-lang/expr/ast"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/policy"
)

// RateLimitName is how rules call the function RateLimitFunc makes.
const RateLimitName = "ratelimit"

// RateLimitFunc makes ratelimit(key, limit, window) for rules: it takes
// one event from the rate limit named key in c (limit events per window,
// GCRA, see cache.Cache.Allow) and is true when the event is over the
// limit. So
//
//	when: ratelimit("ip:" + ip, 100, "1h")
//	action: tempfail
//
// refuses the 101st message from an address within the hour. Rules
// calling it run at mail or later (once per message; at rcpt once per
// recipient). The window takes Go's units plus d and w; a constant one is
// checked at load.
//
// When the cache cannot be used the function is false (no limit) and the
// failure is logged, at most once a minute, with a count: mail keeps flowing.
func RateLimitFunc(c cache.Cache, log *slog.Logger) Func {
	return CountedRateLimitFunc(c, log, &RateLimitCounts{})
}

// RateLimitCounts count what ratelimit() calls came to: under the limit,
// over it, or not applied because the cache could not answer.
type RateLimitCounts struct {
	Allowed, Limited, Unavailable atomic.Uint64
}

// CountedRateLimitFunc is RateLimitFunc counting its outcomes in counts,
// for metrics.
func CountedRateLimitFunc(c cache.Cache, log *slog.Logger, counts *RateLimitCounts) Func {
	if log == nil {
		log = slog.Default()
	}
	skipped := &counts.Unavailable
	var lastLog atomic.Int64
	return Func{
		Name:  RateLimitName,
		Types: []any{new(func(string, int, string) bool)},
		Stage: policy.StageMail,
		Fn: func(ctx context.Context, args ...any) (any, error) {
			key, _ := args[0].(string)
			limit, _ := args[1].(int)
			ws, _ := args[2].(string)
			window, err := parseWindow(ws)
			if err != nil {
				return false, err
			}
			if limit <= 0 {
				return false, fmt.Errorf("ratelimit %q: limit %d: want a positive number", key, limit)
			}
			if key == "" {
				return false, fmt.Errorf("ratelimit: empty key")
			}
			allowed, _, _, err := c.Allow(ctx, rateScope(ctx)+key, limit, window)
			if err != nil {
				n := skipped.Add(1)
				now := time.Now().UnixNano()
				if last := lastLog.Load(); now-last >= int64(errorLogEvery) && lastLog.CompareAndSwap(last, now) {
					log.Warn("rate limit not applied: cache unavailable", "key", key, "err", err.Error(), "skipped", n)
				}
				return false, nil
			}
			if allowed {
				counts.Allowed.Add(1)
			} else {
				counts.Limited.Add(1)
				if t, ok := ctx.Value(tripKey{}).(*trip); ok {
					t.what = fmt.Sprintf("rate limit %s over %d per %s", key, limit, ws)
				}
			}
			return !allowed, nil
		},
	}
}

// rateScopeKey marks a context whose rate limits count apart from every
// other's: each rule test starts with fresh counters.
type rateScopeKey struct{}

func withRateScope(ctx context.Context, scope string) context.Context {
	return context.WithValue(ctx, rateScopeKey{}, scope)
}

func rateScope(ctx context.Context) string {
	s, _ := ctx.Value(rateScopeKey{}).(string)
	return s
}

// parseWindow reads a rate window such as "1h" or "1d".
func parseWindow(s string) (time.Duration, error) {
	d, err := cache.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("ratelimit window %v", err)
	}
	if d <= 0 {
		return 0, fmt.Errorf("ratelimit window %q: want a positive duration such as 1h", s)
	}
	return d, nil
}

// checkRateLimit checks the constant arguments of a ratelimit call at load.
func (a *analyzer) checkRateLimit(n *ast.CallNode) {
	args := n.Arguments
	if len(args) == 4 {
		// The context may already have been put first.
		if id, ok := args[0].(*ast.IdentifierNode); ok && id.Value == ctxName {
			args = args[1:]
		}
	}
	if len(args) != 3 {
		return // the type checker says it
	}
	if l, ok := args[1].(*ast.IntegerNode); ok && l.Value <= 0 {
		a.errorf(l, "ratelimit limit %d: want a positive number of events", l.Value)
	}
	if w, ok := args[2].(*ast.StringNode); ok {
		if _, err := parseWindow(w.Value); err != nil {
			a.errorf(w, "%v", err)
		}
	}
}

// trip records, during one rule's evaluation, the rate limit that
// tripped, so that the verdict can name it.
type trip struct{ what string }

type tripKey struct{}
