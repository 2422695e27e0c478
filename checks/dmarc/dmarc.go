// Package dmarc evaluates DMARC for a message by RFC 9989: policy
// discovery and Organizational Domains by the DNS Tree Walk (no Public
// Suffix List), identifier alignment of SPF and DKIM with the Author
// Domain, and the policy in force after sp=, np= and t=.
package dmarc

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/checks/spf"

	"github.com/mailward/mailward/internal/config"
)

// TXTResolver looks up TXT records; *resolver.Resolver satisfies it.
// Errors must wrap the resolver's sentinels: NXDOMAIN and NODATA mean "no
// record", anything else could not be completed.
type TXTResolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// DefaultMaxAuthorDomains is used when Options.MaxAuthorDomains is zero.
const DefaultMaxAuthorDomains = 5

// Options tune evaluation. Zero values pick the defaults.
type Options struct {
	// MaxAuthorDomains is how many different domains a From field with
	// several addresses may have and still be evaluated (RFC 9989 section
	// 11.5); over it the result is permerror. 1 turns such evaluation off.
	MaxAuthorDomains int `yaml:"max_author_domains"`
}

// Validate reports option values that make no sense, as config.Problems
// keyed by option.
func (o Options) Validate() error {
	var ps config.Problems
	if o.MaxAuthorDomains < 0 {
		ps.Add("max_author_domains", "%d: must not be negative", o.MaxAuthorDomains)
	}
	return ps.Err()
}

// Checker evaluates DMARC. It is safe for concurrent use; it keeps no
// state of its own between messages (the resolver caches by TTL).
type Checker struct {
	r    TXTResolver
	opts Options
}

// New returns a Checker that looks records up through r.
func New(r TXTResolver, opts Options) *Checker {
	if opts.MaxAuthorDomains <= 0 {
		opts.MaxAuthorDomains = DefaultMaxAuthorDomains
	}
	return &Checker{r: r, opts: opts}
}

// OrgDomain is the package function OrgDomain with the Checker's resolver.
func (c *Checker) OrgDomain(ctx context.Context, domain string) (string, error) {
	return OrgDomain(ctx, c.r, domain)
}

// Check evaluates DMARC for a message. from holds the raw value of each
// From header field; spfResult is the SPF check of the MAIL FROM identity
// (for the null sender, of postmaster@HELO), nil if none was made; sigs are
// the message's DKIM results. Every outcome, DNS trouble included, is a
// Result; it is never nil.
func (c *Checker) Check(ctx context.Context, from []string, spfResult *spf.Result, sigs []dkim.Result) *Result {
	domains, err := AuthorDomains(from)
	if err != nil {
		return &Result{Result: "permerror", Reason: err.Error()}
	}
	w := newWalker(c.r)
	if len(domains) == 1 {
		return c.evaluate(ctx, w, domains[0], spfResult, sigs)
	}
	if len(domains) > c.opts.MaxAuthorDomains {
		return &Result{Result: "permerror", Domain: strings.Join(domains, ","),
			Reason: fmt.Sprintf("From has %d author domains, more than %d are not evaluated", len(domains), c.opts.MaxAuthorDomains)}
	}
	// RFC 9989 section 11.5: evaluate each Author Domain and apply the
	// strictest policy among those that fail.
	results := make([]*Result, len(domains))
	for i, d := range domains {
		results[i] = c.evaluate(ctx, w, d, spfResult, sigs)
	}
	return combine(domains, results)
}

var severity = map[string]int{"none": 1, "quarantine": 2, "reject": 3}

func combine(domains []string, results []*Result) *Result {
	var pick *Result
	for _, want := range []string{"fail", "temperror", "permerror", "pass", "none"} {
		for _, r := range results {
			if r.Result == want && (pick == nil || want == "fail" && severity[r.Policy] > severity[pick.Policy]) {
				pick = r
			}
		}
		if pick != nil {
			break
		}
	}
	if pick == nil {
		pick = results[0]
	}
	out := *pick
	out.Reason = fmt.Sprintf("From has %d author domains (%s); %s: %s", len(domains), strings.Join(domains, ", "), pick.Domain, pick.Reason)
	return &out
}

// identifier is an authenticated (or failed) domain to align.
type identifier struct {
	method string // "spf" or "dkim"
	domain string
	result string
}

func (c *Checker) evaluate(ctx context.Context, w *walker, domain string, spfResult *spf.Result, sigs []dkim.Result) *Result {
	res := &Result{Domain: domain}
	if strings.HasPrefix(domain, "[") {
		res.Result, res.Reason = "none", "the author domain is an address literal, which cannot publish DMARC"
		return res
	}

	// Policy discovery (section 4.10.1): the record at the Author Domain,
	// else that of its Organizational Domain, else that of its PSD.
	walked, walkErr := w.walk(ctx, domain)
	var rec *Record
	switch {
	case len(walked) > 0 && walked[0].name == domain:
		rec, res.PolicyDomain = walked[0].rec, domain
	case walkErr != nil:
		// Never a policy from higher up because a lower query failed.
		res.Result, res.Reason = "temperror", "DMARC record look-up: "+walkErr.Error()
		return res
	default:
		org := orgDomain(domain, walked)
		for _, f := range walked {
			if f.name == org || f.rec.PSD == "y" && rec == nil {
				rec, res.PolicyDomain = f.rec, f.name
			}
		}
	}
	if walkErr == nil {
		res.OrgDomain = orgDomain(domain, walked)
	}
	if rec == nil {
		res.Result, res.Reason = "none", "no DMARC record"
		if len(w.several) > 0 {
			res.Reason += "; several records ignored at " + strings.Join(w.several, ", ")
		}
		return res
	}
	p, sp, np, ok := rec.Policies()
	if !ok {
		res.Result = "none"
		res.Reason = fmt.Sprintf("the record at _dmarc.%s has no valid policy and no valid rua=: DMARC does not apply", res.PolicyDomain)
		return res
	}
	policy := p
	if res.PolicyDomain != domain {
		policy = sp
		if np != sp {
			exists, err := w.exists(ctx, domain)
			if err != nil {
				res.Result, res.Reason = "temperror", "author domain existence check: "+err.Error()
				return res
			}
			if !exists {
				policy = np
			}
		}
	}
	res.Testing = rec.Testing
	res.Policy = downgrade(policy, rec.Testing)
	res.Record = rec

	// Identifier alignment (sections 4.4 and 4.10.2).
	var ids []identifier
	// DMARC uses the MAIL FROM identity only (section 4.4.2), never HELO's.
	if spfResult != nil && spfResult.Domain != "" && spfResult.Identity != "helo" {
		ids = append(ids, identifier{"spf", spfResult.Domain, spfResult.Result})
	}
	for _, s := range sigs {
		if s.Domain != "" {
			ids = append(ids, identifier{"dkim", s.Domain, s.Result})
		}
	}
	var unsure, unaligned []string
	var pass string
	for _, id := range ids {
		if id.result != "pass" && id.result != "temperror" {
			continue
		}
		mode := rec.ASPF
		if id.method == "dkim" {
			mode = rec.ADKIM
		}
		aligned, err := c.aligned(ctx, w, domain, res.OrgDomain, walkErr, id.domain, mode)
		switch {
		case aligned && id.result == "pass":
			// Every identifier is looked at, so that a report can say
			// whether SPF and DKIM each aligned; the first pass explains.
			if pass == "" {
				pass = fmt.Sprintf("%s pass for %s, aligned (%s)", id.method, id.domain, modeName(mode))
			}
			if id.method == "spf" {
				res.SPFAligned = true
			} else {
				res.DKIMAligned = true
			}
		case err != nil:
			unsure = append(unsure, fmt.Sprintf("cannot tell whether %s domain %s aligns: %v", id.method, id.domain, err))
		case aligned:
			unsure = append(unsure, fmt.Sprintf("%s temperror for aligned domain %s", id.method, id.domain))
		case id.result == "pass":
			unaligned = append(unaligned, fmt.Sprintf("%s pass for %s", id.method, id.domain))
		}
	}
	if pass != "" {
		res.Result, res.Reason = "pass", pass
		return res
	}
	if len(unsure) > 0 {
		res.Result, res.Reason = "temperror", strings.Join(unsure, "; ")
		return res
	}
	res.Result = "fail"
	res.Reason = "no aligned spf or dkim pass"
	if len(unaligned) > 0 {
		res.Reason += fmt.Sprintf(" (%s not aligned, %s)", strings.Join(unaligned, ", "), modeNames(rec))
	}
	return res
}

// aligned reports whether id aligns with the Author Domain in mode ("s"
// strict, "r" relaxed). org is the Author Domain's Organizational Domain,
// unknown when orgErr is set.
func (c *Checker) aligned(ctx context.Context, w *walker, author, org string, orgErr error, id, mode string) (bool, error) {
	id = strings.ToLower(strings.TrimSuffix(id, "."))
	if id == author {
		return true, nil
	}
	if mode == "s" {
		return false, nil
	}
	if orgErr != nil {
		return false, orgErr
	}
	// An Organizational Domain is the name itself or one of its parents,
	// so only names at or under org can share it.
	if id != org && !strings.HasSuffix(id, "."+org) {
		return false, nil
	}
	idOrg, err := w.orgOf(ctx, id)
	if err != nil {
		return false, err
	}
	return idOrg == org, nil
}

func modeNames(rec *Record) string {
	return "aspf " + modeName(rec.ASPF) + ", adkim " + modeName(rec.ADKIM)
}

func modeName(mode string) string {
	if mode == "s" {
		return "strict"
	}
	return "relaxed"
}

// downgrade applies t=y: the policy one level below the published one.
func downgrade(policy string, testing bool) string {
	if !testing {
		return policy
	}
	switch policy {
	case "reject":
		return "quarantine"
	case "quarantine":
		return "none"
	}
	return policy
}

func isNXDomain(err error) bool { return errors.Is(err, resolver.ErrNXDomain) }
