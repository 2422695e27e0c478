// Package reports turns the engine's DMARC evaluations into aggregate
// reports (RFC 9990): what each message showed is recorded per DMARC
// Policy Domain and period, and built into the report's XML once the
// period is over. Delivery is the deliver sub-package's job.
package reports

import (
	"strings"

	"github.com/mailward/mailward/checks/dmarc"
	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/reports/deliver"
)

// maxDKIM bounds the signatures one row keeps (RFC 9990 section 2.1.4
// asks for no more than 100).
const maxDKIM = 100

// Row is what one message contributes to a report: every field but the
// count tells rows apart.
type Row struct {
	SourceIP     string     `json:"ip"`
	Disposition  string     `json:"disp"` // none, pass, quarantine, reject
	DKIMAligned  bool       `json:"dkim,omitempty"`
	SPFAligned   bool       `json:"spf,omitempty"`
	Reasons      []Reason   `json:"reasons,omitempty"`
	HeaderFrom   string     `json:"hfrom"`
	EnvelopeFrom string     `json:"efrom"`
	DKIM         []DKIMAuth `json:"dkim_auth,omitempty"`
	SPF          *SPFAuth   `json:"spf_auth,omitempty"`
}

// Reason is a policy override reason (RFC 9990 section 2.1.7).
type Reason struct {
	Type    string `json:"type"` // local_policy, mailing_list, other, policy_test_mode, trusted_forwarder
	Comment string `json:"comment,omitempty"`
}

// DKIMAuth is one signature's result, uninterpreted by DMARC.
type DKIMAuth struct {
	Domain   string `json:"d"`
	Selector string `json:"s"`
	Result   string `json:"r"`
}

// SPFAuth is the MAIL FROM identity's SPF result.
type SPFAuth struct {
	Domain string `json:"d"`
	Result string `json:"r"`
}

// Policy is the DMARC Policy Record a report publishes; the last one
// seen in a period stands (RFC 9990 section 2.1).
type Policy struct {
	Domain  string   `json:"domain"`
	P       string   `json:"p"`
	SP      string   `json:"sp,omitempty"`
	NP      string   `json:"np,omitempty"`
	ADKIM   string   `json:"adkim,omitempty"`
	ASPF    string   `json:"aspf,omitempty"`
	FO      string   `json:"fo,omitempty"`
	Testing bool     `json:"t,omitempty"`
	PSD     string   `json:"psd,omitempty"`
	RUA     []string `json:"rua,omitempty"` // as published, "!size" included
	// Discovery is how the record was found: treewalk (RFC 9989).
	Discovery string `json:"discovery"`
}

// Observation is one message as reports see it.
type Observation struct {
	Policy Policy
	Row    Row
	// Passed says the message passed DMARC, for reports.require_pass.
	Passed bool
}

// Observe extracts what a report needs from a finished transaction; ok
// is false when there is nothing to report: no DMARC pass or fail with a
// record asking for aggregate reports, or a message that was only
// deferred (a retry will come and be counted then).
func Observe(f *policy.Finished, enforce bool) (Observation, bool) {
	dm := f.Facts.DMARC
	if dm == nil || dm.Record == nil || dm.PolicyDomain == "" || len(dm.Record.RUA) == 0 {
		return Observation{}, false
	}
	if dm.Result != "pass" && dm.Result != "fail" || f.Verdict.Action == policy.Tempfail {
		return Observation{}, false
	}
	rec := dm.Record
	o := Observation{Passed: dm.Result == "pass"}
	p, sp, np, _ := rec.Policies()
	o.Policy = Policy{Domain: dm.PolicyDomain, P: p, SP: sp, NP: np, ADKIM: rec.ADKIM, ASPF: rec.ASPF, FO: rec.FO,
		Testing: rec.Testing, PSD: rec.PSD, RUA: publishedRUA(rec), Discovery: "treewalk"}
	r := &o.Row
	if f.Facts.IP.IsValid() {
		r.SourceIP = f.Facts.IP.Unmap().String()
	}
	r.HeaderFrom = dm.Domain
	r.EnvelopeFrom = policy.DomainOf(f.Facts.MailFrom)
	r.DKIMAligned, r.SPFAligned = dm.DKIMAligned, dm.SPFAligned
	r.Disposition, r.Reasons = disposition(dm, f.Verdict, enforce)
	for _, d := range f.Facts.DKIM {
		if len(r.DKIM) == maxDKIM {
			break
		}
		if d.Domain != "" {
			r.DKIM = append(r.DKIM, DKIMAuth{Domain: strings.ToLower(d.Domain), Selector: d.Selector, Result: dkimResult(d.Result)})
		}
	}
	if s := f.Facts.SPF; s != nil && s.Domain != "" && s.Identity != "helo" {
		r.SPF = &SPFAuth{Domain: strings.ToLower(s.Domain), Result: s.Result}
	}
	return o, true
}

// disposition is what was done with the message as DMARC sees it, and
// why it differs from the policy in force, if it does.
func disposition(dm *dmarc.Result, v policy.Verdict, enforce bool) (string, []Reason) {
	if dm.Result == "pass" {
		// "pass": no action, passing DMARC under an enforcing policy.
		if dm.Policy == "none" {
			return "none", nil
		}
		return "pass", nil
	}
	applied := "none"
	switch v.Action {
	case policy.Reject, policy.Discard:
		applied = "reject"
	case policy.Quarantine:
		applied = "quarantine"
	}
	var rs []Reason
	switch {
	case applied == dm.Policy && !dm.Testing:
		return applied, nil
	case applied == dm.Policy:
		// t=y asked for one level below what p= says.
		rs = append(rs, Reason{Type: "policy_test_mode"})
	case !enforce && applied == "none":
		rs = append(rs, Reason{Type: "local_policy", Comment: "DMARC policy not enforced by this receiver"})
	case v.Rule != "":
		rs = append(rs, Reason{Type: "local_policy", Comment: "rule " + v.Rule})
	default:
		rs = append(rs, Reason{Type: "other", Comment: v.Reason})
	}
	return applied, rs
}

// dkimResult maps to the schema's DKIMResultType.
func dkimResult(r string) string {
	switch r {
	case "none", "pass", "fail", "policy", "neutral", "temperror", "permerror":
		return r
	}
	return "permerror"
}

// publishedRUA is the record's rua= as written, "!size" suffixes kept.
func publishedRUA(rec *dmarc.Record) []string {
	if rec.Text == "" {
		return rec.RUA
	}
	return deliver.RUA(rec.Text)
}
