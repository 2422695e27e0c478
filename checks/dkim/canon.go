package dkim

import (
	"hash"
	"strings"
)

// Canonicalization (RFC 6376 section 3.4). Everything here is linear in
// its input: the input is the sender's.

// canonHeader returns field (name, colon, value, folds as CRLF, no final
// CRLF) canonicalized by alg, with the final CRLF.
func canonHeader(b *strings.Builder, alg, field string) {
	if alg == "simple" {
		b.WriteString(field)
		b.WriteString("\r\n")
		return
	}
	name, value, ok := strings.Cut(field, ":")
	b.WriteString(strings.ToLower(strings.TrimRight(name, " \t")))
	b.WriteByte(':')
	if ok {
		// Unfold, turn each run of white space into one space, and drop
		// it at both ends.
		space := false
		wrote := false
		for i := 0; i < len(value); i++ {
			switch c := value[i]; c {
			case ' ', '\t', '\r', '\n':
				space = true
			default:
				if space && wrote {
					b.WriteByte(' ')
				}
				space, wrote = false, true
				b.WriteByte(c)
			}
		}
	}
	b.WriteString("\r\n")
}

// hashChunk is how many canonical bytes are hashed at a time: the buffer
// is part of the hasher, so a message costs no growing buffer.
const hashChunk = 4 << 10

// bodyHasher canonicalizes a body as it streams and hashes the result.
// Line ends are CRLF; a bare LF counts as one too, as the header reader
// takes it. Only the trailing empty lines are held back, as a count.
type bodyHasher struct {
	relaxed bool
	h       hash.Hash
	out     []byte // canonical bytes waiting to be hashed, in buf
	buf     [hashChunk + 2]byte

	cr      bool // the previous byte was a CR not yet known to end a line
	space   bool // relaxed: white space seen on this line, not yet written
	pending int  // line ends not yet written: empty lines may be trailing
	wrote   bool // some content was written
}

func (b *bodyHasher) Write(p []byte) (int, error) {
	for i := 0; i < len(p); {
		if !b.cr && b.pending == 0 && !b.space {
			// Fast path: a run of bytes that canonicalization keeps as is.
			j := i
			for j < len(p) && !b.special(p[j]) {
				j++
			}
			if j > i {
				b.out = append(b.out, p[i:j]...)
				b.wrote = true
				if len(b.out) >= 32<<10 {
					b.flush()
				}
				i = j
				continue
			}
		}
		c := p[i]
		i++
		if b.cr {
			b.cr = false
			if c == '\n' {
				b.lineEnd()
				continue
			}
			b.content('\r')
		}
		switch c {
		case '\r':
			b.cr = true
		case '\n':
			b.lineEnd()
		default:
			b.content(c)
		}
	}
	b.flush()
	return len(p), nil
}

// special is a byte the fast path leaves to content and lineEnd.
func (b *bodyHasher) special(c byte) bool {
	return c == '\r' || c == '\n' || b.relaxed && (c == ' ' || c == '\t')
}

func (b *bodyHasher) lineEnd() {
	b.space = false // relaxed: white space at the end of a line goes
	b.pending++
}

func (b *bodyHasher) content(c byte) {
	if b.relaxed && (c == ' ' || c == '\t') {
		b.space = true
		return
	}
	for ; b.pending > 0; b.pending-- {
		b.out = append(b.out, '\r', '\n')
		if len(b.out) >= hashChunk {
			b.flush()
		}
	}
	if b.space {
		b.out = append(b.out, ' ')
		b.space = false
	}
	b.out = append(b.out, c)
	b.wrote = true
	if len(b.out) >= hashChunk {
		b.flush()
	}
}

func (b *bodyHasher) flush() {
	if len(b.out) > 0 {
		b.h.Write(b.out)
	}
	b.out = b.buf[:0]
}

// sum ends the body: trailing empty lines are dropped and the last line
// ends with CRLF; an empty body is CRLF in simple, nothing in relaxed.
func (b *bodyHasher) sum() []byte {
	if b.cr {
		b.cr = false
		b.content('\r')
	}
	if b.wrote || !b.relaxed {
		b.out = append(b.out, '\r', '\n')
	}
	b.flush()
	return b.h.Sum(nil)
}
