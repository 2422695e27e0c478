package content

import (
	"bytes"
	"errors"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/encoding/ianaindex"
	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"

	"github.com/mailward/mailward/internal/mimewalk"
)

// partDecoder decodes one text part as its lines pass: the transfer
// encoding, then the charset to UTF-8, then to the text or, for HTML,
// to the markup kept for the tokenizer. Every stage works on what it is
// given and holds at most a few bytes between writes.
type partDecoder struct {
	s    *Scanner
	enc  string
	html bool
	// msg, for an attached message, takes the decoded bytes in place
	// of the charset stage.
	msg *mimewalk.Walker
	// base64: the alphabet characters of an incomplete quantum.
	quad  [4]byte
	nquad int
	// quoted-printable: an "=" or "=X" cut by the end of a write.
	qpHeld []byte
	// charset decoding; nil for UTF-8 as is.
	tr    transform.Transformer
	utf8  bool   // tr only checks UTF-8
	carry []byte // the start of a character cut by the end of a write
	out   []byte // decoded bytes waiting for the charset stage
	bad   bool   // the charset stage failed: the rest is not read
	done  bool
}

func newPartDecoder(s *Scanner, enc, charset string, html bool) *partDecoder {
	d := &partDecoder{s: s, enc: enc, html: html}
	d.tr, d.utf8 = charsetDecoder(charset)
	return d
}

// charsetDecoder returns the transformer to UTF-8 for a charset label,
// by the WHATWG labels browsers and mail readers use, then the IANA
// names. An unknown charset is read as UTF-8, its bad bytes replaced.
func charsetDecoder(label string) (tr transform.Transformer, utf8 bool) {
	label = strings.ToLower(strings.TrimSpace(label))
	switch label {
	case "", "utf-8", "utf8", "us-ascii", "ascii":
		return unicode.UTF8.NewDecoder(), true
	case "utf-7", "utf7", "csutf7", "unicode-1-1-utf-7", "csunicode11utf7":
		return &utf7Decoder{}, false
	}
	var enc encoding.Encoding
	if e, err := htmlindex.Get(label); err == nil {
		enc = e
	} else if e, err := ianaindex.MIME.Encoding(label); err == nil && e != nil {
		enc = e
	}
	if enc == nil || enc == unicode.UTF8 {
		return unicode.UTF8.NewDecoder(), true
	}
	return enc.NewDecoder(), false
}

// Content implements mimewalk.Body.
func (d *partDecoder) Content(b []byte, eolLen int) {
	d.write(b, eolLen > 0)
}

// End implements mimewalk.Body.
func (d *partDecoder) End() { d.finish() }

// write takes a piece of a body line; eol says the line ended after it.
func (d *partDecoder) write(b []byte, eol bool) {
	if d.bad || d.done {
		return
	}
	d.out = d.out[:0]
	switch d.enc {
	case "base64":
		d.base64(b)
	case "quoted-printable":
		d.qp(b, eol)
	default:
		d.out = append(d.out, b...)
		if eol {
			d.out = append(d.out, '\n')
		}
	}
	if d.msg != nil {
		d.msg.Write(d.out)
		return
	}
	d.charset(d.out, false)
}

func (d *partDecoder) finish() {
	if d.done {
		return
	}
	d.done = true
	if d.msg != nil {
		d.msg.Write(d.qpHeld)
		if err := d.msg.Finish(); err != nil {
			d.s.setLimit("%s", err)
		}
		return
	}
	if !d.bad {
		d.out = append(d.out[:0], d.qpHeld...)
		d.qpHeld = nil
		d.charset(d.out, true)
	}
	if d.html {
		d.s.endHTML()
	}
	d.s.words.end() // a link ends with its part
}

var b64val = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xFF
	}
	for i, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/" {
		t[c] = byte(i)
	}
	return t
}()

// base64 decodes the alphabet characters and skips the rest (line
// ends, padding, junk), as readers do.
func (d *partDecoder) base64(b []byte) {
	for _, c := range b {
		v := b64val[c]
		if v == 0xFF {
			if c == '=' {
				d.flushQuad()
			}
			continue
		}
		d.quad[d.nquad] = v
		d.nquad++
		if d.nquad == 4 {
			q := d.quad
			d.out = append(d.out, q[0]<<2|q[1]>>4, q[1]<<4|q[2]>>2, q[2]<<6|q[3])
			d.nquad = 0
		}
	}
}

// flushQuad ends a quantum cut short by padding.
func (d *partDecoder) flushQuad() {
	q := d.quad
	switch d.nquad {
	case 2:
		d.out = append(d.out, q[0]<<2|q[1]>>4)
	case 3:
		d.out = append(d.out, q[0]<<2|q[1]>>4, q[1]<<4|q[2]>>2)
	}
	d.nquad = 0
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// qp decodes quoted-printable (RFC 2045 section 6.7), leniently: a bad
// escape is kept as written. Trailing white space of a line is kept, a
// harmless difference for reading the text.
func (d *partDecoder) qp(b []byte, eol bool) {
	if len(d.qpHeld) > 0 {
		b = append(d.qpHeld, b...)
		d.qpHeld = nil
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '=' {
			d.out = append(d.out, c)
			continue
		}
		rest := b[i+1:]
		if len(rest) < 16 && len(bytes.TrimRight(rest, " \t\r")) == 0 {
			if eol {
				return // a soft line break: the line goes on
			}
			d.qpHeld = append(d.qpHeld[:0], b[i:]...)
			return
		}
		if len(rest) < 2 && !eol {
			d.qpHeld = append(d.qpHeld[:0], b[i:]...)
			return
		}
		if len(rest) >= 2 {
			h, ok1 := unhex(rest[0])
			l, ok2 := unhex(rest[1])
			if ok1 && ok2 {
				d.out = append(d.out, h<<4|l)
				i += 2
				continue
			}
		}
		d.out = append(d.out, c)
	}
	if eol {
		d.out = append(d.out, '\n')
	}
}

// charset turns decoded bytes to UTF-8 and passes them on.
func (d *partDecoder) charset(b []byte, atEOF bool) {
	if d.utf8 && len(d.carry) == 0 && utf8.Valid(b) {
		d.sink(b) // most text: nothing to convert or replace
		return
	}
	if d.s.buf == nil {
		d.s.buf = make([]byte, 4096)
	}
	if len(d.carry) > 0 {
		b = append(d.carry, b...)
		d.carry = nil
	}
	for {
		n, m, err := d.tr.Transform(d.s.buf, b, atEOF)
		d.sink(d.s.buf[:n])
		b = b[m:]
		switch {
		case err == nil:
			return
		case errors.Is(err, transform.ErrShortDst) && (n > 0 || m > 0):
			continue
		case errors.Is(err, transform.ErrShortSrc) && !atEOF && len(b) < 16:
			d.carry = append([]byte(nil), b...)
			return
		default:
			// Not decodable: what was read stands.
			d.bad = true
			return
		}
	}
}

func (d *partDecoder) sink(b []byte) {
	if len(b) == 0 {
		return
	}
	if d.html {
		d.s.addHTML(b)
		return
	}
	d.s.addText(b)
}
