package signing

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"hash"
	"strings"
	"time"
)

// Field is one header field as it will be delivered: Raw is everything
// after the colon, folding kept, without the final line end.
type Field struct {
	Name string
	Raw  string
}

// Message signs one message. The body is hashed as it is written, so the
// message is never held; the header is given at the end, once every
// other edit to it is known. A Message is used by one goroutine.
type Message struct {
	t    *Table
	keys []*Key
	from string // the From domain, for a "*" entry's d=
	body bodyHasher
}

// NewMessage starts signing with keys (from Lookup; unusable ones are
// skipped) for mail whose From domain is fromDomain.
func (t *Table) NewMessage(keys []*Key, fromDomain string) *Message {
	m := &Message{t: t, from: strings.ToLower(fromDomain)}
	for _, k := range keys {
		if k.Usable() {
			m.keys = append(m.keys, k)
		}
	}
	m.body.reset(t.bodyCan == relaxed)
	return m
}

// Write takes the next chunk of the body, CRLF line ends.
func (m *Message) Write(p []byte) (int, error) {
	m.body.write(p)
	return len(p), nil
}

// Signature is one DKIM-Signature field to add.
type Signature struct {
	Key *Key
	// Value is the field's value as delivered (folded with CRLF and a
	// tab), to follow "DKIM-Signature: ".
	Value string
}

// Sign signs header (the fields in delivery order) with each key and
// returns one signature per key, in key table order.
func (m *Message) Sign(header []Field, now time.Time) ([]Signature, error) {
	if n := countFold(header, "From"); n != 1 {
		return nil, fmt.Errorf("the message has %d From fields; DKIM signs exactly one", n)
	}
	bh := base64.StdEncoding.EncodeToString(m.body.sum())
	picks := m.signedFields(header)
	var out []Signature
	for _, k := range m.keys {
		v, err := m.signOne(k, picks, bh, now)
		if err != nil {
			return out, fmt.Errorf("signing with %s: %w", k, err)
		}
		out = append(out, Signature{Key: k, Value: v})
	}
	return out, nil
}

// maxPerName bounds the fields of one name signed: a header of
// thousands of To fields gets a signature of reasonable size, in time
// linear in the header.
const maxPerName = 50

// pick is one h= entry and the field it covers, from the bottom up (RFC
// 6376 5.4.2); nil for an over-signed entry that covers none.
type pick struct {
	name  string
	field *Field
}

// signedFields is h=: each configured field as often as it occurs (at
// most maxPerName), and the over-signed ones once more.
func (m *Message) signedFields(header []Field) []pick {
	var out []pick
	for _, h := range m.t.headers {
		n := 0
		for i := len(header) - 1; i >= 0 && n < maxPerName; i-- {
			if strings.EqualFold(header[i].Name, h) {
				out = append(out, pick{h, &header[i]})
				n++
			}
		}
		if n < maxPerName && containsFold(m.t.oversign, h) {
			out = append(out, pick{name: h})
		}
	}
	return out
}

func (m *Message) signOne(k *Key, picks []pick, bh string, now time.Time) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "v=1; a=%s-sha256; c=%s/%s; d=%s; s=%s;\r\n\tt=%d;", k.Algorithm(), m.t.headerCan, m.t.bodyCan, k.SDID(m.from), k.Selector, now.Unix())
	if m.t.expire > 0 {
		fmt.Fprintf(&b, " x=%d;", now.Add(m.t.expire).Unix())
	}
	names := make([]string, len(picks))
	for i, p := range picks {
		names[i] = p.name
	}
	b.WriteString(foldList(" h=", names, ":"))
	b.WriteString(";\r\n\tbh=" + bh + ";\r\n\tb=")
	unsigned := b.String()

	hh := sha256.New()
	canonHeader := canonicalizeHeader
	if m.t.headerCan == simple {
		canonHeader = simpleHeader
	}
	for _, p := range picks {
		if p.field != nil {
			hh.Write([]byte(canonHeader(p.field.Name, p.field.Raw)))
		}
	}
	sigField := canonHeader("DKIM-Signature", " "+unsigned)
	hh.Write([]byte(strings.TrimSuffix(sigField, "\r\n")))
	sum := hh.Sum(nil)
	var sig []byte
	var err error
	switch s := k.signer.(type) {
	case ed25519.PrivateKey:
		sig = ed25519.Sign(s, sum)
	default:
		sig, err = k.signer.Sign(rand.Reader, sum, crypto.SHA256)
	}
	if err != nil {
		return "", err
	}
	return unsigned + foldBase64(base64.StdEncoding.EncodeToString(sig)), nil
}

func countFold(header []Field, name string) int {
	n := 0
	for _, f := range header {
		if strings.EqualFold(f.Name, name) {
			n++
		}
	}
	return n
}

// foldList writes prefix and the items joined by sep, folding before a
// line passes 76 columns.
func foldList(prefix string, items []string, sep string) string {
	var b strings.Builder
	b.WriteString(prefix)
	col := 8 + len(prefix)
	for i, it := range items {
		if i > 0 {
			b.WriteString(sep)
			col += len(sep)
		}
		if col+len(it) > 76 {
			b.WriteString("\r\n\t ")
			col = 9
		}
		b.WriteString(it)
		col += len(it)
	}
	return b.String()
}

// foldBase64 breaks b= into lines; white space inside it is ignored.
func foldBase64(s string) string {
	const width = 72
	var b strings.Builder
	first := width - 10
	for len(s) > first {
		b.WriteString(s[:first])
		b.WriteString("\r\n\t ")
		s = s[first:]
		first = width
	}
	b.WriteString(s)
	return b.String()
}

// simpleHeader is the "simple" header canonicalization: the field as is.
func simpleHeader(name, raw string) string { return name + ":" + raw + "\r\n" }

// canonicalizeHeader is the "relaxed" header canonicalization (RFC 6376
// 3.4.2): lower-case name, unfolded value, runs of white space as one
// space, none at either end.
func canonicalizeHeader(name, raw string) string {
	var b strings.Builder
	b.Grow(len(name) + len(raw) + 3)
	b.WriteString(strings.ToLower(strings.TrimRight(name, " \t")))
	b.WriteByte(':')
	space, started := false, false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch c {
		case '\r', '\n':
			continue
		case ' ', '\t':
			space = true
			continue
		}
		if space && started {
			b.WriteByte(' ')
		}
		space, started = false, true
		b.WriteByte(c)
	}
	b.WriteString("\r\n")
	return b.String()
}

// bodyHasher is the body canonicalization and hash, as a state machine
// over the bytes so chunk boundaries do not matter and nothing is held
// but a count of trailing empty lines.
type bodyHasher struct {
	h       hash.Hash
	relaxed bool
	buf     []byte
	// pendingCRLF counts line ends not yet hashed: empty lines at the
	// end of the body are dropped.
	pendingCRLF int
	space       bool // relaxed: a run of white space not yet hashed
	cr          bool // a CR whose LF may follow
	any         bool // any content at all
}

func (b *bodyHasher) reset(relaxed bool) {
	*b = bodyHasher{h: sha256.New(), relaxed: relaxed, buf: make([]byte, 0, 512)}
}

func (b *bodyHasher) emit(c byte) {
	b.buf = append(b.buf, c)
	if len(b.buf) == cap(b.buf) {
		b.flush()
	}
}

func (b *bodyHasher) flush() {
	b.h.Write(b.buf)
	b.buf = b.buf[:0]
}

// content hashes a run of bytes that holds no line end and, in relaxed
// mode, no white space, after what is pending before it.
func (b *bodyHasher) content(run []byte) {
	for ; b.pendingCRLF > 0; b.pendingCRLF-- {
		b.emit('\r')
		b.emit('\n')
	}
	if b.space {
		b.emit(' ')
		b.space = false
	}
	b.any = true
	if len(run) >= 64 {
		// Long runs go to the hash as they are, without a copy.
		b.flush()
		b.h.Write(run)
		return
	}
	if len(b.buf)+len(run) > cap(b.buf) {
		b.flush()
	}
	b.buf = append(b.buf, run...)
}

var crByte = []byte{'\r'}

// special marks the bytes the canonicalization looks at; the rest pass
// through in runs.
var special = func() (t [2][256]bool) {
	for _, c := range []byte{'\r', '\n'} {
		t[0][c], t[1][c] = true, true
	}
	t[1][' '], t[1]['\t'] = true, true
	return t
}()

func (b *bodyHasher) write(p []byte) {
	mode := 0
	if b.relaxed {
		mode = 1
	}
	sp := &special[mode]
	for len(p) > 0 {
		c := p[0]
		if b.cr {
			b.cr = false
			if c == '\n' {
				b.lineEnd()
				p = p[1:]
				continue
			}
			b.content(crByte)
		}
		if !sp[c] {
			// A run of content, through single spaces between words:
			// relaxed leaves those as they are.
			i := 1
			for i < len(p) && (!sp[p[i]] || p[i] == ' ' && i+1 < len(p) && !sp[p[i+1]]) {
				i++
			}
			b.content(p[:i])
			p = p[i:]
			continue
		}
		switch c {
		case '\n':
			// A bare LF ends a line, as an MTA delivers it.
			b.lineEnd()
		case '\r':
			b.cr = true
		default: // white space, relaxed
			b.space = true
		}
		p = p[1:]
	}
}

func (b *bodyHasher) lineEnd() {
	b.space = false
	b.pendingCRLF++
}

func (b *bodyHasher) sum() []byte {
	if b.cr {
		b.cr = false
		b.content(crByte)
	}
	switch {
	case b.any:
		// The last line keeps (or gets) its line end; empty lines after it go.
		b.space = false
		b.emit('\r')
		b.emit('\n')
	case !b.relaxed:
		// "simple" hashes an empty body as one CRLF; "relaxed" as nothing.
		b.emit('\r')
		b.emit('\n')
	}
	b.flush()
	return b.h.Sum(nil)
}
