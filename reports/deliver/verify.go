package deliver

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/net/idna"

	"github.com/mailward/mailward/checks/dmarc"
	"github.com/mailward/mailward/checks/resolver"
)

// errTemporary marks a decision that DNS trouble put off: try again later.
var errTemporary = errors.New("temporary DNS failure")

// refusal is why a destination gets no report.
type refusal struct{ reason string }

func (r *refusal) Error() string { return r.reason }

func refuse(format string, args ...any) error { return &refusal{fmt.Sprintf(format, args...)} }

// verify applies RFC 9990 section 3 to a destination outside the policy
// domain's organization: the destination's DNS must say, at
// <policy-domain>._report._dmarc.<destination-host>, that it takes
// reports about the policy domain. It returns the URIs to use, which the
// confirming record may override, or a *refusal, or an error wrapping
// errTemporary.
func (s *Sender) verify(ctx context.Context, policyDomain string, u ruaURI) ([]ruaURI, error) {
	policyOrg, err := s.orgDomain(ctx, policyDomain)
	if err != nil {
		return nil, err
	}
	destOrg, err := s.orgDomain(ctx, u.domain)
	if err != nil {
		return nil, err
	}
	if policyOrg == destOrg {
		return []ruaURI{u}, nil
	}
	alabel, err := idna.Lookup.ToASCII(policyDomain)
	if err != nil {
		return nil, refuse("policy domain %q has no A-label form: %v", policyDomain, err)
	}
	name := alabel + "._report._dmarc." + u.domain
	if len(name) > 253 {
		return nil, refuse("%s is external and %s is too long a name to confirm it", u.domain, name)
	}
	txts, err := s.res.LookupTXT(ctx, name)
	switch {
	case err == nil:
	case resolver.IsNotFound(err):
		return nil, refuse("%s is outside %s and does not confirm it takes its reports (no TXT record at %s)", u.domain, policyDomain, name)
	case resolver.IsTemporary(err):
		return nil, fmt.Errorf("confirming external destination %s: %w: %w", u.domain, errTemporary, err)
	default:
		return nil, refuse("confirming external destination %s: %v", u.domain, err)
	}
	for _, txt := range txts {
		if _, err := dmarc.ParseRecord(txt); err != nil {
			continue // v=DMARC1 must come first; others are discarded
		}
		override := ruaTag(txt)
		if len(override) == 0 {
			return []ruaURI{u}, nil
		}
		var out []ruaURI
		for _, raw := range override {
			o, err := parseURI(raw)
			if err != nil {
				continue // a malformed URI is ignored
			}
			if o.domain != u.domain {
				// Section 3: neither the original nor the override then.
				return nil, refuse("the confirming record at %s points to %s, another host than %s", name, o.domain, u.domain)
			}
			out = append(out, o)
		}
		if len(out) == 0 {
			return []ruaURI{u}, nil
		}
		return out, nil
	}
	return nil, refuse("%s is outside %s and its TXT records at %s are not v=DMARC1 records", u.domain, policyDomain, name)
}

// orgDomain is the Organizational Domain by RFC 9989's tree walk.
func (s *Sender) orgDomain(ctx context.Context, domain string) (string, error) {
	org, err := dmarc.OrgDomain(ctx, s.res, domain)
	if err == nil {
		return strings.ToLower(org), nil
	}
	if resolver.IsTemporary(err) {
		return "", fmt.Errorf("finding the organizational domain of %s: %w: %w", domain, errTemporary, err)
	}
	return "", refuse("finding the organizational domain of %s: %v", domain, err)
}

// RUA returns the URIs of the rua tag of a DMARC Policy Record's text as
// published, "!size" suffixes included, for Report.RUA. (checks/dmarc's
// Record.RUA drops the suffixes.)
func RUA(record string) []string { return ruaTag(record) }

// ruaTag returns the URIs of a record's rua tag as written.
func ruaTag(txt string) []string {
	for spec := range strings.SplitSeq(txt, ";") {
		name, value, ok := strings.Cut(spec, "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "rua") {
			continue
		}
		var out []string
		for u := range strings.SplitSeq(value, ",") {
			if u = strings.TrimSpace(u); u != "" {
				out = append(out, u)
			}
		}
		return out
	}
	return nil
}
