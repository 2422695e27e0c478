package journal

import (
	"context"
	"net/netip"
	"slices"

	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/checks/iprev"
	"github.com/mailward/mailward/policy"
)

// recorded is a policy.Checker that answers with the results a journal
// line holds: a replay asks no DNS server and reads no message. One
// serves one transaction. What is not here answers as policy.Given does.
type recorded struct {
	policy.Given
	// used marks the DNS list answers already handed out, so that a name
	// asked twice (HELO and sender domain alike) gets its answers once,
	// as the engine recorded them.
	used []bool
}

func newRecorded(c *checked) *recorded {
	return &recorded{Given: policy.Given{Results: c.res}, used: make([]bool, len(c.res.DNSBL))}
}

func (r *recorded) take(match func(q string) bool) []dnsbl.Result {
	var out []dnsbl.Result
	for i, d := range r.DNSBL {
		if !r.used[i] && match(d.Query) {
			r.used[i] = true
			out = append(out, d)
		}
	}
	return out
}

func (r *recorded) Client(_ context.Context, ip netip.Addr) (*iprev.Result, []dnsbl.Result) {
	s := ip.String()
	return r.IPRev, r.take(func(q string) bool { return q == "" || q == s })
}

func (r *recorded) Domains(_ context.Context, names ...string) []dnsbl.Result {
	return r.take(func(q string) bool { return slices.Contains(names, q) })
}
