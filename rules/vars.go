package rules

import (
	"slices"
	"strings"

	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/checks/uribl"

	"github.com/mailward/mailward/policy"
)

// variable declares one name rules can read, in one place: the stage
// from which it is known, how it is filled from the facts, its value (for
// the VM and explanations) and, for a check's result, when a temporary
// error leaves it unknown. A new variable is a field of env, an id and an
// entry here (and a line in README.md).
type variable struct {
	name  string
	stage policy.Stage
	// fill sets the variable's env field from f; nil for those the
	// evaluation keeps up itself (header, score).
	fill  func(st *state, f *policy.Facts)
	value func(e *env) any
	// unknown names the check whose temporary error left the value
	// unknown in f, or ""; nil for values no check provides.
	unknown func(f *policy.Facts) string
}

var variables = [numVars]variable{
	// The connection.
	vIP: {name: "ip", stage: policy.StageConnect,
		fill: func(st *state, f *policy.Facts) {
			if f.IP.IsValid() {
				st.env.IP = f.IP.Unmap().WithZone("").String()
			}
		},
		value: func(e *env) any { return e.IP }},
	vIPVersion: {name: "ip_version", stage: policy.StageConnect,
		fill: func(st *state, f *policy.Facts) {
			switch {
			case !f.IP.IsValid():
			case f.IP.Unmap().Is4():
				st.env.IPVersion = 4
			default:
				st.env.IPVersion = 6
			}
		},
		value: func(e *env) any { return e.IPVersion }},

	// The iprev check (checks/iprev): its result and what it found.
	vIPRev: {name: "iprev", stage: policy.StageConnect, unknown: iprevUnknown,
		fill: func(st *state, f *policy.Facts) {
			if f.IPRev != nil {
				st.env.IPRev = f.IPRev.Result
			}
		},
		value: func(e *env) any { return e.IPRev }},
	vPTR: {name: "ptr", stage: policy.StageConnect, unknown: iprevUnknown,
		fill: func(st *state, f *policy.Facts) {
			if f.IPRev != nil {
				st.env.PTR = f.IPRev.PTR
			}
		},
		value: func(e *env) any { return e.PTR }},
	vFCrDNS: {name: "fcrdns", stage: policy.StageConnect, unknown: iprevUnknown,
		fill:  func(st *state, f *policy.Facts) { st.env.FCrDNS = f.IPRev != nil && f.IPRev.FCrDNS },
		value: func(e *env) any { return e.FCrDNS }},

	// The DNS lists (checks/dnsbl): IP lists at connect, domain lists as
	// names arrive (see dnslists.go for the stage of a rule naming one).
	vDNSBL: {name: "dnsbl", stage: policy.StageConnect, unknown: listsUnknown,
		fill: func(st *state, f *policy.Facts) {
			st.env.DNSBL = byZone(st.dnsbl, f.DNSBL, func(r *dnsbl.Result) []string { return r.Codes })
		},
		value: func(e *env) any { return e.DNSBL }},
	vDNSBLNames: {name: "dnsbl_names", stage: policy.StageConnect, unknown: listsUnknown,
		fill: func(st *state, f *policy.Facts) {
			st.env.DNSBLNames = byZone(st.names, f.DNSBL, func(r *dnsbl.Result) []string { return r.Names })
		},
		value: func(e *env) any { return e.DNSBLNames }},
	vDNSBLErrors: {name: "dnsbl_errors", stage: policy.StageConnect, unknown: listsUnknown,
		fill: func(st *state, f *policy.Facts) {
			for _, r := range f.DNSBL {
				if r.Error != "" && st.errs[r.Zone] == "" {
					st.errs[r.Zone] = r.Error
				}
			}
			st.env.DNSBLErrors = st.errs
		},
		value: func(e *env) any { return e.DNSBLErrors }},

	vNow: {name: "now", stage: policy.StageConnect,
		fill:  func(st *state, f *policy.Facts) { st.env.Now = f.Time },
		value: func(e *env) any { return e.Now }},
	vQueueID: {name: "queue_id", stage: policy.StageConnect,
		fill:  func(st *state, f *policy.Facts) { st.env.QueueID = f.QueueID },
		value: func(e *env) any { return e.QueueID }},

	// HELO and the envelope.
	vHelo: {name: "helo", stage: policy.StageHelo,
		fill:  func(st *state, f *policy.Facts) { st.env.Helo = f.Helo },
		value: func(e *env) any { return e.Helo }},
	vSPFHelo: {name: "spf_helo", stage: policy.StageHelo,
		unknown: func(f *policy.Facts) string {
			return resultUnknown("spf_helo", f.SPFHelo != nil && f.SPFHelo.Result == "temperror")
		},
		fill: func(st *state, f *policy.Facts) {
			if f.SPFHelo != nil {
				st.env.SPFHelo = f.SPFHelo.Result
			}
		},
		value: func(e *env) any { return e.SPFHelo }},
	vMailFrom: {name: "mail_from", stage: policy.StageMail,
		fill:  func(st *state, f *policy.Facts) { st.env.MailFrom = f.MailFrom },
		value: func(e *env) any { return e.MailFrom }},
	vMailFromDomain: {name: "mail_from_domain", stage: policy.StageMail,
		fill:  func(st *state, f *policy.Facts) { st.env.MailFromDomain = policy.DomainOf(f.MailFrom) },
		value: func(e *env) any { return e.MailFromDomain }},
	vAuthUser: {name: "auth_user", stage: policy.StageMail,
		fill:  func(st *state, f *policy.Facts) { st.env.AuthUser = f.AuthUser },
		value: func(e *env) any { return e.AuthUser }},
	vTLS: {name: "tls", stage: policy.StageMail,
		fill:  func(st *state, f *policy.Facts) { st.env.TLS = f.TLS },
		value: func(e *env) any { return e.TLS }},
	vSPF: {name: "spf", stage: policy.StageMail,
		unknown: func(f *policy.Facts) string { return resultUnknown("spf", f.SPF != nil && f.SPF.Result == "temperror") },
		fill: func(st *state, f *policy.Facts) {
			if f.SPF != nil {
				st.env.SPF = f.SPF.Result
			}
		},
		value: func(e *env) any { return e.SPF }},
	vRcpt: {name: "rcpt", stage: policy.StageRcpt,
		fill:  func(st *state, f *policy.Facts) { st.env.Rcpt = f.Rcpt },
		value: func(e *env) any { return e.Rcpt }},
	vRcpts: {name: "rcpts", stage: policy.StageRcpt,
		fill:  func(st *state, f *policy.Facts) { st.env.Rcpts = f.Rcpts },
		value: func(e *env) any { return e.Rcpts }},
	vRcptCount: {name: "rcpt_count", stage: policy.StageRcpt,
		fill: func(st *state, f *policy.Facts) {
			st.env.RcptCount = len(f.Rcpts)
			if f.Rcpt != "" {
				st.env.RcptCount++
			}
		},
		value: func(e *env) any { return e.RcptCount }},

	// The header.
	vHeaders: {name: "headers", stage: policy.StageData,
		fill: func(st *state, f *policy.Facts) {
			for _, h := range f.Headers {
				k := strings.ToLower(h.Name)
				st.headers[k] = append(st.headers[k], h.Value)
			}
			st.env.Headers = st.headers
		},
		value: func(e *env) any { return e.Headers }},
	vHeader: {name: "header", stage: policy.StageData,
		value: func(e *env) any { return e.Header }},
	vSubject: {name: "subject", stage: policy.StageData,
		fill:  func(st *state, f *policy.Facts) { st.env.Subject = decodeHeader(f.Header("Subject")) },
		value: func(e *env) any { return e.Subject }},
	vHeaderFrom: {name: "header_from", stage: policy.StageData,
		fill:  func(st *state, f *policy.Facts) { st.env.HeaderFrom = headerAddress(f.Header("From")) },
		value: func(e *env) any { return e.HeaderFrom }},
	vHeaderFromDomain: {name: "header_from_domain", stage: policy.StageData,
		fill: func(st *state, f *policy.Facts) {
			st.env.HeaderFromDomain = policy.DomainOf(headerAddress(f.Header("From")))
		},
		value: func(e *env) any { return e.HeaderFromDomain }},
	vMessageID: {name: "message_id", stage: policy.StageData,
		fill:  func(st *state, f *policy.Facts) { st.env.MessageID = strings.TrimSpace(f.Header("Message-ID")) },
		value: func(e *env) any { return e.MessageID }},

	// End of message.
	vSize: {name: "size", stage: policy.StageEOM,
		fill:  func(st *state, f *policy.Facts) { st.env.Size = int(f.Size) },
		value: func(e *env) any { return e.Size }},
	vAttachments: {name: "attachments", stage: policy.StageEOM,
		fill: func(st *state, f *policy.Facts) {
			if len(f.Attachments) == 0 {
				return
			}
			st.env.Attachments = make([]Attachment, len(f.Attachments))
			for i, a := range f.Attachments {
				st.env.Attachments[i] = Attachment{Name: a.Name, ContentType: strings.ToLower(a.ContentType), Size: int(a.Size)}
			}
		},
		value: func(e *env) any { return e.Attachments }},
	vDKIM: {name: "dkim", stage: policy.StageEOM,
		unknown: func(f *policy.Facts) string {
			for _, d := range f.DKIM {
				if d.Result == "temperror" {
					return "dkim temperror"
				}
			}
			return ""
		},
		fill: func(st *state, f *policy.Facts) {
			if len(f.DKIM) == 0 {
				return
			}
			st.env.DKIM = make([]DKIMResult, len(f.DKIM))
			for i, d := range f.DKIM {
				st.env.DKIM[i] = DKIMResult{Domain: strings.ToLower(d.Domain), Selector: d.Selector, Algorithm: d.Algorithm, Result: d.Result, Reason: d.Reason}
			}
		},
		value: func(e *env) any { return e.DKIM }},
	vDMARC: {name: "dmarc", stage: policy.StageEOM,
		unknown: func(f *policy.Facts) string {
			return resultUnknown("dmarc", f.DMARC != nil && f.DMARC.Result == "temperror")
		},
		fill: func(st *state, f *policy.Facts) {
			if d := f.DMARC; d != nil {
				st.env.DMARC = DMARCResult{Result: d.Result, Policy: d.Policy, Domain: strings.ToLower(d.Domain),
					PolicyDomain: d.PolicyDomain, OrgDomain: d.OrgDomain, Testing: d.Testing, Reason: d.Reason}
			}
		},
		value: func(e *env) any { return e.DMARC }},

	// The URI lists (checks/uribl), asked about the links' domains.
	vURIBL: {name: "uribl", stage: policy.StageEOM, unknown: uriListsUnknown,
		fill:  func(st *state, f *policy.Facts) { st.env.URIBL = uriblNames(f.URIBL) },
		value: func(e *env) any { return e.URIBL }},
	vURIBLErrors: {name: "uribl_errors", stage: policy.StageEOM, unknown: uriListsUnknown,
		fill:  func(st *state, f *policy.Facts) { st.env.URIBLErrors = listErrors(f.URIBL) },
		value: func(e *env) any { return e.URIBLErrors }},

	// The content scan (checks/content), at end of message.
	vBodyText: {name: "body_text", stage: policy.StageEOM,
		fill:  func(st *state, f *policy.Facts) { st.env.BodyText = f.BodyText },
		value: func(e *env) any { return e.BodyText }},
	vHTML: {name: "html", stage: policy.StageEOM,
		fill:  func(st *state, f *policy.Facts) { st.env.HTML = f.Content != nil && f.Content.HTML },
		value: func(e *env) any { return e.HTML }},
	vTextParts: {name: "text_parts", stage: policy.StageEOM,
		fill: func(st *state, f *policy.Facts) {
			if f.Content != nil {
				st.env.TextParts = f.Content.TextParts
			}
		},
		value: func(e *env) any { return e.TextParts }},
	vURLs: {name: "urls", stage: policy.StageEOM,
		fill: func(st *state, f *policy.Facts) {
			if len(f.URLs) == 0 {
				return
			}
			st.env.URLs = make([]URL, len(f.URLs))
			for i, u := range f.URLs {
				st.env.URLs[i] = URL(u)
			}
		},
		value: func(e *env) any { return e.URLs }},
	vURLDomains: {name: "url_domains", stage: policy.StageEOM,
		fill:  func(st *state, f *policy.Facts) { st.env.URLDomains = urlDomains(f.URLs) },
		value: func(e *env) any { return e.URLDomains }},
	vURLCount: {name: "url_count", stage: policy.StageEOM,
		fill: func(st *state, f *policy.Facts) {
			st.env.URLCount = len(f.URLs)
			if f.Content != nil {
				st.env.URLCount = max(f.Content.URLCount, len(f.URLs))
			}
		},
		value: func(e *env) any { return e.URLCount }},
	vPhishLinks: {name: "phish_links", stage: policy.StageEOM,
		fill: func(st *state, f *policy.Facts) {
			if f.Content != nil {
				st.env.PhishLinks = f.Content.PhishLinks
			}
		},
		value: func(e *env) any { return e.PhishLinks }},
	vFromMismatch: {name: "from_display_mismatch", stage: policy.StageEOM,
		fill: func(st *state, f *policy.Facts) {
			st.env.FromMismatch = f.Content != nil && f.Content.FromDisplayMismatch
		},
		value: func(e *env) any { return e.FromMismatch }},

	vScore: {name: "score", stage: policy.StageEOM,
		value: func(e *env) any { return e.Score }},
}

func iprevUnknown(f *policy.Facts) string {
	return resultUnknown("iprev", f.IPRev != nil && f.IPRev.Result == "temperror")
}

func listsUnknown(f *policy.Facts) string {
	var zones []string
	for _, r := range f.DNSBL {
		if r.Error != "" {
			zones = append(zones, r.Zone)
		}
	}
	if len(zones) == 0 {
		return ""
	}
	return "DNS list " + strings.Join(zones, ", ") + " failed"
}

// urlDomains are the distinct domains of urls in order. content.max_urls
// goes up to 10,000: past a few, a set tells repeats, not a look
// through those kept for each.
func urlDomains(urls []policy.URL) []string {
	var out []string
	var seen map[string]bool
	for _, u := range urls {
		if u.Domain == "" {
			continue
		}
		if seen == nil && len(out) >= 16 {
			seen = make(map[string]bool, len(urls))
			for _, d := range out {
				seen[d] = true
			}
		}
		if seen != nil {
			if seen[u.Domain] {
				continue
			}
			seen[u.Domain] = true
		} else if slices.Contains(out, u.Domain) {
			continue
		}
		out = append(out, u.Domain)
	}
	return out
}

func uriListsUnknown(f *policy.Facts) string {
	if listErrors(f.URIBL) == nil {
		return ""
	}
	return "URI list failed"
}

// uriblNames is what the uribl variable holds: the names of each
// listing by zone, its codes where the configuration names none, so that
// every listing shows. Most messages have none: no map is made for them.
func uriblNames(results []uribl.Result) map[string][]string {
	var m map[string][]string
	for _, r := range results {
		more := r.Names
		if len(more) == 0 {
			more = r.Codes
		}
		if r.Error != "" || len(more) == 0 {
			continue
		}
		if m == nil {
			m = map[string][]string{}
		}
		for _, n := range more {
			if !slices.Contains(m[r.Zone], n) {
				m[r.Zone] = append(m[r.Zone], n)
			}
		}
	}
	return m
}

// listErrors maps each failed zone to its first error; nil for none.
func listErrors(results []uribl.Result) map[string]string {
	var m map[string]string
	for _, r := range results {
		if r.Error == "" {
			continue
		}
		if m == nil {
			m = map[string]string{}
		}
		if m[r.Zone] == "" {
			m[r.Zone] = r.Error
		}
	}
	return m
}

func resultUnknown(check string, temperror bool) string {
	if temperror {
		return check + " temperror"
	}
	return ""
}

// byZone gathers what pick takes from each list's answers into m, by
// zone: a zone can answer for several names (the client, HELO, sender
// domain). Appending copies, so as never to write into the facts' own
// arrays.
func byZone(m map[string][]string, results []dnsbl.Result, pick func(*dnsbl.Result) []string) map[string][]string {
	for i := range results {
		if more := pick(&results[i]); len(more) > 0 {
			old := m[results[i].Zone]
			m[results[i].Zone] = append(old[:len(old):len(old)], more...)
		}
	}
	return m
}

// unknownText says which of the variables r reads f leaves unknown
// because a check had a temporary error, and why: "fcrdns, ptr (iprev
// temperror)"; "" when it knows them all.
func unknownText(r *rule, f *policy.Facts) string {
	var parts, names []string
	last := ""
	for id := 0; id < numVars; id++ {
		v := &variables[id]
		if r.reads&(1<<id) == 0 || v.unknown == nil {
			continue
		}
		c := v.unknown(f)
		switch {
		case c == "":
		case dnsListVars&(1<<id) != 0:
			c = r.failedLists(f.DNSBL, "DNS list") // only the lists the rule reads count
		case uriListVars&(1<<id) != 0:
			c = r.failedLists(f.URIBL, "URI list")
		}
		if c == "" {
			continue
		}
		if c != last && len(names) > 0 {
			parts = append(parts, strings.Join(names, ", ")+" ("+last+")")
			names = nil
		}
		last = c
		names = append(names, v.name)
	}
	if len(names) == 0 {
		return ""
	}
	parts = append(parts, strings.Join(names, ", ")+" ("+last+")")
	return strings.Join(parts, "; ")
}
