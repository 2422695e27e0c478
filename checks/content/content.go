// Package content reads what a message says as it streams: the decoded
// text of its text parts, the links in them, and signs of deceit (link
// text naming another domain than the link, a From display name naming
// another address than the From).
package content

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"unicode/utf8"
	"unsafe"

	"github.com/mailward/mailward/internal/mimewalk"
)

// Defaults of the bounds (Options).
const (
	DefaultMaxTextBytes = 256 << 10
	DefaultMaxURLs      = 100
	DefaultMaxDepth     = 20
	DefaultMaxParts     = 1000
)

const (
	// maxCandidates bounds the links looked at per message: past it,
	// url_count stops growing and no more are normalised, but an
	// anchor's href, for the deceit check alone.
	maxCandidates = 10000
	// maxIDNABytes bounds the bytes of link hosts per message that go
	// through IDNA, a thousand times the work of ASCII: about a thousand
	// names such as bücher.example, a hundred of the longest.
	maxIDNABytes = 64 << 10
	// htmlFactor: an HTML part is kept, for the tokenizer, up to this
	// many times MaxTextBytes of decoded markup per message.
	htmlFactor = 4
)

// Options bound a scan. Zero or negative values take the defaults.
type Options struct {
	MaxTextBytes int // decoded text kept per message
	MaxURLs      int // distinct URLs kept per message
	MaxDepth     int // multipart nesting
	MaxParts     int // MIME parts
}

func (o Options) withDefaults() Options {
	if o.MaxTextBytes <= 0 {
		o.MaxTextBytes = DefaultMaxTextBytes
	}
	if o.MaxURLs <= 0 {
		o.MaxURLs = DefaultMaxURLs
	}
	if o.MaxDepth <= 0 {
		o.MaxDepth = DefaultMaxDepth
	}
	if o.MaxParts <= 0 {
		o.MaxParts = DefaultMaxParts
	}
	return o
}

// The largest bounds a config may set: more text than this is not what
// rules need, more URLs than the links looked at cannot be found.
const (
	MaxMaxTextBytes = 64 << 20
	MaxMaxURLs      = maxCandidates
)

// URL is one link, normalised: scheme and host lower-case, the host in
// A-labels, percent-decoded, an IP literal without brackets.
type URL struct {
	Scheme string `json:"scheme"`
	Host   string `json:"host"`
	// Domain is the registrable domain of Host by the public suffix
	// list; "" for an IP literal or a name with none.
	Domain string `json:"domain,omitempty"`
	Path   string `json:"path,omitempty"`
}

// Summary is what the scan found besides the text and the URLs.
type Summary struct {
	HTML      bool `json:"html"`       // a text/html part was read
	TextParts int  `json:"text_parts"` // text/* parts read (not attachments)
	// URLCount is the number of distinct links found, of the first
	// 10,000 looked at; URLs keeps the first MaxURLs of them.
	URLCount int `json:"url_count"`
	// PhishLinks counts HTML links whose visible text names another
	// registrable domain than their href.
	PhishLinks int `json:"phish_links"`
	// FromDisplayMismatch: the From display name holds an address or a
	// domain of another registrable domain than the From address.
	FromDisplayMismatch bool `json:"from_display_mismatch"`
	// Limit says which bound cut the scan, or "": what was found up to
	// it stands.
	Limit string `json:"limit,omitempty"`
}

// Result is the scan of one message.
type Result struct {
	Text string // decoded text of the text parts, at most MaxTextBytes
	URLs []URL  // distinct, in order of first appearance, at most MaxURLs
	Summary
}

// Scanner reads one message, header block then body, as it is written.
// It works in the writer's goroutine and never keeps more than its
// bounds: the cost is linear in the message.
type Scanner struct {
	o     Options
	walk  *mimewalk.Walker // its own walk; nil when it reads a shared one
	text  []byte
	full  bool // text was cut at the bound: nothing more is kept
	limit string
	res   Result
	seen  map[uint64]struct{} // distinct links so far, by hash
	raw   map[uint64]struct{} // links as written so far, by hash
	hash  maphash.Hash
	buf   []byte // the charset stage's output, made when first needed
	cands int
	// linksOut: a link came past the links looked at; text is no
	// longer looked at for links.
	linksOut bool
	idna     idnaBudget
	html     []byte // the HTML part being read
	htmlN    int    // HTML bytes kept so far in the message
	from     string // the top-level From field, unfolded
	inFrom   bool
	words    wordScanner
	// parts seen in the whole message, attached messages' included;
	// stopped: a bound on them was met and no more are read.
	parts   int
	stopped bool
}

// NewScanner starts the scan of one message, which it walks itself:
// write the message to it, then Finish.
func NewScanner(o Options) *Scanner {
	s := NewReader(o)
	s.walk = mimewalk.New(mimewalk.Options{MaxDepth: s.o.MaxDepth, MaxParts: s.o.MaxParts}, s)
	return s
}

// NewReader starts the scan of one message as a reader of a walk shared
// with other readers (give it to mimewalk.New, then End it with the
// finished walk). The walk's own bounds apply to it; o's MaxDepth and
// MaxParts bound the parts of attached messages with it, so give them
// the walk's.
func NewReader(o Options) *Scanner {
	s := &Scanner{o: o.withDefaults(), seen: map[uint64]struct{}{}, raw: map[uint64]struct{}{}, idna: idnaBudget{left: maxIDNABytes}}
	s.words.s = s
	return s
}

// Write takes the next bytes of the message; it never fails.
func (s *Scanner) Write(p []byte) (int, error) {
	return s.walk.Write(p)
}

// Finish ends the message and returns what was found.
func (s *Scanner) Finish() *Result {
	s.walk.Finish()
	return s.End(s.walk)
}

// End ends the scan of a message whose walk w finished and returns what
// was found. A bound that stopped the walk is the scan's Limit, unless
// another came first.
func (s *Scanner) End(w *mimewalk.Walker) *Result {
	if err := w.Err(); err != nil {
		s.setLimit("%s", err)
	}
	s.from = w.From()
	if len(s.text) > 0 {
		// The buffer is never written again: the text is not copied,
		// which would double what a message holds at its end.
		s.res.Text = unsafe.String(unsafe.SliceData(s.text), len(s.text))
	}
	s.res.Limit = s.limit
	s.res.FromDisplayMismatch = fromMismatch(s.from)
	r := s.res
	s.Close()
	return &r
}

// Close abandons the message.
func (s *Scanner) Close() {
	s.text, s.html, s.seen, s.raw, s.idna.read = nil, nil, nil, nil, nil
	s.walk = nil
}

// setLimit records the first bound passed.
func (s *Scanner) setLimit(format string, args ...any) {
	if s.limit == "" {
		s.limit = fmt.Sprintf(format, args...)
	}
}

// addText keeps decoded text, up to the bound, and looks for links in it.
func (s *Scanner) addText(b []byte) {
	if !utf8.Valid(b) {
		// The charset stage gives UTF-8; this keeps rules safe from
		// whatever reaches here otherwise.
		b = bytes.ToValidUTF8(b, []byte("\uFFFD"))
	}
	s.words.write(b)
	room := s.o.MaxTextBytes - len(s.text)
	if room <= 0 || s.full {
		if len(b) > 0 {
			s.setLimit("text over %d bytes", s.o.MaxTextBytes)
		}
		return
	}
	if len(b) > room {
		// Cut once and keep nothing after: text that follows the cut
		// must not fill the last bytes, or how the message was split
		// into pieces would change the result.
		b = b[:validCut(b, room)]
		s.full = true
		s.setLimit("text over %d bytes", s.o.MaxTextBytes)
	}
	if need := len(s.text) + len(b); need > cap(s.text) {
		// Doubling, but never past the bound: a message at the bound
		// holds MaxTextBytes, not up to twice that.
		grown := make([]byte, len(s.text), min(max(2*cap(s.text), need, 4096), s.o.MaxTextBytes))
		copy(grown, s.text)
		s.text = grown
	}
	s.text = append(s.text, b...)
}

// validCut returns n or less so that b[:n] does not end inside a UTF-8
// sequence.
func validCut(b []byte, n int) int {
	for i := 0; i < 3 && n > 0 && b[n]&0xC0 == 0x80; i++ {
		n--
	}
	return n
}

// normalize is Normalize within the message's IDNA bound; unread says
// the bound, not the link, kept it from being read.
func (s *Scanner) normalize(raw string, attr bool) (u URL, ok, unread bool) {
	s.idna.refused = false
	u, ok = normalize(raw, attr, &s.idna)
	if s.idna.refused {
		s.setLimit("link hosts needing IDNA over %d bytes", maxIDNABytes)
	}
	return u, ok, s.idna.refused
}

// link takes one candidate link as written; attr says it is an HTML
// attribute (a relative one is not a link out). Unless want, a link
// written as one seen before is not read again and reported as not ok.
// Wanted links (an anchor's href, for the deceit check) are read past
// the bound on the links looked at, though no longer counted: padding a
// message with links does not hide its anchors. unread says the IDNA
// bound kept the link from being read.
func (s *Scanner) link(raw []byte, attr, want bool) (u URL, ok, unread bool) {
	if s.cands >= maxCandidates {
		s.setLimit("more than %d links", maxCandidates)
		s.linksOut = true
		if want {
			return s.normalize(string(raw), attr)
		}
		return URL{}, false, false
	}
	s.cands++
	// Links are told apart by 64-bit hashes: a collision, one in 2^64,
	// costs a link; the sets stay small whatever the links' length.
	s.hash.Reset()
	s.hash.Write(raw)
	if attr {
		s.hash.WriteByte(0)
	}
	rh := s.hash.Sum64()
	if _, dup := s.raw[rh]; dup && !want {
		return URL{}, false, false
	}
	s.raw[rh] = struct{}{}
	u, ok, unread = s.normalize(string(raw), attr)
	if !ok {
		return URL{}, false, unread
	}
	s.hash.Reset()
	s.hash.WriteString(u.Scheme)
	s.hash.WriteByte(0)
	s.hash.WriteString(u.Host)
	s.hash.WriteByte(0)
	s.hash.WriteString(u.Path)
	h := s.hash.Sum64()
	if _, dup := s.seen[h]; dup {
		return u, true, false
	}
	s.seen[h] = struct{}{}
	s.res.URLCount++
	if len(s.res.URLs) < s.o.MaxURLs {
		u.Domain = registrable(u.Host)
		s.res.URLs = append(s.res.URLs, u)
	} else {
		s.setLimit("more than %d URLs", s.o.MaxURLs)
	}
	return u, true, false
}
