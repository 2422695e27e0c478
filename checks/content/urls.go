package content

import (
	"bytes"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
)

const (
	// maxWord bounds a run of text without a break looked at for a link.
	maxWord = 4 << 10
	// maxPath bounds the path kept of a URL.
	maxPath = 1 << 10
)

// wordScanner cuts the decoded text into runs without white space or
// quotes and looks for links in each.
type wordScanner struct {
	s    *Scanner
	word []byte
	long bool // the run passed maxWord: the rest of it is not kept
}

func isBreak(c byte) bool { return breaks[c] }

// breaks is isBreak as a table: the run loops test every byte of text.
var breaks = func() (t [256]bool) {
	for c := 0; c <= ' '; c++ {
		t[c] = true
	}
	for _, c := range "<>\"`\x7f" {
		t[c] = true
	}
	return t
}()

// write looks at the runs of b in place; only a run cut by the end of
// b is kept, to be ended by the next write.
func (w *wordScanner) write(b []byte) {
	if len(w.word) > 0 || w.long {
		i := 0
		for i < len(b) && !isBreak(b[i]) {
			i++
		}
		w.add(b[:i])
		if i == len(b) {
			return
		}
		w.end()
		b = b[i+1:]
	}
	last := len(b) - 1
	for last >= 0 && !isBreak(b[last]) {
		last--
	}
	if last < 0 {
		w.add(b)
		return
	}
	w.runs(b[:last])
	w.add(b[last+1:])
}

// runs looks at each run of b as end would had it been kept: its first
// maxWord bytes, so that a link far into a long run is found or not
// whatever the pieces the text came in.
func (w *wordScanner) runs(b []byte) {
	for len(b) > 0 {
		i := 0
		for i < len(b) && !isBreak(b[i]) {
			i++
		}
		if i >= 4 {
			w.s.findLinks(b[:min(i, maxWord)])
		}
		if i == len(b) {
			return
		}
		b = b[i+1:]
	}
}

func (w *wordScanner) add(b []byte) {
	if room := maxWord - len(w.word); len(b) > room {
		b = b[:room]
		w.long = true
	}
	w.word = append(w.word, b...)
}

func (w *wordScanner) end() {
	if len(w.word) >= 4 {
		w.s.findLinks(w.word)
	}
	w.word, w.long = w.word[:0], false
}

// starts are what a link in text begins with, lower-case.
var starts = []string{"http://", "https://", "hxxp://", "hxxps://", "www.", "www[.]"}

// findLinks finds each link in text: a link ends at a break (white
// space, quotes, angle brackets), and one that begins inside another (a
// redirector's target) is a link too.
func (s *Scanner) findLinks(word []byte) {
	if s.linksOut {
		// Past the links looked at: no link in text is read, and
		// finding them would cost each its length again.
		return
	}
	runEnd := 0 // the break that ends the run at i
	for i := 0; i+4 <= len(word); i++ {
		c := word[i] | 0x20
		if c != 'h' && c != 'w' {
			continue
		}
		if c == 'w' && i > 0 && (isHostByte(word[i-1]) || word[i-1] == '@') {
			// "awww.", "1.www." is not the start of a name, and the
			// domain of an address ("me@www.example") is no link.
			continue
		}
		for _, p := range starts {
			if len(word)-i >= len(p) && bytesPrefixFold(word[i:], p) {
				// Every link of a run ends where the run does: found
				// once per run, or a run of links would cost its
				// length for each.
				if runEnd <= i {
					runEnd = i + len(p)
					for runEnd < len(word) && !isBreak(word[runEnd]) && (word[runEnd] < 0x80 || !isWideBreak(word[runEnd:])) {
						runEnd++
					}
				}
				end := min(runEnd, i+maxWord)
				s.link(trimLink(word[i:end]), false, false)
				if s.linksOut {
					return
				}
				// On past the host: "www." in "http://www.x" is not
				// another link, a link in the path is.
				j := i + len(p)
				for j < len(word) && !isBreak(word[j]) && strings.IndexByte(`/?#\`, word[j]) < 0 {
					j++
				}
				i = j - 1
				break
			}
		}
	}
}

// isWideBreak says the character b starts with ends a link in text as
// white space or punctuation outside ASCII do: "&nbsp;" after a link in
// HTML, "。", "、" or "）" after one in CJK text. A full stop IDNA reads as
// a dot ("ex。example") goes on when a name follows it.
func isWideBreak(b []byte) bool {
	r, n := utf8.DecodeRune(b)
	switch r {
	case '\u3002', '\uFF0E', '\uFF61':
		return n == len(b) || !isHostByte(b[n])
	}
	return unicode.IsSpace(r) || unicode.IsPunct(r)
}

func isHostByte(c byte) bool {
	return 'a' <= c|0x20 && c|0x20 <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.'
}

// trimLink drops what ends a sentence rather than a link. A closing
// bracket the link opened stays: "http://[2001:db8::1]" is an IPv6
// literal, "/wiki/Foo_(bar)" a path.
func trimLink(b []byte) []byte {
	end := len(b)
	for end > 0 && strings.IndexByte(`.,;:!?)]}'*`, b[end-1]) >= 0 {
		end--
	}
	if end == len(b) {
		return b
	}
	// Counted once, then kept track of, so that a long tail of brackets
	// costs its length.
	open := [2]int{bytes.Count(b[:end], []byte("(")), bytes.Count(b[:end], []byte("["))}
	shut := [2]int{bytes.Count(b[:end], []byte(")")), bytes.Count(b[:end], []byte("]"))}
	for end < len(b) {
		k := strings.IndexByte(")]", b[end])
		if k < 0 || shut[k] >= open[k] {
			break
		}
		shut[k]++
		end++
	}
	return b[:end]
}

// bytesPrefixFold is hasPrefixFold for a lower-case ASCII prefix.
func bytesPrefixFold(b []byte, prefix string) bool {
	if len(b) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

var lookup = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.Transitional(false))

// Normalize reads one link as written. attr says it is an HTML
// attribute value, where "//host/..." is a link and "www.host" is not.
// Only http and https links count; hxxp and "[.]" are undone.
func Normalize(raw string, attr bool) (URL, bool) {
	return normalize(raw, attr, nil)
}

// idnaBudget is what a message may spend on hosts that need IDNA. A
// host read once is kept with what IDNA made of it, in at most as many
// bytes again, and not paid for again: a newsletter whose every anchor
// names its own bücher.example, in its href and its text, must not run
// out of the bound and have its anchors counted as deceit.
type idnaBudget struct {
	left    int  // bytes of such hosts left
	refused bool // a host was not read for want of them
	read    map[string]idnaRead
	kept    int // bytes of read: hosts, A-labels, entryCost each
}

// entryCost is what a map entry of idnaBudget.read costs besides its
// strings' bytes.
const entryCost = 64

type idnaRead struct {
	ascii string
	ok    bool
}

// toASCII is IDNA's lookup of a host, within b when b is not nil.
func (b *idnaBudget) toASCII(host string) (string, bool) {
	if b != nil {
		if r, hit := b.read[host]; hit {
			return r.ascii, r.ok
		}
		if b.left < len(host) {
			b.left, b.refused = 0, true
			return "", false
		}
		b.left -= len(host)
	}
	a, err := lookup.ToASCII(host)
	if err != nil {
		a, err = idna.Punycode.ToASCII(strings.ToLower(host))
	}
	// A full stop IDNA reads as a dot can end the name, as a dot can:
	// "spam.example。" is spam.example.
	a = strings.TrimRight(strings.ToLower(a), ".")
	ok := err == nil
	if !ok {
		a = ""
	}
	if cost := len(host) + len(a) + entryCost; b != nil && b.kept+cost <= maxIDNABytes {
		if b.read == nil {
			b.read = map[string]idnaRead{}
		}
		// Cloned: host is part of a link's text, which it would keep.
		b.read[strings.Clone(host)] = idnaRead{a, ok}
		b.kept += cost
	}
	return a, ok
}

// normalize is Normalize spending b, when not nil, on the bytes of hosts
// that need IDNA.
func normalize(raw string, attr bool, b *idnaBudget) (URL, bool) {
	if len(raw) > maxWord {
		raw = raw[:maxWord]
	}
	// Browsers drop C0 controls and spaces around a URL (WHATWG URL),
	// so "&#1;http://host/" goes to host.
	raw = strings.TrimFunc(raw, func(r rune) bool { return r <= ' ' || unicode.IsSpace(r) })
	if strings.ContainsAny(raw, "\t\r\n") {
		// Browsers drop these from a URL.
		raw = strings.NewReplacer("\t", "", "\r", "", "\n", "").Replace(raw)
	}
	var u URL
	var rest string
	// Browsers skip every "/" and "\" after an http or https scheme:
	// "https:\\host", "http:/host" and "http:host" go to host.
	switch i := strings.IndexByte(raw, ':'); {
	case i > 0 && i <= 5 && (i+2 < len(raw) && raw[i+1:i+3] == "//" || isScheme(raw[:i])):
		u.Scheme = strings.ToLower(raw[:i])
		rest = strings.TrimLeft(raw[i+1:], `/\`)
	case attr && len(raw) >= 2 && strings.IndexByte(`/\`, raw[0]) >= 0 && strings.IndexByte(`/\`, raw[1]) >= 0:
		u.Scheme, rest = "http", strings.TrimLeft(raw, `/\`)
	case !attr && (hasPrefixFold(raw, "www.") || hasPrefixFold(raw, "www[.]")):
		u.Scheme, rest = "http", raw
	default:
		return URL{}, false
	}
	switch u.Scheme {
	case "http", "https":
	case "hxxp", "hxxps":
		u.Scheme = "http" + u.Scheme[4:]
	default:
		return URL{}, false
	}
	end := strings.IndexAny(rest, `/?#\`)
	if end < 0 {
		end = len(rest)
	}
	auth, path := rest[:end], rest[end:]
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	if len(path) > maxPath {
		path = path[:maxPath]
	}
	u.Path = strings.ReplaceAll(path, `\`, "/")
	if i := strings.LastIndexByte(auth, '@'); i >= 0 {
		auth = auth[i+1:]
	}
	host, ok := hostOf(auth, b)
	if !ok {
		return URL{}, false
	}
	u.Host = host
	return u, true
}

// isScheme says s is a scheme Normalize keeps, in any case.
func isScheme(s string) bool {
	for _, k := range []string{"http", "https", "hxxp", "hxxps"} {
		if strings.EqualFold(s, k) {
			return true
		}
	}
	return false
}

// hostOf returns the normalised host of an authority without userinfo.
func hostOf(auth string, b *idnaBudget) (string, bool) {
	auth = strings.ReplaceAll(auth, "[.]", ".")
	var host string
	if strings.HasPrefix(auth, "[") {
		i := strings.IndexByte(auth, ']')
		if i < 0 {
			return "", false
		}
		a, err := netip.ParseAddr(auth[1:i])
		if err != nil {
			return "", false
		}
		return a.WithZone("").String(), true
	}
	host = auth
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	if strings.IndexByte(host, '%') >= 0 {
		host = percentDecode(host)
	}
	host = strings.TrimRight(host, ".")
	if host == "" || len(host) > 253*4 {
		return "", false
	}
	if strings.IndexByte(host, ':') >= 0 {
		if a, err := netip.ParseAddr(host); err == nil {
			return a.String(), true
		}
	}
	ascii := true
	for i := 0; i < len(host); i++ {
		if host[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		host = strings.ToLower(host)
	} else {
		if !labelsFit(host) {
			return "", false
		}
		a, ok := b.toASCII(host)
		if !ok {
			return "", false
		}
		host = a
	}
	if len(host) > 253 {
		return "", false
	}
	if endsInNumber(host) {
		// Browsers read a host whose last label is a number as an IPv4
		// address ("3232235777", "0x7f.1", "0177.0.0.1") or reject the
		// link: such a host is no name to ask a domain list about.
		return parseIPv4(host)
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return "", false
		}
	}
	if strings.HasPrefix(host, ".") || strings.Contains(host, "..") {
		return "", false
	}
	return host, true
}

// labelsFit says no label of a host holds more characters than fit the
// 63 octets of a DNS label once in A-labels, nor the host more than its
// 253: each character IDNA does not drop costs at least one. Punycode's
// cost grows with the square of a label's length, which a link must not
// choose.
func labelsFit(host string) bool {
	n, total := 0, 0 // characters of this label, of the host
	for _, r := range host {
		switch {
		case r == '.' || r == '\u3002' || r == '\uFF0E' || r == '\uFF61':
			n = 0
			total++
			continue
		case idnaIgnored(r):
			continue
		}
		n++
		total++
		if n > 63 || total > 253 {
			return false
		}
	}
	return true
}

// idnaIgnored says IDNA's mapping drops r (UTS 46 "ignored": soft
// hyphen, zero-width space and joiners, variation selectors, BOM).
func idnaIgnored(r rune) bool {
	switch {
	case r == 0xAD, r == 0x34F, 0x180B <= r && r <= 0x180F, 0x200B <= r && r <= 0x200D, r == 0x2060, r == 0x2064,
		0xFE00 <= r && r <= 0xFE0F, r == 0xFEFF, 0x1BCA0 <= r && r <= 0x1BCA3, 0xE0100 <= r && r <= 0xE01EF:
		return true
	}
	return false
}

// endsInNumber says the last label of a host (lower case, no trailing
// dot) is a number, as the WHATWG URL standard's host parser tells IPv4
// hosts: decimal digits, or "0x" and hex digits.
func endsInNumber(host string) bool {
	last := host[strings.LastIndexByte(host, '.')+1:]
	if last == "" {
		return false
	}
	if strings.HasPrefix(last, "0x") {
		last = last[2:]
		return strings.Trim(last, "0123456789abcdef") == ""
	}
	return strings.Trim(last, "0123456789") == ""
}

// parseIPv4 is the WHATWG URL standard's IPv4 parser: up to four
// numbers, each decimal, octal (a leading 0) or hex (0x), the last
// filling the bytes the others leave.
func parseIPv4(host string) (string, bool) {
	parts := strings.Split(host, ".")
	if len(parts) > 4 {
		return "", false
	}
	var ip uint64
	for i, p := range parts {
		base := 10
		switch {
		case strings.HasPrefix(p, "0x"):
			p, base = p[2:], 16
			if p == "" {
				p = "0"
			}
		case len(p) > 1 && p[0] == '0':
			p, base = p[1:], 8
		}
		n, err := strconv.ParseUint(p, base, 32)
		if err != nil || p == "" || p[0] == '+' || p[0] == '-' {
			return "", false
		}
		if i < len(parts)-1 {
			if n > 255 {
				return "", false
			}
			ip |= n << (8 * (3 - i))
			continue
		}
		if n >= 1<<(8*(5-len(parts))) {
			return "", false
		}
		ip |= n
	}
	return netip.AddrFrom4([4]byte{byte(ip >> 24), byte(ip >> 16), byte(ip >> 8), byte(ip)}).String(), true
}

// maybeIP says a host could be an IP address: digits and dots, or a colon.
func maybeIP(h string) bool {
	v6 := strings.IndexByte(h, ':') >= 0
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('0' <= c && c <= '9' || c == '.' || c == ':' || v6 && 'a' <= c|0x20 && c|0x20 <= 'f') {
			return false
		}
	}
	return true
}

func percentDecode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			h, ok1 := unhex(s[i+1])
			l, ok2 := unhex(s[i+2])
			if ok1 && ok2 {
				b.WriteByte(h<<4 | l)
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// registrable returns the registrable domain of a host by the public
// suffix list, or "" for an IP address or a public suffix itself.
func registrable(host string) string {
	if host == "" || strings.IndexByte(host, ':') >= 0 {
		return ""
	}
	if maybeIP(host) {
		if _, err := netip.ParseAddr(host); err == nil {
			return ""
		}
	}
	d, err := publicsuffix.EffectiveTLDPlusOne(host)
	if err != nil {
		return ""
	}
	return d
}

// looksLikeDomain says a word is a domain name with a known public
// suffix ("paypal.com", not "e.g" or "v1.2").
func looksLikeDomain(w string) bool {
	if len(w) < 4 || len(w) > 253 || strings.IndexByte(w, '.') < 0 {
		return false
	}
	for i := 0; i < len(w); i++ {
		c := w[i]
		if !(isHostByte(c) || c >= 0x80) {
			return false
		}
	}
	w = strings.ToLower(w)
	suffix, icann := publicsuffix.PublicSuffix(w)
	if !icann || suffix == w || strings.IndexByte(suffix, '.') < 0 && len(suffix) < 2 {
		return false
	}
	// A number is not a name: "1.5" has no letters in its last label.
	for i := 0; i < len(suffix); i++ {
		if 'a' <= suffix[i] && suffix[i] <= 'z' {
			return true
		}
	}
	return false
}
