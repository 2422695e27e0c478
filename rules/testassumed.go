package rules

import (
	"context"
	"net/netip"

	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/checks/iprev"
	"github.com/mailward/mailward/policy"
)

// assumedChecks is a policy.Checker that returns what a test says the
// checks found, so rules are tested against stated check results. The
// results stand in Results; reverse DNS is made from what the test
// says of it, and the lists answer for the client's address.
type assumedChecks struct {
	policy.Given
	iprevSet bool
	ptr      string
	fcrdns   bool
	iprev    string
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
	out := make([]dnsbl.Result, len(c.DNSBL))
	for i, d := range c.DNSBL {
		d.Query = ip.String()
		out[i] = d
	}
	return r, out
}
