package content

import (
	"io"
	"mime"
	"net/mail"
	"strings"

	"golang.org/x/text/transform"
	"golang.org/x/text/unicode/norm"
)

// fromMismatch says the From field's display name holds an address or
// a domain name of another registrable domain than the From address:
// "service@bank.example" <x@elsewhere.example>.
func fromMismatch(field string) bool {
	// Most display names hold no dot, at sign or encoded word: no
	// address parser for them.
	lt := strings.LastIndexByte(field, '<')
	if lt <= 0 || !strings.ContainsAny(field[:lt], ".@=") && isASCII(field[:lt]) {
		return false
	}
	p := mail.AddressParser{WordDecoder: &mime.WordDecoder{CharsetReader: func(label string, r io.Reader) (io.Reader, error) {
		tr, _ := charsetDecoder(label)
		return transform.NewReader(r, tr), nil
	}}}
	a, err := p.Parse(field)
	if err != nil || a.Name == "" {
		return false
	}
	at := strings.LastIndexByte(a.Address, '@')
	if at < 0 {
		return false
	}
	// The address's domain is read as the names of the display name
	// are: a domain in U-labels (RFC 6532) or upper case is its
	// A-labels, or every name would differ from it.
	own := ""
	if u, ok := Normalize("http://"+a.Address[at+1:], false); ok {
		own = registrable(u.Host)
	}
	for _, w := range strings.FieldsFunc(foldWide(a.Name), func(r rune) bool {
		return r == ' ' || r == '\t' || r == '<' || r == '>' || r == '(' || r == ')' || r == '"' || r == ',' || r == '|' || r == '['
	}) {
		w = strings.Trim(w, `.;:!?'`)
		if i := strings.LastIndexByte(w, '@'); i >= 0 {
			w = w[i+1:]
		} else if !looksLikeDomain(w) {
			continue
		}
		u, ok := Normalize("http://"+w, false)
		if !ok {
			continue
		}
		if d := registrable(u.Host); d != "" && d != own {
			return true
		}
	}
	return false
}

// foldWide reads text as a link's host is read (IDNA mapping): the
// compatibility forms a reader sees as ASCII ("ｐａｙｐａｌ．com",
// "service＠bank.example") become it (NFKC), and the full stops IDNA
// reads as dots ("paypal。com", "paypal｡com") become dots.
func foldWide(s string) string {
	if isASCII(s) {
		return s
	}
	return strings.ReplaceAll(norm.NFKC.String(s), "\u3002", ".")
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
