package content

import (
	"bytes"
	"cmp"
	"strings"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

const (
	// maxToken bounds one token of the tokenizer (a tag with its
	// attributes, a run of text): past it the part is read no further.
	maxToken = 64 << 10
	// anchorKeep is how much of a link's visible text is kept to see
	// which domain it shows.
	anchorKeep = 512
)

// addHTML keeps the markup of an HTML part for the tokenizer, which
// reads a whole part: at most htmlFactor × MaxTextBytes per message.
func (s *Scanner) addHTML(b []byte) {
	room := htmlFactor*s.o.MaxTextBytes - s.htmlN
	if len(b) > room {
		b = b[:max(room, 0)]
		s.setLimit("HTML over %d bytes", htmlFactor*s.o.MaxTextBytes)
	}
	s.html = append(s.html, b...)
	s.htmlN += len(b)
}

// endHTML reads the HTML part kept: its text as the reader sees it
// (scripts, styles and the title dropped), the links of
// href and src attributes, and links whose text shows another domain.
func (s *Scanner) endHTML() {
	s.scanHTML(s.html)
	s.html = s.html[:0]
}

func (s *Scanner) scanHTML(markup []byte) {
	z := html.NewTokenizer(bytes.NewReader(markup))
	z.SetMaxBuf(maxToken)
	var (
		skip    int // inside script, style, head's title etc.
		anchor  bool
		href    URL
		hrefOK  bool
		unread  bool // the href's host was not read for the IDNA bound
		visible []byte
	)
	endAnchor := func() {
		if anchor && (hrefOK || unread) && (bytes.IndexByte(visible, '.') >= 0 || !isASCII(string(visible))) {
			// A link to an IP address showing a name deceives as well.
			// Past the IDNA bound, a host or a shown name that was not
			// read counts against the sender who padded the message
			// with such names: it cannot be told to match.
			d, shownUnread := s.shownDomain(visible)
			if shownUnread || d != "" && (unread || d != cmp.Or(registrable(href.Host), href.Host)) {
				s.res.PhishLinks++
			}
		}
		anchor, hrefOK, unread, visible = false, false, false, visible[:0]
	}
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			if z.Err() == html.ErrBufferExceeded {
				s.setLimit("HTML token over %d bytes", maxToken)
			}
			endAnchor()
			s.addText([]byte{'\n'})
			return
		case html.TextToken:
			if skip > 0 {
				continue
			}
			t := z.Text()
			s.addText(t)
			if anchor && len(visible) < anchorKeep {
				visible = append(visible, t[:min(len(t), anchorKeep-len(visible))]...)
			}
		case html.StartTagToken, html.SelfClosingTagToken:
			a := tagAtom(z.Raw())
			switch a {
			case atom.Script, atom.Style, atom.Title:
				if tt == html.StartTagToken {
					skip++
				}
				continue
			case atom.A:
				endAnchor()
			}
			if block(a) {
				s.addText([]byte{'\n'})
			}
			for more := linkTag(a); more; {
				var key, val []byte
				key, val, more = z.TagAttr()
				if !linkAttr(a, key) {
					continue
				}
				u, ok, notRead := s.link(val, true, a == atom.A)
				if a == atom.A && string(key) == "href" {
					anchor, href, hrefOK, unread = ok, u, ok, notRead && !ok
				}
			}
			if a == atom.A && !hrefOK {
				anchor = true // a link that goes nowhere shows no deceit
			}
		case html.EndTagToken:
			a := tagAtom(z.Raw())
			switch a {
			case atom.Script, atom.Style, atom.Title:
				if skip > 0 {
					skip--
				}
				continue
			case atom.A:
				endAnchor()
			}
			if block(a) {
				s.addText([]byte{'\n'})
			}
		}
	}
}

// tagAtom reads the element of a tag as written ("<IMG src=...>",
// "</a>"): the tokenizer's TagName would copy it for every tag.
func tagAtom(raw []byte) atom.Atom {
	raw = bytes.TrimPrefix(raw, []byte("<"))
	raw = bytes.TrimPrefix(raw, []byte("/"))
	var name [16]byte
	n := 0
	for _, c := range raw {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			break
		}
		if n == len(name) {
			return 0 // longer than any element that matters here
		}
		name[n] = c
		n++
	}
	return atom.Lookup(name[:n])
}

// linkTag says an element may have an attribute with a link out: the
// attributes of others are not read (each costs the tokenizer a copy).
func linkTag(a atom.Atom) bool {
	switch a {
	case atom.A, atom.Area, atom.Img, atom.Iframe, atom.Frame, atom.Embed, atom.Script, atom.Source, atom.Form,
		atom.Body, atom.Table, atom.Td, atom.Th, atom.Tr:
		return true
	}
	return false
}

// linkAttr says an attribute holds a link out.
func linkAttr(a atom.Atom, key []byte) bool {
	switch string(key) {
	case "href":
		return a == atom.A || a == atom.Area
	case "src":
		return a == atom.Img || a == atom.Iframe || a == atom.Frame || a == atom.Embed || a == atom.Script || a == atom.Source
	case "background":
		return a != atom.A
	case "action":
		return a == atom.Form
	}
	return false
}

// block says an element breaks the text as a reader shows it.
func block(a atom.Atom) bool {
	switch a {
	case atom.Br, atom.P, atom.Div, atom.Tr, atom.Td, atom.Th, atom.Li, atom.Table,
		atom.H1, atom.H2, atom.H3, atom.H4, atom.H5, atom.H6, atom.Blockquote, atom.Hr,
		atom.Ul, atom.Ol, atom.Pre, atom.Section, atom.Article, atom.Header, atom.Footer:
		return true
	}
	return false
}

// shownDomain returns the registrable domain a link's visible text
// shows, if it shows one: a URL, an address or a bare domain name.
// unread says a name it shows was not read for the IDNA bound.
func (s *Scanner) shownDomain(text []byte) (domain string, unread bool) {
	t := strings.TrimSpace(string(text))
	if t == "" || len(t) > anchorKeep {
		return "", false
	}
	// Read as the From display name is: "paypal．com" is paypal.com.
	t = foldWide(t)
	for _, w := range strings.Fields(t) {
		w = strings.Trim(w, `.,;:!?()[]{}<>"'`)
		if i := strings.LastIndexByte(w, '@'); i >= 0 && !strings.Contains(w, "/") {
			w = w[i+1:]
		}
		var u URL
		var ok, notRead bool
		switch {
		case strings.Contains(w, "://") || hasPrefixFold(w, "www."):
			u, ok, notRead = s.normalize(w, false)
		case looksLikeDomain(w):
			u, ok, notRead = s.normalize("http://"+w, false)
		default:
			continue
		}
		if notRead {
			return "", true
		}
		if !ok {
			continue
		}
		if d := registrable(u.Host); d != "" {
			return d, false
		}
	}
	return "", false
}
