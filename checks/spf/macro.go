package spf

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// token is one piece of a macro-string (RFC 7208 section 7.1): literal
// text, or a macro to expand.
type token struct {
	literal string // set for literal text (including %%, %_ and %- already decoded)
	escaped bool   // literal came from %%, %_ or %- (it counts as a macro-expand)

	letter  byte // lower-case macro letter, 0 for a literal
	upper   bool // URL-escape the expansion
	digits  int  // keep this many right-hand parts; 0 means all
	reverse bool
	delims  string // split on these; "" means "."
}

type macroString []token

var errMacro = errors.New("invalid macro")

// parseMacroString parses s as a macro-string. In explanation text spaces
// are allowed and so are the c, r and t letters.
func parseMacroString(s string, explain bool) (macroString, error) {
	var out macroString
	lit := strings.Builder{}
	flush := func() {
		if lit.Len() > 0 {
			out = append(out, token{literal: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			// macro-literal = %x21-24 / %x26-7E; explanations add SP.
			if (c < 0x21 || c > 0x7e) && !(explain && c == ' ') {
				return nil, fmt.Errorf("%w: character %q", errMacro, c)
			}
			lit.WriteByte(c)
			continue
		}
		if i+1 >= len(s) {
			return nil, fmt.Errorf("%w: %% at end", errMacro)
		}
		i++
		switch s[i] {
		case '%', '_', '-':
			flush()
			out = append(out, token{literal: map[byte]string{'%': "%", '_': " ", '-': "%20"}[s[i]], escaped: true})
			continue
		case '{':
		default:
			return nil, fmt.Errorf("%w: %%%c", errMacro, s[i])
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return nil, fmt.Errorf("%w: unterminated %%{", errMacro)
		}
		t, err := parseMacro(s[i+1:i+end], explain)
		if err != nil {
			return nil, err
		}
		flush()
		out = append(out, t)
		i += end
	}
	flush()
	return out, nil
}

// parseMacro parses the inside of %{...}: letter, transformers, delimiters.
func parseMacro(m string, explain bool) (token, error) {
	if m == "" {
		return token{}, fmt.Errorf("%w: empty %%{}", errMacro)
	}
	var t token
	l := m[0]
	if l >= 'A' && l <= 'Z' {
		t.upper = true
		l += 'a' - 'A'
	}
	switch l {
	case 's', 'l', 'o', 'd', 'i', 'p', 'h', 'v':
	case 'c', 'r', 't':
		if !explain {
			return token{}, fmt.Errorf("%w: %%{%c} is only allowed in explanations", errMacro, m[0])
		}
	default:
		return token{}, fmt.Errorf("%w: unknown macro letter %q", errMacro, m[0])
	}
	t.letter = l
	rest := m[1:]
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	if n > 0 {
		d, err := strconv.Atoi(rest[:n])
		if err != nil {
			d = 1 << 30 // absurdly many: keep every part
		}
		if d == 0 {
			return token{}, fmt.Errorf("%w: zero digit transformer", errMacro)
		}
		t.digits = d
		rest = rest[n:]
	}
	if rest != "" && (rest[0] == 'r' || rest[0] == 'R') {
		t.reverse = true
		rest = rest[1:]
	}
	for i := 0; i < len(rest); i++ {
		if !strings.ContainsRune(".-+,/_=", rune(rest[i])) {
			return token{}, fmt.Errorf("%w: bad delimiter %q in %%{%s}", errMacro, rest[i], m)
		}
	}
	t.delims = rest
	return t, nil
}

// endsInMacro reports whether the last token is a macro-expand, which
// satisfies domain-end on its own.
func (ms macroString) endsInMacro() bool {
	if len(ms) == 0 {
		return false
	}
	last := ms[len(ms)-1]
	return last.letter != 0 || last.escaped
}

// macroValues are what the letters expand to for one evaluation.
type macroValues struct {
	sender, local, senderDomain, helo string
	ipDotted, ipVersion, client       string
	receiver, timestamp               string
	validated                         func(domain string) string // the p macro, looked up on demand
}

// expand expands ms with domain as the current domain (the d macro).
func (ms macroString) expand(v *macroValues, domain string) string {
	var b strings.Builder
	for _, t := range ms {
		if t.letter == 0 {
			b.WriteString(t.literal)
			continue
		}
		var s string
		switch t.letter {
		case 's':
			s = v.sender
		case 'l':
			s = v.local
		case 'o':
			s = v.senderDomain
		case 'd':
			s = domain
		case 'i':
			s = v.ipDotted
		case 'p':
			s = v.validated(domain)
		case 'v':
			s = v.ipVersion
		case 'h':
			s = v.helo
		case 'c':
			s = v.client
		case 'r':
			s = v.receiver
		case 't':
			s = v.timestamp
		}
		b.WriteString(t.transform(s))
	}
	return b.String()
}

// transform applies the digit, reverse and delimiter transformers and the
// URL escaping of upper-case letters (RFC 7208 section 7.3).
func (t token) transform(s string) string {
	if t.digits > 0 || t.reverse || t.delims != "" {
		delims := t.delims
		if delims == "" {
			delims = "."
		}
		parts := splitAny(s, delims)
		if t.reverse {
			for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
				parts[i], parts[j] = parts[j], parts[i]
			}
		}
		if t.digits > 0 && t.digits < len(parts) {
			parts = parts[len(parts)-t.digits:]
		}
		s = strings.Join(parts, ".")
	}
	if t.upper {
		s = urlEscape(s)
	}
	return s
}

func splitAny(s, delims string) []string {
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(delims, s[i]) >= 0 {
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// urlEscape escapes every byte outside RFC 3986's unreserved set.
func urlEscape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}
