package content

import (
	"io"
	"mime"
	"net/mail"
	"strings"

	"golang.org/x/text/transform"
)

// fromMismatch says the From field's display name holds an address or
// a domain name of another registrable domain than the From address:
// "service@bank.example" <x@elsewhere.example>.
func fromMismatch(field string) bool {
	// Most display names hold no dot, at sign or encoded word: no
	// address parser for them.
	lt := strings.LastIndexByte(field, '<')
	if lt <= 0 || !strings.ContainsAny(field[:lt], ".@=") {
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
	own := registrable(strings.ToLower(strings.TrimSuffix(a.Address[at+1:], ".")))
	for _, w := range strings.FieldsFunc(a.Name, func(r rune) bool {
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
