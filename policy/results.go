package policy

import (
	"slices"

	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/dmarc"
	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/checks/iprev"
	"github.com/mailward/mailward/checks/spf"
	"github.com/mailward/mailward/checks/uribl"
)

// Results are what the checks found, one field per check, in the
// check's own result type. This is the one place that declares a
// check's results and their JSON: the journal keeps them as they are
// (its "checks" object), `check --json` prints every field of them, and
// the log line, the verdict cache and the recorder read them through the
// methods below. A new check adds its field here and a line to each
// method; its rule variables are declared in rules/vars.go.
type Results struct {
	// IPRev is reverse DNS (connect).
	IPRev *iprev.Result `json:"iprev,omitempty"`
	// DNSBL are the IP lists (connect) and the domain lists (helo, mail)
	// that listed or failed.
	DNSBL []dnsbl.Result `json:"dnsbl,omitempty"`
	// SPFHelo checks the HELO identity (helo).
	SPFHelo *spf.Result `json:"spf_helo,omitempty"`
	// SPF checks MAIL FROM (mail).
	SPF *spf.Result `json:"spf,omitempty"`
	// DKIM is one result per signature (eom).
	DKIM []dkim.Result `json:"dkim,omitempty"`
	// DMARC (eom).
	DMARC *dmarc.Result `json:"dmarc,omitempty"`
	// URIBL are the URI lists' listings of the URLs' domains and the
	// lists that failed (eom).
	URIBL []uribl.Result `json:"uribl,omitempty"`
}

// temperror reports whether any check failed for a temporary reason.
func (r *Results) temperror() bool {
	failed := func(res string) bool { return res == "temperror" }
	listFailed := func(rs []dnsbl.Result) bool {
		return slices.ContainsFunc(rs, func(x dnsbl.Result) bool { return x.Error != "" })
	}
	return (r.IPRev != nil && failed(r.IPRev.Result)) || listFailed(r.DNSBL) ||
		(r.SPFHelo != nil && failed(r.SPFHelo.Result)) || (r.SPF != nil && failed(r.SPF.Result)) ||
		slices.ContainsFunc(r.DKIM, func(d dkim.Result) bool { return failed(d.Result) }) ||
		(r.DMARC != nil && failed(r.DMARC.Result)) || listFailed(r.URIBL)
}

// clone copies what the next message of the connection would change.
func (r Results) clone() Results {
	r.DNSBL, r.DKIM, r.URIBL = slices.Clone(r.DNSBL), slices.Clone(r.DKIM), slices.Clone(r.URIBL)
	return r
}

// logParts are the results in the compact form of the log line:
// "iprev=pass", "dnsbl=zen.example", "dkim=pass(example.com)".
func (r *Results) logParts() []string {
	parts := []string{}
	if r.IPRev != nil {
		parts = append(parts, "iprev="+r.IPRev.Result)
	}
	lists := func(name string, rs []dnsbl.Result) {
		for _, x := range rs {
			if len(x.Codes) > 0 && !slices.Contains(parts, name+"="+x.Zone) {
				parts = append(parts, name+"="+x.Zone)
			}
		}
	}
	lists("dnsbl", r.DNSBL)
	addSPF := func(name string, x *spf.Result) {
		if x != nil {
			parts = append(parts, name+"="+x.Result)
		}
	}
	addSPF("spf_helo", r.SPFHelo)
	addSPF("spf", r.SPF)
	for _, d := range r.DKIM {
		parts = append(parts, "dkim="+d.Result+"("+d.Domain+")")
	}
	if r.DMARC != nil {
		parts = append(parts, "dmarc="+r.DMARC.Result)
	}
	lists("uribl", r.URIBL)
	return parts
}
