package dmarc

import (
	"errors"
	"net/url"
	"strings"
)

// Record is a DMARC Policy Record (RFC 9989 section 4.7). Tags with a
// syntax error hold their defaults, as section 4.8 requires; P, SP and NP
// keep what was published (lower-cased) so that an invalid policy can be
// told from an absent one.
type Record struct {
	P, SP, NP string // as published; "" when absent
	ADKIM     string // "r" (default) or "s"
	ASPF      string // "r" (default) or "s"
	PSD       string // "y", "n" or "u" (default)
	// Testing is t=y, or the legacy pct=0 that t=y replaces (Appendix A.6).
	Testing bool
	RUA     []string // the syntactically valid URIs of rua=
	RUF     []string // the syntactically valid URIs of ruf=
	FO      string
	// Text is the record as published, for what needs a tag as written
	// (report delivery reads rua= with its "!size" suffixes).
	Text string
}

// ErrNotDMARC is returned by ParseRecord for text that is not a DMARC
// record: v=DMARC1 is not its first tag.
var ErrNotDMARC = errors.New("not a DMARC record: v=DMARC1 is not the first tag")

// ParseRecord parses the text of a _dmarc TXT record. Only a record that
// does not start with v=DMARC1 (value case-sensitive) is an error; unknown
// tags are ignored and bad values fall back to their defaults.
func ParseRecord(txt string) (*Record, error) {
	specs := strings.Split(strings.TrimLeft(txt, " \t"), ";")
	name, value, ok := strings.Cut(specs[0], "=")
	if !ok || !strings.EqualFold(trimWSP(name), "v") || trimWSP(value) != "DMARC1" {
		return nil, ErrNotDMARC
	}
	rec := &Record{ADKIM: "r", ASPF: "r", PSD: "u", Text: txt}
	seen := map[string]bool{}
	for _, spec := range specs[1:] {
		name, value, ok := strings.Cut(spec, "=")
		name, value = strings.ToLower(trimWSP(name)), trimWSP(value)
		if !ok || !isTagName(name) || !isTagValue(value) || seen[name] {
			continue // a broken or repeated tag is ignored; the first one stands
		}
		seen[name] = true
		switch name {
		case "p":
			rec.P = strings.ToLower(value)
		case "sp":
			rec.SP = strings.ToLower(value)
		case "np":
			rec.NP = strings.ToLower(value)
		case "adkim":
			if v := strings.ToLower(value); v == "r" || v == "s" {
				rec.ADKIM = v
			}
		case "aspf":
			if v := strings.ToLower(value); v == "r" || v == "s" {
				rec.ASPF = v
			}
		case "psd":
			if v := strings.ToLower(value); v == "y" || v == "n" || v == "u" {
				rec.PSD = v
			}
		case "t":
			if strings.EqualFold(value, "y") {
				rec.Testing = true
			}
		case "pct":
			// Gone from the standard; 0 meant what t=y now says.
			if strings.Trim(value, "0") == "" {
				rec.Testing = true
			}
		case "rua":
			rec.RUA = uriList(value)
		case "ruf":
			rec.RUF = uriList(value)
		case "fo":
			rec.FO = value
		}
	}
	return rec, nil
}

// Policies returns the policies for the domain itself, its existing
// subdomains and its non-existent subdomains (section 4.10.1). A record
// with a missing or invalid p=, or an invalid sp= or np=, counts as p=none
// when it asks for aggregate reports with at least one valid URI;
// otherwise ok is false and DMARC does not apply.
func (r *Record) Policies() (p, sp, np string, ok bool) {
	if !isPolicy(r.P) || r.SP != "" && !isPolicy(r.SP) || r.NP != "" && !isPolicy(r.NP) {
		if len(r.RUA) > 0 {
			return "none", "none", "none", true
		}
		return "", "", "", false
	}
	p, sp, np = r.P, r.SP, r.NP
	if sp == "" {
		sp = p
	}
	if np == "" {
		np = sp
	}
	return p, sp, np, true
}

func isPolicy(s string) bool { return s == "none" || s == "quarantine" || s == "reject" }

func trimWSP(s string) string { return strings.Trim(s, " \t") }

// isTagName is 1*ALPHA.
func isTagName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}

// isTagValue is 1*dmarc-value: printable ASCII and space, no semicolon.
func isTagValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// uriList keeps the syntactically valid URIs of a dmarc-urilist,
// dropping the obsolete "!size" suffix.
func uriList(s string) []string {
	var out []string
	for u := range strings.SplitSeq(s, ",") {
		u = trimWSP(u)
		if i := strings.LastIndexByte(u, '!'); i > 0 && isSize(u[i+1:]) {
			u = u[:i]
		}
		if validURI(u) {
			out = append(out, u)
		}
	}
	return out
}

func isSize(s string) bool {
	s = strings.TrimRight(s, "kmgtKMGT")
	if s == "" {
		return false
	}
	return strings.Trim(s, "0123456789") == ""
}

// validURI checks RFC 3986 absolute-URI syntax: a scheme and something after it.
func validURI(s string) bool {
	if s == "" || strings.ContainsAny(s, " \t,!") {
		return false
	}
	colon := strings.IndexByte(s, ':')
	if colon < 1 || colon == len(s)-1 {
		return false
	}
	for i := 0; i < colon; i++ {
		c := s[i]
		alpha := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !alpha && (i == 0 || (c < '0' || c > '9') && c != '+' && c != '-' && c != '.') {
			return false
		}
	}
	_, err := url.Parse(s)
	return err == nil
}
