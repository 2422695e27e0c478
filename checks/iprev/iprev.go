// Package iprev checks the client's reverse DNS: the PTR names of its
// address, and whether one of them resolves back to it (forward-confirmed
// reverse DNS, RFC 8601 section 3 "iprev").
package iprev

import (
	"context"
	"net/netip"
	"strings"
	"sync"

	"github.com/miekg/dns"

	"github.com/mailward/mailward/checks/resolver"
)

// Options tune a Checker.
type Options struct {
	// MaxNames is how many PTR names are looked up forward; 0 means 10.
	MaxNames int
}

// Checker runs the iprev check. It is safe for concurrent use.
type Checker struct {
	r   *resolver.Resolver
	max int
}

// DefaultMaxNames is what a zero Options.MaxNames takes.
const DefaultMaxNames = 10

// New returns a Checker that looks things up through r.
func New(r *resolver.Resolver, opts Options) *Checker {
	if opts.MaxNames <= 0 {
		opts.MaxNames = DefaultMaxNames
	}
	return &Checker{r: r, max: opts.MaxNames}
}

// Check looks up ip's PTR names and confirms them forward. Results, after
// RFC 8601 section 3:
//
//	pass       a PTR name has an address record equal to ip
//	fail       PTR names exist, but none resolves back to ip
//	permerror  no PTR records (NXDOMAIN or NODATA), or ip is not valid
//	temperror  the PTR look-up failed, or no name confirmed and a forward
//	           look-up failed (it might have confirmed)
func (c *Checker) Check(ctx context.Context, ip netip.Addr) *Result {
	if !ip.IsValid() {
		return &Result{Result: "permerror"}
	}
	ip = ip.Unmap()
	names, err := c.r.LookupAddr(ctx, ip)
	if err != nil {
		if resolver.IsNotFound(err) {
			return &Result{Result: "permerror"}
		}
		return &Result{Result: "temperror"}
	}
	for i, n := range names {
		names[i] = strings.ToLower(n)
	}
	res := &Result{Result: "fail", Names: names}
	if len(names) > 0 {
		res.PTR = names[0]
	}
	try := names
	if len(try) > c.max {
		try = try[:c.max]
	}
	qtype := dns.TypeA
	if ip.Is6() {
		qtype = dns.TypeAAAA
	}
	// Forward look-ups run at once; the first confirming name in PTR order wins.
	confirmed := make([]bool, len(try))
	temporary := make([]bool, len(try))
	var wg sync.WaitGroup
	for i, n := range try {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addrs, err := c.r.LookupAddrs(ctx, n, qtype)
			if err != nil {
				temporary[i] = resolver.IsTemporary(err)
				return
			}
			for _, a := range addrs {
				if a == ip {
					confirmed[i] = true
					return
				}
			}
		}()
	}
	wg.Wait()
	anyTemporary := false
	for i := range try {
		if confirmed[i] {
			res.Result, res.PTR, res.FCrDNS = "pass", try[i], true
			return res
		}
		anyTemporary = anyTemporary || temporary[i]
	}
	if anyTemporary {
		res.Result = "temperror"
	}
	return res
}
