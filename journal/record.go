// Package journal keeps one line per finished transaction: what the rules
// could read, what the checks said and what was decided, never the body.
// `mailward rules replay` and `rules diff` play the lines through another
// rule set to show what it would have answered.
package journal

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/dmarc"
	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/checks/iprev"
	"github.com/mailward/mailward/checks/spf"
	"github.com/mailward/mailward/policy"
)

// Version is the line format this build writes. Readers take every
// version up to it: fields are added, never renamed or given a new
// meaning; a change that cannot be read the old way raises the version.
const Version = 1

// Record is one journal line. The JSON names are a contract with
// scripts and with the journals already on disk (see README.md).
type Record struct {
	V          int       `json:"v"`
	Time       time.Time `json:"time"`
	Front      string    `json:"front"`
	QueueID    string    `json:"queue_id,omitempty"`
	IP         string    `json:"ip,omitempty"`
	ClientName string    `json:"client_name,omitempty"`
	Helo       string    `json:"helo,omitempty"`
	MailFrom   string    `json:"mail_from"`
	AuthUser   string    `json:"auth_user,omitempty"`
	TLS        bool      `json:"tls,omitempty"`
	TLSVersion string    `json:"tls_version,omitempty"`
	// Rcpts are every recipient offered, refused ones included, in order.
	Rcpts   []Rcpt   `json:"rcpts,omitempty"`
	Headers []Header `json:"headers,omitempty"`
	// Omitted names the header fields left out by journal.omit_headers.
	Omitted []string `json:"omitted_headers,omitempty"`
	// HeadersTruncated says the fields past the journal's bound were left out.
	HeadersTruncated bool         `json:"headers_truncated,omitempty"`
	Size             int64        `json:"size,omitempty"`
	Attachments      []Attachment `json:"attachments,omitempty"`
	// URLs and Content are what the content scan found; the decoded
	// text is not kept (a replay's rules read body_text as "").
	URLs    []URL    `json:"urls,omitempty"`
	Content *Content `json:"content,omitempty"`
	Checks  Checks   `json:"checks"`
	// Lookups are what rule functions learned from the network, e.g.
	// "org_domain:example.com": "example.com".
	Lookups map[string]string `json:"lookups,omitempty"`
	// Reached is the last stage the engine ran.
	Reached    string  `json:"reached"`
	Score      float64 `json:"score"`
	Verdict    Verdict `json:"verdict"`
	Matches    []Match `json:"matches,omitempty"`
	DurationMS float64 `json:"duration_ms"`
}

// Rcpt is one recipient and what was answered to it.
type Rcpt struct {
	Rcpt string `json:"rcpt"`
	// Action is accept, reject or tempfail.
	Action string `json:"action"`
	Code   int    `json:"code,omitempty"`
}

// Header is one header field, unfolded as rules see it.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// URL is one link of the message.
type URL struct {
	Scheme string `json:"scheme"`
	Host   string `json:"host"`
	Domain string `json:"domain,omitempty"`
	Path   string `json:"path,omitempty"`
}

// Content is what the content scan found besides the text and links.
type Content struct {
	HTML                bool   `json:"html,omitempty"`
	TextParts           int    `json:"text_parts"`
	URLCount            int    `json:"url_count,omitempty"`
	PhishLinks          int    `json:"phish_links,omitempty"`
	FromDisplayMismatch bool   `json:"from_display_mismatch,omitempty"`
	Limit               string `json:"limit,omitempty"`
}

// Attachment is one attachment's metadata.
type Attachment struct {
	Name        string `json:"name,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	Size        int64  `json:"size"`
}

// Checks are the check results as the engine had them.
type Checks struct {
	IPRev   *IPRev    `json:"iprev,omitempty"`
	DNSBL   []DNSList `json:"dnsbl,omitempty"`
	SPFHelo *SPF      `json:"spf_helo,omitempty"`
	SPF     *SPF      `json:"spf,omitempty"`
	DKIM    []DKIM    `json:"dkim,omitempty"`
	DMARC   *DMARC    `json:"dmarc,omitempty"`
	// URIBL are the URI lists' listings of the message's links, and
	// their failures, in the shape of a DNS list's.
	URIBL []DNSList `json:"uribl,omitempty"`
}

// IPRev is the reverse DNS result.
type IPRev struct {
	Result string   `json:"result"`
	PTR    string   `json:"ptr,omitempty"`
	Names  []string `json:"names,omitempty"`
	FCrDNS bool     `json:"fcrdns,omitempty"`
}

// DNSList is one DNS list's answer for one name or address.
type DNSList struct {
	Zone  string   `json:"zone"`
	Query string   `json:"query,omitempty"`
	Codes []string `json:"codes,omitempty"`
	Names []string `json:"names,omitempty"`
	Allow bool     `json:"allow,omitempty"`
	Error string   `json:"error,omitempty"`
}

// SPF is one SPF evaluation.
type SPF struct {
	Result      string `json:"result"`
	Domain      string `json:"domain,omitempty"`
	Explanation string `json:"explanation,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

// DKIM is one signature's result.
type DKIM struct {
	Domain     string `json:"domain"`
	Selector   string `json:"selector,omitempty"`
	Algorithm  string `json:"algorithm,omitempty"`
	Result     string `json:"result"`
	Reason     string `json:"reason,omitempty"`
	Identifier string `json:"identifier,omitempty"`
}

// DMARC is the message's DMARC result.
type DMARC struct {
	Result       string `json:"result"`
	Policy       string `json:"policy,omitempty"`
	Domain       string `json:"domain,omitempty"`
	PolicyDomain string `json:"policy_domain,omitempty"`
	OrgDomain    string `json:"org_domain,omitempty"`
	Testing      bool   `json:"testing,omitempty"`
	Reason       string `json:"reason,omitempty"`
}

// Verdict is what the transaction came to.
type Verdict struct {
	Action   string `json:"action"`
	Stage    string `json:"stage"`
	Code     int    `json:"code,omitempty"`
	Enhanced string `json:"enhanced_code,omitempty"`
	Message  string `json:"message,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Rule     string `json:"rule,omitempty"`
	// Unknown names facts the deciding rule read that a check's
	// temporary error left unknown.
	Unknown string `json:"unknown,omitempty"`
}

// Match is one rule that matched.
type Match struct {
	Rule    string  `json:"rule"`
	Action  string  `json:"action"`
	Stage   string  `json:"stage"`
	Monitor bool    `json:"monitor,omitempty"`
	Score   float64 `json:"score,omitempty"`
	Unknown string  `json:"unknown,omitempty"`
}

// newRecord turns a finished transaction into a line's content, leaving
// out the header fields omit names (lower case).
func newRecord(f *policy.Finished, omit map[string]bool) *Record {
	fa := &f.Facts
	r := &Record{
		V: Version, Time: fa.Time.UTC(), Front: f.Front, QueueID: fa.QueueID, ClientName: fa.ClientName,
		Helo: fa.Helo, MailFrom: fa.MailFrom, AuthUser: fa.AuthUser, TLS: fa.TLS, TLSVersion: fa.TLSVersion,
		Size: fa.Size, Reached: f.Reached.String(), Score: fa.Score, Verdict: verdictOf(f.Verdict),
		DurationMS: float64(f.Duration.Microseconds()) / 1000, Lookups: fa.Lookups,
	}
	if fa.IP.IsValid() {
		r.IP = fa.IP.String()
	}
	for _, o := range f.Rcpts {
		a := o.Action
		if !a.Final() {
			a = policy.Accept
		}
		r.Rcpts = append(r.Rcpts, Rcpt{Rcpt: o.Rcpt, Action: a.String(), Code: o.Code})
	}
	r.Headers = make([]Header, 0, len(fa.Headers))
	for _, h := range fa.Headers {
		if omit[strings.ToLower(h.Name)] {
			if !slices.Contains(r.Omitted, h.Name) {
				r.Omitted = append(r.Omitted, h.Name)
			}
			continue
		}
		r.Headers = append(r.Headers, Header(h))
	}
	for _, a := range fa.Attachments {
		r.Attachments = append(r.Attachments, Attachment(a))
	}
	for _, u := range fa.URLs {
		r.URLs = append(r.URLs, URL(u))
	}
	if x := fa.Content; x != nil {
		c := Content(*x)
		r.Content = &c
	}
	c := &r.Checks
	if x := fa.IPRev; x != nil {
		c.IPRev = &IPRev{Result: x.Result, PTR: x.PTR, Names: x.Names, FCrDNS: x.FCrDNS}
	}
	c.DNSBL, c.URIBL = listsOf(fa.DNSBL), listsOf(fa.URIBL)
	c.SPFHelo, c.SPF = spfOf(fa.SPFHelo), spfOf(fa.SPF)
	for _, x := range fa.DKIM {
		c.DKIM = append(c.DKIM, DKIM{Domain: x.Domain, Selector: x.Selector, Algorithm: x.Algorithm, Result: x.Result, Reason: x.Reason, Identifier: x.Identifier})
	}
	if x := fa.DMARC; x != nil {
		c.DMARC = &DMARC{Result: x.Result, Policy: x.Policy, Domain: x.Domain, PolicyDomain: x.PolicyDomain, OrgDomain: x.OrgDomain, Testing: x.Testing, Reason: x.Reason}
	}
	for _, m := range f.Matches {
		r.Matches = append(r.Matches, Match{Rule: m.Rule, Action: m.Action, Stage: m.Stage.String(), Monitor: m.Monitor, Score: m.Score, Unknown: m.Unknown})
	}
	return r
}

func listsOf(rs []dnsbl.Result) []DNSList {
	var out []DNSList
	for _, x := range rs {
		out = append(out, DNSList{Zone: x.Zone, Query: x.Query, Codes: x.Codes, Names: x.Names, Allow: x.Allow, Error: x.Error})
	}
	return out
}

func listsBack(ls []DNSList) []dnsbl.Result {
	var out []dnsbl.Result
	for _, x := range ls {
		out = append(out, dnsbl.Result{Zone: x.Zone, Query: x.Query, Codes: x.Codes, Names: x.Names, Allow: x.Allow, Error: x.Error})
	}
	return out
}

func spfOf(x *spf.Result) *SPF {
	if x == nil {
		return nil
	}
	return &SPF{Result: x.Result, Domain: x.Domain, Explanation: x.Explanation, Reason: x.Reason}
}

func verdictOf(v policy.Verdict) Verdict {
	out := Verdict{Action: v.Action.String(), Stage: v.Stage.String(), Rule: v.Rule, Reason: v.Reason, Unknown: v.Unknown}
	if v.Action == policy.Reject || v.Action == policy.Tempfail {
		out.Code, out.Enhanced, out.Message = v.Code, v.Enhanced, v.Text
	}
	return out
}

// checked turns a line back into what the engine reads. It is the
// inverse of newRecord for everything the rules and checks can see.
type checked struct {
	ip      netip.Addr
	rcpts   []string
	reached policy.Stage
	headers []policy.Header
	attach  []policy.Attachment
	urls    []policy.URL
	content *policy.Content
	iprev   *iprev.Result
	dnsbl   []dnsbl.Result
	uribl   []dnsbl.Result
	spfHelo *spf.Result
	spf     *spf.Result
	dkim    []dkim.Result
	dmarc   *dmarc.Result
}

// decode checks a line's version and fields and converts them.
func (r *Record) decode() (*checked, error) {
	switch {
	case r.V == 0:
		return nil, fmt.Errorf("no version (\"v\"): not a journal line")
	case r.V > Version:
		return nil, fmt.Errorf("version %d is newer than this mailward reads (%d): replay with a newer mailward", r.V, Version)
	}
	out := &checked{}
	if r.IP != "" {
		ip, err := netip.ParseAddr(r.IP)
		if err != nil {
			return nil, fmt.Errorf("ip %q: %w", r.IP, err)
		}
		out.ip = ip
	}
	st, err := policy.ParseStage(r.Reached)
	if err != nil {
		return nil, fmt.Errorf("reached: %w", err)
	}
	out.reached = st
	for _, rc := range r.Rcpts {
		out.rcpts = append(out.rcpts, rc.Rcpt)
	}
	for _, h := range r.Headers {
		out.headers = append(out.headers, policy.Header(h))
	}
	for _, a := range r.Attachments {
		out.attach = append(out.attach, policy.Attachment(a))
	}
	for _, u := range r.URLs {
		out.urls = append(out.urls, policy.URL(u))
	}
	if x := r.Content; x != nil {
		c := policy.Content(*x)
		out.content = &c
	}
	c := &r.Checks
	if x := c.IPRev; x != nil {
		out.iprev = &iprev.Result{Result: x.Result, PTR: x.PTR, Names: x.Names, FCrDNS: x.FCrDNS}
	}
	out.dnsbl, out.uribl = listsBack(c.DNSBL), listsBack(c.URIBL)
	spfBack := func(x *SPF, identity string) *spf.Result {
		if x == nil {
			return nil
		}
		return &spf.Result{Result: x.Result, Domain: x.Domain, Identity: identity, Explanation: x.Explanation, Reason: x.Reason}
	}
	out.spfHelo, out.spf = spfBack(c.SPFHelo, "helo"), spfBack(c.SPF, "mailfrom")
	for _, x := range c.DKIM {
		out.dkim = append(out.dkim, dkim.Result{Domain: x.Domain, Selector: x.Selector, Algorithm: x.Algorithm, Result: x.Result, Reason: x.Reason, Identifier: x.Identifier})
	}
	if x := c.DMARC; x != nil {
		out.dmarc = &dmarc.Result{Result: x.Result, Policy: x.Policy, Domain: x.Domain, PolicyDomain: x.PolicyDomain, OrgDomain: x.OrgDomain, Testing: x.Testing, Reason: x.Reason}
	}
	return out, nil
}
