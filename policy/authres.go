package policy

import (
	"strings"

	"github.com/mailward/mailward/internal/rfc5322"
)

// AuthResults builds the value of an Authentication-Results header
// (RFC 8601) for what is known about the message.
func AuthResults(authservID string, f *Facts) string {
	var b strings.Builder
	b.WriteString(authservID)
	n := 0
	add := func(method, result string, props ...string) {
		b.WriteString(";\r\n\t")
		b.WriteString(method + "=" + result)
		for i := 0; i+1 < len(props); i += 2 {
			if props[i+1] == "" {
				continue
			}
			b.WriteString(" " + props[i] + "=" + arValue(props[i+1]))
		}
		n++
	}
	if f.IPRev != nil && f.IP.IsValid() {
		add("iprev", f.IPRev.Result, "policy.iprev", f.IP.String())
		if f.IPRev.PTR != "" {
			b.WriteString(" (" + arComment(f.IPRev.PTR) + ")")
		}
	}
	if f.SPF != nil {
		from := f.MailFrom
		if from == "" {
			from = "postmaster@" + f.Helo
		}
		add("spf", f.SPF.Result, "smtp.mailfrom", from)
	}
	if f.SPFHelo != nil && f.Helo != "" {
		add("spf", f.SPFHelo.Result, "smtp.helo", f.Helo)
	}
	for _, d := range f.DKIM {
		add("dkim", d.Result, "header.d", d.Domain, "header.s", d.Selector, "header.b", d.Signature)
		if d.Reason != "" && d.Result != "pass" {
			b.WriteString(" (" + arComment(d.Reason) + ")")
		}
	}
	if f.DKIM == nil && f.DMARC != nil {
		add("dkim", "none")
	}
	if f.DMARC != nil {
		add("dmarc", f.DMARC.Result, "header.from", f.DMARC.Domain, "policy.dmarc", f.DMARC.Policy)
	}
	if n == 0 {
		b.WriteString("; none")
	}
	return b.String()
}

// arValue quotes a property value that is not a plain token.
func arValue(v string) string {
	for _, r := range v {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>,;:\"/[]?=`, r) {
			return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
		}
	}
	return v
}

func arComment(s string) string {
	return strings.NewReplacer("(", "[", ")", "]", "\r", " ", "\n", " ", `\`, "/").Replace(s)
}

// ForgedAuthResults finds the Authentication-Results headers that claim
// our authserv-id: a sender must not be able to forge our results
// (RFC 8601 section 5).
func ForgedAuthResults(headers []Header, authservID string) []HeaderRef {
	var out []HeaderRef
	idx := 0
	for _, h := range headers {
		// "Authentication-Results :" is the same field (RFC 5322 obsolete
		// syntax), and the MTA counts it as one of that name.
		if !strings.EqualFold(strings.TrimRight(h.Name, " \t"), "Authentication-Results") {
			continue
		}
		idx++
		if strings.EqualFold(AuthServID(h.Value), authservID) {
			out = append(out, HeaderRef{Name: "Authentication-Results", Index: idx})
		}
	}
	return out
}

// AuthServID returns the authserv-id of an Authentication-Results value:
// the first token or quoted-string (RFC 8601 section 2.2 takes RFC 2045's
// value), after comments and folding white space. A quoted-string is
// unescaped, so that "mx.example\.org" is read as the mx.example.org a
// mail reader shows.
func AuthServID(v string) string {
	v = skipCFWS(v)
	if strings.HasPrefix(v, `"`) {
		var b strings.Builder
		for i := 1; i < len(v); i++ {
			switch c := v[i]; c {
			case '"':
				return b.String()
			case '\\':
				if i+1 < len(v) {
					i++
					b.WriteByte(v[i])
				}
			case '\r', '\n':
				// Folding inside the quotes: the CRLF goes, the white space stays.
			default:
				b.WriteByte(c)
			}
		}
		return b.String() // unterminated: what there is
	}
	end := strings.IndexAny(v, " \t\r\n;(")
	if end < 0 {
		end = len(v)
	}
	return v[:end]
}

// skipCFWS drops leading white space and (nested) comments.
func skipCFWS(s string) string {
	for {
		s = strings.TrimLeft(s, " \t\r\n")
		if !strings.HasPrefix(s, "(") {
			return s
		}
		end, ok := rfc5322.CommentEnd(s, 0)
		if !ok {
			return ""
		}
		s = s[end:]
	}
}
