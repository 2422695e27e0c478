package journal

import (
	"context"
	"net/netip"
	"slices"

	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/dmarc"
	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/checks/iprev"
	"github.com/mailward/mailward/checks/spf"
	"github.com/mailward/mailward/checks/uribl"
	"github.com/mailward/mailward/policy"
)

// recorded is a policy.Checker that answers with the results a journal
// line holds: a replay asks no DNS server and reads no message. One
// serves one transaction.
type recorded struct {
	c *checked
	// used marks the DNS list answers already handed out, so that a name
	// asked twice (HELO and sender domain alike) gets its answers once,
	// as the engine recorded them.
	used []bool
}

func newRecorded(c *checked) *recorded { return &recorded{c: c, used: make([]bool, len(c.res.DNSBL))} }

func (r *recorded) take(match func(q string) bool) []dnsbl.Result {
	var out []dnsbl.Result
	for i, d := range r.c.res.DNSBL {
		if !r.used[i] && match(d.Query) {
			r.used[i] = true
			out = append(out, d)
		}
	}
	return out
}

func (r *recorded) Client(_ context.Context, ip netip.Addr) (*iprev.Result, []dnsbl.Result) {
	s := ip.String()
	return r.c.res.IPRev, r.take(func(q string) bool { return q == "" || q == s })
}

func (r *recorded) Domains(_ context.Context, names ...string) []dnsbl.Result {
	return r.take(func(q string) bool { return slices.Contains(names, q) })
}

func (r *recorded) URLs(context.Context, []policy.URL) []uribl.Result { return r.c.res.URIBL }

func (r *recorded) SPFHelo(context.Context, netip.Addr, string) *spf.Result { return r.c.res.SPFHelo }

func (r *recorded) SPF(context.Context, netip.Addr, string, string) *spf.Result { return r.c.res.SPF }

func (r *recorded) Message() policy.MessageVerifier { return recordedMessage{r.c} }

type recordedMessage struct{ c *checked }

func (recordedMessage) Write(p []byte) (int, error) { return len(p), nil }

func (m recordedMessage) Finish(context.Context, *spf.Result) ([]dkim.Result, *dmarc.Result) {
	return m.c.res.DKIM, m.c.res.DMARC
}

func (recordedMessage) Close() {}
