package rules

import (
	"context"
	"net/netip"

	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/dmarc"
	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/checks/iprev"
	"github.com/mailward/mailward/checks/spf"
	"github.com/mailward/mailward/checks/uribl"
	"github.com/mailward/mailward/policy"
)

// assumedChecks is a policy.Checker that returns what a test says the
// checks found, so rules are tested against stated check results.
type assumedChecks struct {
	iprevSet bool
	ptr      string
	fcrdns   bool
	iprev    string
	dnsbl    []dnsbl.Result
	uribl    []uribl.Result
	spfHelo  *spf.Result
	spf      *spf.Result
	dkim     []dkim.Result
	dmarc    *dmarc.Result
}

func (c *assumedChecks) Client(_ context.Context, ip netip.Addr) (*iprev.Result, []dnsbl.Result) {
	var r *iprev.Result
	if c.iprevSet {
		r = &iprev.Result{Result: c.iprev, PTR: c.ptr, FCrDNS: c.fcrdns}
		if c.ptr != "" {
			r.Names = []string{c.ptr}
		}
		if r.Result == "" {
			r.Result = "fail"
			if c.fcrdns {
				r.Result = "pass"
			}
		}
	}
	out := make([]dnsbl.Result, len(c.dnsbl))
	for i, d := range c.dnsbl {
		d.Query = ip.String()
		out[i] = d
	}
	return r, out
}

func (c *assumedChecks) Domains(context.Context, ...string) []dnsbl.Result { return nil }

func (c *assumedChecks) URLs(context.Context, []policy.URL) []uribl.Result { return c.uribl }

func (c *assumedChecks) SPFHelo(context.Context, netip.Addr, string) *spf.Result { return c.spfHelo }

func (c *assumedChecks) SPF(context.Context, netip.Addr, string, string) *spf.Result { return c.spf }

func (c *assumedChecks) Message() policy.MessageVerifier { return assumedMessage{c} }

type assumedMessage struct{ c *assumedChecks }

func (m assumedMessage) Write(p []byte) (int, error) { return len(p), nil }

func (m assumedMessage) Finish(context.Context, *spf.Result) ([]dkim.Result, *dmarc.Result) {
	return m.c.dkim, m.c.dmarc
}

func (m assumedMessage) Close() {}
