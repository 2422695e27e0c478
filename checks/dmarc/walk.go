package dmarc

import (
	"context"
	"fmt"
	"strings"

	"golang.org/x/net/publicsuffix"

	"github.com/mailward/mailward/checks/resolver"
)

// maxWalk is the most names a DNS Tree Walk queries (RFC 9989 section 4.10).
const maxWalk = 8

// walkNames lists the names a tree walk from domain queries, in order: the
// domain, then (for eight labels or more) its last seven labels, then one
// label less at a time down to the top-level domain.
func walkNames(domain string) []string {
	labels := strings.Split(domain, ".")
	names := []string{domain}
	for x := len(labels); x > 1; {
		if x >= maxWalk {
			x = maxWalk - 1
		} else {
			x--
		}
		names = append(names, strings.Join(labels[len(labels)-x:], "."))
	}
	return names
}

// found is a name on the walk that holds exactly one DMARC record.
type found struct {
	name string
	rec  *Record
}

// lookup is what one _dmarc query established.
type lookup struct {
	rec     *Record
	several bool // more than one DMARC record: all discarded
	err     error
}

// walker runs tree walks for one message, remembering each name's answer
// so that the walks for the Author Domain and the identifiers share them.
type walker struct {
	r    TXTResolver
	memo map[string]lookup
	// several names the _dmarc names whose records were all discarded.
	several []string
}

func newWalker(r TXTResolver) *walker { return &walker{r: r, memo: map[string]lookup{}} }

// record returns the one DMARC record at _dmarc.name, nil when there is
// none (or several), or the error of a look-up that did not complete.
func (w *walker) record(ctx context.Context, name string) (*Record, error) {
	if l, ok := w.memo[name]; ok {
		return l.rec, l.err
	}
	var l lookup
	txts, err := w.r.LookupTXT(ctx, "_dmarc."+name)
	switch {
	case err != nil && resolver.IsNotFound(err):
	case err != nil:
		l.err = err
	default:
		for _, txt := range txts {
			rec, err := ParseRecord(txt)
			if err != nil {
				continue // not DMARC: ignored
			}
			if l.rec != nil {
				l.rec, l.several = nil, true
				w.several = append(w.several, "_dmarc."+name)
				break
			}
			l.rec = rec
		}
	}
	w.memo[name] = l
	return l.rec, l.err
}

// walk runs the DNS Tree Walk from domain and returns the records found,
// longest name first. It stops at a record with psd=y or psd=n. An error
// stops it too; what was found before the error is returned with it.
func (w *walker) walk(ctx context.Context, domain string) ([]found, error) {
	var out []found
	for _, name := range walkNames(domain) {
		rec, err := w.record(ctx, name)
		if err != nil {
			return out, err
		}
		if rec == nil {
			continue
		}
		out = append(out, found{name, rec})
		if rec.PSD == "y" || rec.PSD == "n" {
			break
		}
	}
	return out, nil
}

// orgDomain selects the Organizational Domain of domain from a completed
// walk (section 4.10.2).
func orgDomain(domain string, walked []found) string {
	for _, f := range walked {
		if f.rec.PSD == "n" {
			return f.name
		}
		if f.rec.PSD == "y" && f.name != domain {
			// The name one label below the public suffix domain.
			n := strings.Count(f.name, ".") + 2
			labels := strings.Split(domain, ".")
			return strings.Join(labels[len(labels)-n:], ".")
		}
	}
	if len(walked) > 0 {
		return walked[len(walked)-1].name // the fewest labels
	}
	return domain
}

// orgOf runs a walk for domain and selects its Organizational Domain.
func (w *walker) orgOf(ctx context.Context, domain string) (string, error) {
	walked, err := w.walk(ctx, domain)
	if err != nil {
		return "", err
	}
	return orgDomain(domain, walked), nil
}

// exists tells whether domain exists in the DNS: only NXDOMAIN says it
// does not (RFC 8020; RFC 9989 Appendix A.4). Any query type will do.
func (w *walker) exists(ctx context.Context, domain string) (bool, error) {
	_, err := w.r.LookupTXT(ctx, domain)
	switch {
	case err == nil:
		return true, nil
	case resolver.IsTemporary(err):
		return false, err
	case resolver.IsNotFound(err):
		return !isNXDomain(err), nil
	}
	return false, err
}

// OrgDomain returns the Organizational Domain of domain by the RFC 9989
// DNS Tree Walk, for rules that group names by organization. When the walk
// finds no DMARC record at any level, where RFC 9989 would answer domain
// itself, it answers the registrable domain of the Public Suffix List
// instead, which is what a rule grouping names wants. When a look-up fails
// it returns that Public Suffix List answer together with the error.
func OrgDomain(ctx context.Context, r TXTResolver, domain string) (string, error) {
	d, err := normalizeDomain(domain)
	if err != nil {
		return "", err
	}
	walked, err := newWalker(r).walk(ctx, d)
	if err != nil {
		return pslOrg(d), fmt.Errorf("finding the organizational domain of %s: %w", d, err)
	}
	if len(walked) == 0 {
		return pslOrg(d), nil
	}
	return orgDomain(d, walked), nil
}

func pslOrg(domain string) string {
	if org, err := publicsuffix.EffectiveTLDPlusOne(domain); err == nil {
		return org
	}
	return domain
}
