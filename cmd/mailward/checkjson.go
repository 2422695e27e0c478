package main

import (
	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/dmarc"
	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/checks/iprev"
	"github.com/mailward/mailward/checks/spf"
	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/rules"
)

// checkReport is what `mailward check --json` prints. Field names are a
// contract with scripts: add, never rename. Every field is always
// present: empty strings, zero, false and [] stand for nothing; a check
// that did not run is null (spf, spf_helo, dmarc, iprev). Only explain
// depends on a flag (--explain). README.md lists the fields.
type checkReport struct {
	File           string              `json:"file"` // the message checked; - for standard input
	Action         string              `json:"action"`
	SMTPCode       int                 `json:"smtp_code"`
	EnhancedCode   string              `json:"enhanced_code"`
	Message        string              `json:"message"`
	Reason         string              `json:"reason"`
	Stage          string              `json:"stage"`
	Rcpts          []rcptReport        `json:"rcpts"`
	SPF            *spfReport          `json:"spf"`
	SPFHelo        *spfReport          `json:"spf_helo"`
	DKIM           []dkimReport        `json:"dkim"`
	DMARC          *dmarcReport        `json:"dmarc"`
	IPRev          *iprevReport        `json:"iprev"`
	DNSBL          []dnsblReport       `json:"dnsbl"`
	URIBL          []dnsblReport       `json:"uribl"` // the URI lists, in the shape of dnsbl
	URLs           []urlReport         `json:"urls"`
	Content        *contentReport      `json:"content"`
	Rules          []string            `json:"rules"`
	Matches        []matchReport       `json:"matches"`
	Score          float64             `json:"score"`
	HeadersAdded   []headerReport      `json:"headers_added"`
	HeadersRemoved []policy.HeaderRef  `json:"headers_removed"`
	Stages         []stageReport       `json:"stages"`
	Explain        []rules.Explanation `json:"explain,omitempty"`
}

type stageReport struct {
	Stage   string `json:"stage"`
	Subject string `json:"subject"` // the HELO name, sender or recipient
	Action  string `json:"action"`
	Reply   string `json:"reply"` // the SMTP reply of a reject or tempfail
}

type rcptReport struct {
	Rcpt   string `json:"rcpt"`
	Action string `json:"action"`
	Code   int    `json:"code"`
}

type spfReport struct {
	Result      string `json:"result"`
	Domain      string `json:"domain"`
	Identity    string `json:"identity"`
	Explanation string `json:"explanation"`
	Reason      string `json:"reason"`
}

type dkimReport struct {
	Result     string `json:"result"`
	Domain     string `json:"domain"`
	Selector   string `json:"selector"`
	Algorithm  string `json:"algorithm"`
	Identifier string `json:"identifier"`
	Reason     string `json:"reason"`
}

type dmarcReport struct {
	Result       string `json:"result"`
	Policy       string `json:"policy"`
	Domain       string `json:"domain"`
	PolicyDomain string `json:"policy_domain"`
	OrgDomain    string `json:"org_domain"`
	Testing      bool   `json:"testing"`
	Reason       string `json:"reason"`
}

type iprevReport struct {
	Result string   `json:"result"`
	PTR    string   `json:"ptr"`
	Names  []string `json:"names"`
	FCrDNS bool     `json:"fcrdns"`
}

type dnsblReport struct {
	Zone  string   `json:"zone"`
	Query string   `json:"query"`
	Codes []string `json:"codes"`
	Names []string `json:"names"`
	Allow bool     `json:"allow"`
	Error string   `json:"error"`
}

// urlReport is one link of the message (checks/content).
type urlReport struct {
	Scheme string `json:"scheme"`
	Host   string `json:"host"`
	Domain string `json:"domain"`
	Path   string `json:"path"`
}

// contentReport is what the content scan found besides the links; null
// when it did not run.
type contentReport struct {
	HTML                bool   `json:"html"`
	TextParts           int    `json:"text_parts"`
	TextBytes           int    `json:"text_bytes"`
	URLCount            int    `json:"url_count"`
	PhishLinks          int    `json:"phish_links"`
	FromDisplayMismatch bool   `json:"from_display_mismatch"`
	Limit               string `json:"limit"`
}

type matchReport struct {
	Rule    string  `json:"rule"`
	Action  string  `json:"action"`
	Stage   string  `json:"stage"`
	Monitor bool    `json:"monitor"`
	Score   float64 `json:"score"`
	Unknown string  `json:"unknown"` // facts a temporary error left unknown
}

type headerReport struct {
	Name    string `json:"name"`
	Value   string `json:"value"`
	Replace bool   `json:"replace"`
}

// newCheckReport turns a driven transaction into the report.
func newCheckReport(out *policy.Outcome) *checkReport {
	v, f := out.Verdict, &out.Facts
	rep := &checkReport{
		Action: v.Action.String(), Stage: v.Stage.String(), Reason: v.Reason, Score: f.Score,
		Rcpts: []rcptReport{}, DKIM: []dkimReport{}, DNSBL: []dnsblReport{}, URIBL: []dnsblReport{}, URLs: []urlReport{}, Rules: []string{},
		Matches: []matchReport{}, HeadersAdded: []headerReport{}, HeadersRemoved: []policy.HeaderRef{}, Stages: []stageReport{},
		SPF: spfOf(f.SPF), SPFHelo: spfOf(f.SPFHelo), DMARC: dmarcOf(f.DMARC), IPRev: iprevOf(f.IPRev),
	}
	if v.Action == policy.Reject || v.Action == policy.Tempfail {
		rep.SMTPCode, rep.EnhancedCode, rep.Message = v.Code, v.Enhanced, v.Text
	}
	for _, s := range out.Steps {
		sr := stageReport{Stage: s.Stage.String(), Subject: s.Subject, Action: s.Verdict.Action.String()}
		if s.Verdict.Action == policy.Reject || s.Verdict.Action == policy.Tempfail {
			sr.Reply = s.Verdict.Reply()
		}
		rep.Stages = append(rep.Stages, sr)
	}
	for _, r := range out.Rcpts {
		rep.Rcpts = append(rep.Rcpts, rcptReport{Rcpt: r.Rcpt, Action: r.Action.String(), Code: r.Code})
	}
	for _, d := range f.DKIM {
		rep.DKIM = append(rep.DKIM, dkimOf(d))
	}
	for _, d := range f.DNSBL {
		rep.DNSBL = append(rep.DNSBL, dnsblOf(d))
	}
	for _, d := range f.URIBL {
		rep.URIBL = append(rep.URIBL, dnsblOf(d))
	}
	for _, u := range f.URLs {
		rep.URLs = append(rep.URLs, urlReport(u))
	}
	if c := f.Content; c != nil {
		rep.Content = &contentReport{HTML: c.HTML, TextParts: c.TextParts, TextBytes: len(f.BodyText), URLCount: c.URLCount,
			PhishLinks: c.PhishLinks, FromDisplayMismatch: c.FromDisplayMismatch, Limit: c.Limit}
	}
	for _, m := range out.Matches {
		rep.Rules = append(rep.Rules, m.Rule)
		rep.Matches = append(rep.Matches, matchReport{Rule: m.Rule, Action: m.Action, Stage: m.Stage.String(),
			Monitor: m.Monitor, Score: m.Score, Unknown: m.Unknown})
	}
	for _, h := range v.Headers {
		rep.HeadersAdded = append(rep.HeadersAdded, headerReport{Name: h.Name, Value: h.Value, Replace: h.Replace})
	}
	rep.HeadersRemoved = append(rep.HeadersRemoved, v.Remove...)
	return rep
}

func spfOf(r *spf.Result) *spfReport {
	if r == nil {
		return nil
	}
	return &spfReport{Result: r.Result, Domain: r.Domain, Identity: r.Identity, Explanation: r.Explanation, Reason: r.Reason}
}

func dkimOf(r dkim.Result) dkimReport {
	return dkimReport{Result: r.Result, Domain: r.Domain, Selector: r.Selector, Algorithm: r.Algorithm, Identifier: r.Identifier, Reason: r.Reason}
}

func dmarcOf(r *dmarc.Result) *dmarcReport {
	if r == nil {
		return nil
	}
	return &dmarcReport{Result: r.Result, Policy: r.Policy, Domain: r.Domain, PolicyDomain: r.PolicyDomain,
		OrgDomain: r.OrgDomain, Testing: r.Testing, Reason: r.Reason}
}

func iprevOf(r *iprev.Result) *iprevReport {
	if r == nil {
		return nil
	}
	return &iprevReport{Result: r.Result, PTR: r.PTR, Names: orEmpty(r.Names), FCrDNS: r.FCrDNS}
}

func dnsblOf(r dnsbl.Result) dnsblReport {
	return dnsblReport{Zone: r.Zone, Query: r.Query, Codes: orEmpty(r.Codes), Names: orEmpty(r.Names), Allow: r.Allow, Error: r.Error}
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
