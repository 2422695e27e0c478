// Package spf evaluates SPF (RFC 7208): check_host() for the MAIL FROM and
// HELO identities, with the explanation (exp=) of a fail, over the shared
// resolver.
package spf

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/mailward/mailward/checks/resolver"
)

// Options tune a Checker. Zero values pick the RFC's defaults.
type Options struct {
	// Hostname is the receiving host's name, for %{r} in explanations.
	Hostname string
	// Timeout bounds one whole evaluation (RFC 7208 section 4.6.4 asks
	// for at least 20 seconds); 0 means 20s. Past it the result is temperror.
	Timeout time.Duration
	// VoidLookupLimit is how many look-ups may find nothing before the
	// result is permerror; 0 means 2 (section 4.6.4), negative means no limit.
	VoidLookupLimit int
	// Now gives the time for %{t}; nil means time.Now.
	Now func() time.Time
}

const (
	lookupLimit  = 10 // DNS-querying terms per evaluation (section 4.6.4)
	mxLimit      = 10 // MX records per mx mechanism
	ptrLimit     = 10 // PTR names looked at
	maxNameLen   = 253
	defaultLimit = 20 * time.Second
)

// Checker evaluates SPF. It is safe for concurrent use.
type Checker struct {
	r    *resolver.Resolver
	opts Options
}

// The defaults zero Options fields take.
const (
	DefaultTimeout         = defaultLimit
	DefaultVoidLookupLimit = 2 // RFC 7208 section 4.6.4
)

// New returns a Checker that looks things up through r.
func New(r *resolver.Resolver, opts Options) *Checker {
	if opts.Timeout <= 0 {
		opts.Timeout = defaultLimit
	}
	if opts.VoidLookupLimit == 0 {
		opts.VoidLookupLimit = DefaultVoidLookupLimit
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Hostname == "" {
		opts.Hostname = "unknown"
	}
	return &Checker{r: r, opts: opts}
}

// CheckMailFrom checks the MAIL FROM identity. The null sender is checked
// as postmaster@helo (section 2.4); a sender without a local part gets
// "postmaster" (section 4.3).
func (c *Checker) CheckMailFrom(ctx context.Context, ip netip.Addr, helo, sender string) *Result {
	sender = strings.Trim(strings.TrimSpace(sender), "<>")
	helo = strings.TrimSpace(helo)
	local, domain := "postmaster", helo
	if sender != "" {
		if i := strings.LastIndexByte(sender, '@'); i >= 0 {
			local, domain = sender[:i], sender[i+1:]
			if local == "" {
				local = "postmaster"
			}
		} else {
			domain = sender
		}
	}
	return c.check(ctx, ip, helo, local, domain, "mailfrom")
}

// CheckHelo checks the HELO identity (section 2.3).
func (c *Checker) CheckHelo(ctx context.Context, ip netip.Addr, helo string) *Result {
	helo = strings.TrimSpace(helo)
	return c.check(ctx, ip, helo, "postmaster", helo, "helo")
}

func (c *Checker) check(ctx context.Context, ip netip.Addr, helo, local, domain, identity string) *Result {
	domain = strings.TrimSuffix(domain, ".")
	res := &Result{Domain: strings.ToLower(domain), Identity: identity}
	if !ip.IsValid() {
		res.Result, res.Reason = "permerror", "no valid client address"
		return res
	}
	if !validDomain(domain) {
		// Section 4.3: a malformed or single-label domain gives none, without a look-up.
		res.Result, res.Reason = "none", fmt.Sprintf("%q is not a valid domain name", domain)
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	e := newEval(c, ip, helo, local, domain)
	e.macros.validated = func(d string) string { return e.validatedName(ctx, d) }
	out := e.checkHost(ctx, domain, 0)
	res.Result, res.Reason = out.result, out.reason
	if out.result == "fail" && out.exp != nil {
		res.Explanation = e.explain(ctx, out.exp, out.expDomain)
	}
	return res
}

// validDomain is the section 4.3 test: labels of 1 to 63 printable
// characters, at least two of them, the last a valid top label.
func validDomain(d string) bool {
	d = strings.TrimSuffix(d, ".")
	if d == "" || len(d) > maxNameLen {
		return false
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return false
		}
		for i := 0; i < len(l); i++ {
			if l[i] <= 0x20 || l[i] > 0x7e {
				return false
			}
		}
	}
	return toplabel.MatchString(labels[len(labels)-1])
}

// eval is the state of one check_host() evaluation, shared by the records
// it recurses into: the look-up counters are for the whole evaluation.
type eval struct {
	c       *Checker
	ip      netip.Addr
	macros  macroValues
	lookups int
	voids   int

	ptrDone  bool
	ptrNames []string // validated names of ip (section 5.5)
	ptrErr   error
	ptrVoids int // forward look-ups of PTR names that found nothing
}

func newEval(c *Checker, ip netip.Addr, helo, local, domain string) *eval {
	ip = ip.Unmap() // an IPv4-mapped address is IPv4 (section 5)
	e := &eval{c: c, ip: ip}
	e.macros = macroValues{
		sender:       local + "@" + domain,
		local:        local,
		senderDomain: domain,
		helo:         helo,
		ipDotted:     dottedIP(ip),
		ipVersion:    "in-addr",
		client:       ip.String(),
		receiver:     c.opts.Hostname,
		timestamp:    strconv.FormatInt(c.opts.Now().Unix(), 10),
	}
	if ip.Is6() {
		e.macros.ipVersion = "ip6"
	}
	return e
}

// dottedIP is the i macro: IPv4 as is, IPv6 as 32 dot-separated nibbles.
func dottedIP(ip netip.Addr) string {
	if ip.Is4() {
		return ip.String()
	}
	b := ip.As16()
	var s strings.Builder
	for i, x := range b {
		if i > 0 {
			s.WriteByte('.')
		}
		fmt.Fprintf(&s, "%x.%x", x>>4, x&15)
	}
	return s.String()
}

// outcome is what check_host() found for one domain.
type outcome struct {
	result    string
	reason    string
	exp       macroString // exp= of the record that gave a fail
	expDomain string
}

func (e *eval) checkHost(ctx context.Context, domain string, depth int) outcome {
	txts, err := e.c.r.LookupTXT(ctx, domain)
	if err != nil {
		if resolver.IsNotFound(err) {
			return outcome{result: "none", reason: "no SPF record for " + domain}
		}
		return outcome{result: "temperror", reason: err.Error()}
	}
	var recs []string
	for _, t := range txts {
		if isSPFRecord(t) {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		return outcome{result: "none", reason: "no SPF record for " + domain}
	case 1:
	default:
		return outcome{result: "permerror", reason: "more than one SPF record for " + domain}
	}
	rec, err := parseRecord(recs[0])
	if err != nil {
		return outcome{result: "permerror", reason: fmt.Sprintf("%s: %v", domain, err)}
	}
	for _, d := range rec.directives {
		match, bad := e.match(ctx, d, domain, depth)
		if bad != nil {
			return *bad
		}
		if match {
			out := outcome{result: d.result, reason: fmt.Sprintf("%s matched %s", domain, d.term)}
			if d.result == "fail" {
				out.exp, out.expDomain = rec.exp, domain
			}
			return out
		}
	}
	if rec.redirect != nil {
		if bad := e.count(); bad != nil {
			return *bad
		}
		target := e.target(rec.redirect, domain)
		out := e.checkHost(ctx, target, depth+1)
		if out.result == "none" {
			// Section 6.1: a redirect to nothing is an error of the record.
			return outcome{result: "permerror", reason: fmt.Sprintf("%s: redirect=%s: %s", domain, target, out.reason)}
		}
		// The target's exp= applies, never the original's (section 6.2).
		return out
	}
	return outcome{result: "neutral", reason: domain + ": no mechanism matched"}
}

// count charges one DNS-querying term against the limit of 10.
func (e *eval) count() *outcome {
	e.lookups++
	if e.lookups > lookupLimit {
		return &outcome{result: "permerror", reason: fmt.Sprintf("more than %d DNS-querying terms", lookupLimit)}
	}
	return nil
}

// void counts a look-up that found nothing (NXDOMAIN or NODATA).
func (e *eval) void(err error) *outcome {
	if !resolver.IsNotFound(err) {
		return nil
	}
	return e.addVoid()
}

// addVoid counts one void look-up against the limit.
func (e *eval) addVoid() *outcome {
	e.voids++
	if l := e.c.opts.VoidLookupLimit; l > 0 && e.voids > l {
		return &outcome{result: "permerror", reason: fmt.Sprintf("more than %d void DNS look-ups", l)}
	}
	return nil
}

// target expands a domain-spec; nil means the current domain. Names too
// long for DNS lose labels on the left (section 7.3).
func (e *eval) target(ds macroString, domain string) string {
	if ds == nil {
		return domain
	}
	t := ds.expand(&e.macros, domain)
	for len(strings.TrimSuffix(t, ".")) > maxNameLen {
		i := strings.IndexByte(t, '.')
		if i < 0 {
			break
		}
		t = t[i+1:]
	}
	return t
}

// match evaluates one mechanism. A non-nil outcome ends the evaluation
// (temperror or permerror).
func (e *eval) match(ctx context.Context, d directive, domain string, depth int) (bool, *outcome) {
	switch d.mech {
	case mechAll:
		return true, nil
	case mechIP4:
		return e.ip.Is4() && d.network.Contains(e.ip), nil
	case mechIP6:
		return e.ip.Is6() && d.network.Contains(e.ip), nil
	}
	if bad := e.count(); bad != nil {
		return false, bad
	}
	target := e.target(d.domain, domain)
	switch d.mech {
	case mechInclude:
		out := e.checkHost(ctx, target, depth+1)
		switch out.result {
		case "pass":
			return true, nil
		case "fail", "softfail", "neutral":
			return false, nil
		case "temperror":
			return false, &outcome{result: "temperror", reason: fmt.Sprintf("include:%s: %s", target, out.reason)}
		default: // permerror, none (section 5.2)
			return false, &outcome{result: "permerror", reason: fmt.Sprintf("include:%s: %s", target, out.reason)}
		}
	case mechA:
		addrs, err := e.addrs(ctx, target, e.family())
		if bad := e.dnsTrouble(err, d); bad != nil {
			return false, bad
		}
		return e.anyInPrefix(addrs, d), nil
	case mechMX:
		mxs, err := e.c.r.LookupMX(ctx, target)
		if bad := e.dnsTrouble(err, d); bad != nil {
			return false, bad
		}
		if len(mxs) > mxLimit {
			return false, &outcome{result: "permerror", reason: fmt.Sprintf("%s: %s has more than %d MX records", d.term, target, mxLimit)}
		}
		for _, mx := range mxs {
			if mx.Host == "." || mx.Host == "" {
				continue // null MX (RFC 7505)
			}
			addrs, err := e.addrs(ctx, mx.Host, e.family())
			if err != nil {
				// Section 4.6.4: every query that finds nothing is void,
				// the MX hosts' included; their names are the sender's.
				if bad := e.dnsTrouble(err, d); bad != nil {
					return false, bad
				}
				continue
			}
			if e.anyInPrefix(addrs, d) {
				return true, nil
			}
		}
		return false, nil
	case mechPTR:
		first := !e.ptrDone
		names, err := e.validatedNames(ctx)
		if first {
			// The forward look-ups of the PTR names that found nothing
			// are void too; they are made (and counted) once.
			for range e.ptrVoids {
				if bad := e.addVoid(); bad != nil {
					return false, bad
				}
			}
		}
		if err != nil {
			// Section 5.5: DNS errors make ptr not match; void ones still count.
			if bad := e.void(err); bad != nil {
				return false, bad
			}
			return false, nil
		}
		for _, n := range names {
			if isSubdomain(n, target) {
				return true, nil
			}
		}
		return false, nil
	case mechExists:
		// Always an A query, whatever the client's family (section 5.7).
		addrs, err := e.addrs(ctx, target, dns.TypeA)
		if bad := e.dnsTrouble(err, d); bad != nil {
			return false, bad
		}
		return len(addrs) > 0, nil
	}
	return false, &outcome{result: "permerror", reason: "unknown mechanism"}
}

// dnsTrouble turns a look-up error into the evaluation's end (temperror,
// or permerror past the void limit); not-found is no match.
func (e *eval) dnsTrouble(err error, d directive) *outcome {
	if err == nil {
		return nil
	}
	if resolver.IsNotFound(err) {
		return e.void(err)
	}
	return &outcome{result: "temperror", reason: fmt.Sprintf("%s: %v", d.term, err)}
}

func (e *eval) family() uint16 {
	if e.ip.Is4() {
		return dns.TypeA
	}
	return dns.TypeAAAA
}

func (e *eval) addrs(ctx context.Context, name string, qtype uint16) ([]netip.Addr, error) {
	return e.c.r.LookupAddrs(ctx, name, qtype)
}

func (e *eval) anyInPrefix(addrs []netip.Addr, d directive) bool {
	bits := d.cidr4
	if e.ip.Is6() {
		bits = d.cidr6
	}
	want, err := e.ip.Prefix(bits)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if a.Is4() == e.ip.Is4() && want.Contains(a) {
			return true
		}
	}
	return false
}

// validatedNames are the PTR names of ip (at most 10) whose forward look-up
// gives ip back. Errors on the forward look-ups skip the name.
func (e *eval) validatedNames(ctx context.Context) ([]string, error) {
	if e.ptrDone {
		return e.ptrNames, e.ptrErr
	}
	e.ptrDone = true
	names, err := e.c.r.LookupAddr(ctx, e.ip)
	if err != nil {
		e.ptrErr = err
		return nil, err
	}
	if len(names) > ptrLimit {
		names = names[:ptrLimit]
	}
	for _, n := range names {
		addrs, err := e.addrs(ctx, n, e.family())
		if err != nil {
			if resolver.IsNotFound(err) {
				e.ptrVoids++
			}
			continue
		}
		for _, a := range addrs {
			if a == e.ip {
				e.ptrNames = append(e.ptrNames, n)
				break
			}
		}
	}
	return e.ptrNames, nil
}

// isSubdomain reports whether name is domain or below it, on label
// boundaries, ignoring case and trailing dots.
func isSubdomain(name, domain string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	return name == domain || strings.HasSuffix(name, "."+domain)
}

// explain fetches and expands the exp= text after a fail (section 6.2).
// Any trouble means no explanation, never a different result.
func (e *eval) explain(ctx context.Context, exp macroString, domain string) string {
	target := e.target(exp, domain)
	txts, err := e.c.r.LookupTXT(ctx, target)
	if err != nil || len(txts) != 1 {
		return ""
	}
	ms, err := parseMacroString(txts[0], true)
	if err != nil {
		return ""
	}
	return ms.expand(&e.macros, domain)
}

// validatedName is the p macro: a validated name of ip, preferring one in
// domain, else "unknown" (section 7.3).
func (e *eval) validatedName(ctx context.Context, domain string) string {
	names, err := e.validatedNames(ctx)
	if err != nil || len(names) == 0 {
		return "unknown"
	}
	for _, n := range names {
		if isSubdomain(n, domain) {
			return n
		}
	}
	return names[0]
}
