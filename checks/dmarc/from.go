package dmarc

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"

	"github.com/mailward/mailward/internal/rfc5322"
)

// Errors that keep a message from having one Author Domain (RFC 9989
// sections 4.4 and 5.3.1). Check reports them as permerror.
var (
	ErrNoFrom        = errors.New("no From header")
	ErrSeveralFrom   = errors.New("several From headers")
	ErrFromSyntax    = errors.New("From header unparsable")
	ErrNoAuthor      = errors.New("From header has no address")
	ErrAuthorAddress = errors.New("From address has no valid domain")
)

// AuthorDomains returns the distinct domains of the addresses in a
// message's From fields, lower-cased A-labels, in order of appearance.
// from holds the raw value of every From field (folding allowed). A
// message must have exactly one From field; RFC 5322 group syntax (RFC
// 6854) is read. Domain literals come back as written, e.g. "[192.0.2.1]".
func AuthorDomains(from []string) ([]string, error) {
	switch len(from) {
	case 0:
		return nil, ErrNoFrom
	case 1:
	default:
		return nil, fmt.Errorf("%w (%d)", ErrSeveralFrom, len(from))
	}
	addrs, err := parseAddressList(from[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFromSyntax, err)
	}
	if len(addrs) == 0 {
		return nil, ErrNoAuthor
	}
	var out []string
	for _, a := range addrs {
		d := a
		if !strings.HasPrefix(a, "[") {
			if d, err = normalizeDomain(a); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrAuthorAddress, err)
			}
		}
		dup := false
		for _, o := range out {
			dup = dup || o == d
		}
		if !dup {
			out = append(out, d)
		}
	}
	return out, nil
}

// normalizeDomain lower-cases domain, drops a trailing dot and turns
// U-labels into A-labels (section 5.3.1).
func normalizeDomain(domain string) (string, error) {
	d := strings.TrimSuffix(strings.TrimSpace(domain), ".")
	ascii := true
	for i := 0; i < len(d); i++ {
		ascii = ascii && d[i] < utf8.RuneSelf
	}
	if !ascii {
		a, err := idna.Lookup.ToASCII(d)
		if err != nil {
			return "", fmt.Errorf("domain %q: %v", clip(d), err)
		}
		d = a
	}
	d = strings.ToLower(d)
	if d == "" || len(d) > 253 {
		return "", fmt.Errorf("%q is not a domain name", clip(d))
	}
	for label := range strings.SplitSeq(d, ".") {
		if !validLabel(label) {
			return "", fmt.Errorf("%q is not a domain name", clip(d))
		}
	}
	return d, nil
}

// validLabel accepts letters, digits, hyphens and (as some mail domains
// have them) underscores, 1 to 63 of them.
func validLabel(l string) bool {
	if l == "" || len(l) > 63 {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// Tokens of an RFC 5322 address field, CFWS dropped.
type tokKind int

const (
	tAtom    tokKind = iota // atext run; UTF-8 allowed (RFC 6532)
	tQuoted                 // quoted-string
	tLiteral                // domain-literal, with its brackets
	tSpecial                // one of ( ) < > [ ] : ; @ \ , .
)

type token struct {
	kind tokKind
	text string
}

func isAtext(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0 || c >= utf8.RuneSelf
}

func tokenize(s string) ([]token, error) {
	var toks []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			i++
		case c == '(':
			end, ok := rfc5322.CommentEnd(s, i)
			if !ok {
				return nil, errors.New("unterminated comment")
			}
			i = end
		case c == '"':
			j := i + 1
			for ; j < len(s) && s[j] != '"'; j++ {
				if s[j] == '\\' {
					j++
				}
			}
			if j >= len(s) {
				return nil, errors.New("unterminated quoted string")
			}
			toks = append(toks, token{tQuoted, s[i : j+1]})
			i = j + 1
		case c == '[':
			j := strings.IndexAny(s[i+1:], "[]\\")
			if j < 0 || s[i+1+j] != ']' {
				return nil, errors.New("unterminated domain literal")
			}
			toks = append(toks, token{tLiteral, s[i : i+j+2]})
			i += j + 2
		case isAtext(c):
			j := i
			for j < len(s) && isAtext(s[j]) {
				j++
			}
			if !utf8.ValidString(s[i:j]) {
				return nil, errors.New("invalid UTF-8")
			}
			toks = append(toks, token{tAtom, s[i:j]})
			i = j
		case strings.IndexByte(")<>]:;@\\,.", c) >= 0:
			toks = append(toks, token{tSpecial, s[i : i+1]}) // a substring: no allocation per token
			i++
		default:
			return nil, fmt.Errorf("control character %#x", c)
		}
	}
	return toks, nil
}

// addrParser reads an address-list and collects the domain of each mailbox.
type addrParser struct {
	toks    []token
	pos     int
	domains []string
}

func (p *addrParser) peek() token {
	if p.pos < len(p.toks) {
		return p.toks[p.pos]
	}
	return token{tSpecial, ""} // end of input
}

func (p *addrParser) is(special string) bool {
	t := p.peek()
	return t.kind == tSpecial && t.text == special
}

// parseAddressList returns the domain part of every mailbox in s.
func parseAddressList(s string) ([]string, error) {
	toks, err := tokenize(s)
	if err != nil {
		return nil, err
	}
	p := &addrParser{toks: toks}
	for {
		for p.is(",") { // obs-addr-list allows empty elements
			p.pos++
		}
		if p.pos >= len(p.toks) {
			return p.domains, nil
		}
		if err := p.address(false); err != nil {
			return nil, err
		}
		if p.pos < len(p.toks) && !p.is(",") {
			return nil, fmt.Errorf("unexpected %q after an address", p.peek().text)
		}
	}
}

// address reads a mailbox, or a group unless inGroup.
func (p *addrParser) address(inGroup bool) error {
	// A run of words: a display name, or the local-part of an addr-spec.
	start := p.pos
	for {
		t := p.peek()
		if t.kind == tAtom || t.kind == tQuoted || t.kind == tLiteral || t.kind == tSpecial && t.text == "." {
			p.pos++
			continue
		}
		break
	}
	words := p.toks[start:p.pos]
	switch {
	case p.is("@"):
		if err := checkLocalPart(words); err != nil {
			return err
		}
		p.pos++
		return p.domain()
	case p.is("<"):
		return p.angleAddr()
	case p.is(":") && !inGroup && len(words) > 0:
		p.pos++
		for {
			for p.is(",") {
				p.pos++
			}
			if p.is(";") {
				p.pos++
				return nil
			}
			if p.pos >= len(p.toks) {
				return errors.New("group not closed with ';'")
			}
			if err := p.address(true); err != nil {
				return err
			}
			if !p.is(",") && !p.is(";") {
				return fmt.Errorf("unexpected %q in a group", p.peek().text)
			}
		}
	case len(words) == 0:
		if p.pos >= len(p.toks) {
			return errors.New("address missing")
		}
		return fmt.Errorf("unexpected %q", p.peek().text)
	}
	// A display name with no address has no domain to contribute.
	return nil
}

// checkLocalPart accepts word *("." word), words being atoms or quoted strings.
func checkLocalPart(words []token) error {
	if len(words) == 0 {
		return errors.New("address with an empty local part")
	}
	for i, w := range words {
		dot := w.kind == tSpecial
		if dot != (i%2 == 1) || w.kind == tLiteral || i == len(words)-1 && dot {
			return errors.New("malformed local part")
		}
	}
	return nil
}

// angleAddr reads "<" [obs-route] addr-spec ">".
func (p *addrParser) angleAddr() error {
	p.pos++ // "<"
	if p.is("@") {
		// obs-route: @domain *("," [@domain]) ":", dropped.
		for p.is("@") || p.is(",") {
			if p.is("@") {
				p.pos++
				if _, err := p.readDomain(); err != nil {
					return err
				}
			} else {
				p.pos++
			}
		}
		if !p.is(":") {
			return errors.New("malformed route in angle address")
		}
		p.pos++
	}
	start := p.pos
	for t := p.peek(); t.kind == tAtom || t.kind == tQuoted || t.kind == tSpecial && t.text == "."; t = p.peek() {
		p.pos++
	}
	if err := checkLocalPart(p.toks[start:p.pos]); err != nil {
		return err
	}
	if !p.is("@") {
		return errors.New("angle address without '@'")
	}
	p.pos++
	if err := p.domain(); err != nil {
		return err
	}
	if !p.is(">") {
		return fmt.Errorf("unexpected %q in an angle address", p.peek().text)
	}
	p.pos++
	return nil
}

// domain reads a domain and records it.
func (p *addrParser) domain() error {
	d, err := p.readDomain()
	if err != nil {
		return err
	}
	p.domains = append(p.domains, d)
	return nil
}

// readDomain reads dot-atom / domain-literal / obs-domain; a trailing dot
// is tolerated.
func (p *addrParser) readDomain() (string, error) {
	t := p.peek()
	if t.kind == tLiteral {
		p.pos++
		return t.text, nil
	}
	if t.kind != tAtom {
		return "", errors.New("address without a domain")
	}
	p.pos++
	// A builder, and a length check per label: the labels are the
	// sender's, and a domain name is at most 253 octets.
	var d strings.Builder
	d.WriteString(t.text)
	for p.is(".") {
		p.pos++
		if p.peek().kind != tAtom {
			d.WriteByte('.')
			break
		}
		d.WriteByte('.')
		d.WriteString(p.peek().text)
		p.pos++
		if d.Len() > maxDomain+1 {
			return "", fmt.Errorf("domain longer than %d octets", maxDomain)
		}
	}
	if d.Len() > maxDomain+1 { // one trailing dot is allowed
		return "", fmt.Errorf("domain longer than %d octets", maxDomain)
	}
	return d.String(), nil
}

// maxDomain is the longest domain name in text form (RFC 1035 2.3.4, less
// the root label).
const maxDomain = 253
