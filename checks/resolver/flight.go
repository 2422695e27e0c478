package resolver

import (
	"context"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// flightGroup lets concurrent identical queries share one exchange.
type flightGroup struct {
	mu sync.Mutex
	m  map[cacheKey]*flight
}

type flight struct {
	done chan struct{}
	out  outcome
	err  error
}

// do runs fn once for key while it is in flight; every caller waits for
// that run or for its own context to end, whichever comes first.
func (g *flightGroup) do(ctx context.Context, key cacheKey, fn func() (outcome, error)) (outcome, error) {
	g.mu.Lock()
	f, ok := g.m[key]
	if !ok {
		if g.m == nil {
			g.m = make(map[cacheKey]*flight)
		}
		f = &flight{done: make(chan struct{})}
		g.m[key] = f
		go func() {
			f.out, f.err = fn()
			g.mu.Lock()
			delete(g.m, key)
			g.mu.Unlock()
			close(f.done)
		}()
	}
	g.mu.Unlock()
	select {
	case <-f.done:
		return f.out, f.err
	case <-ctx.Done():
		return outcome{}, &lookupError{name: strings.TrimSuffix(key.name, "."), qtype: dns.TypeToString[key.qtype], kind: ErrTimeout, cause: ctx.Err()}
	}
}
