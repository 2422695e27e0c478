// Package mimewalk follows a message's MIME structure as it streams, line
// by line, and hands the body of each leaf part to the readers that want
// it: the attachment list and the content scan read one walk of the
// message, not one each.
//
// Lines are never kept whole: a header field up to fieldKeep bytes, a
// body line up to lineKeep (enough to tell a boundary). The cost is
// linear in the message whatever its nesting, and the walk stops at the
// first bound passed.
package mimewalk

import (
	"bytes"
	"fmt"
	"mime"
	"strings"
)

const (
	// lineKeep is how much of a body line is held to tell a boundary: a
	// boundary is at most 70 characters (RFC 2046 section 5.1.1), with
	// "--" before and after and some transport padding. Longer lines
	// are content as they come.
	lineKeep = 256
	// fieldKeep bounds each header field kept.
	fieldKeep = 8 << 10
)

// Part is what a part's header says, as its readers need it.
type Part struct {
	// Top: the message's own header.
	Top bool
	// Depth is the number of multiparts the part is inside: 0 for the
	// message's own header.
	Depth int
	// Multipart: the part holds parts; it has no body of its own.
	Multipart bool
	// MediaType is the Content-Type's type, lower-case; text/plain when
	// the field is absent or unreadable, as readers show such a part.
	MediaType string
	Params    map[string]string // the Content-Type's parameters
	// ContentType and Disposition are the fields as written, unfolded.
	ContentType, Disposition string
	Encoding                 string // Content-Transfer-Encoding, lower-case
}

// Handler is one reader of the walk.
type Handler interface {
	// Part is told of each part whose header ended. The Body returned
	// gets a leaf part's content; nil skips it.
	Part(p *Part) Body
}

// Body takes one leaf part's content.
type Body interface {
	// Content is a piece of a body line; eol is the length of the line
	// end that followed it and was left out (0: the line goes on).
	// RFC 2046 gives the line end before a boundary to the boundary:
	// readers that count bytes hold each line end until more content.
	Content(b []byte, eol int)
	// End ends the part, at a boundary or at the end of the message.
	End()
}

// Options bound the walk.
type Options struct {
	MaxDepth int // multipart nesting
	MaxParts int // parts, the message itself included
}

type walkState int

const (
	inHeader walkState = iota // a part's header (the message's first)
	inBody                    // the body of a leaf part
	inSkip                    // a preamble, an epilogue, a part no one reads
)

// Walker walks one message.
type Walker struct {
	o        Options
	handlers []Handler
	line     []byte // the start of the current line, at most its keep
	lineLen  int    // bytes of the current line so far
	state    walkState
	top      bool           // reading the message's own header
	stack    []string       // boundaries of the open multiparts, outermost first
	bounds   map[string]int // boundary → its depth in stack (1-based), innermost wins
	fields   fields
	bodies   []Body // the readers of the current leaf part
	parts    int
	from     []byte // the message's From field
	err      error  // the bound passed: the walk stopped
	done     bool
}

// fields are kept as bytes: a field folded over thousands of lines is
// appended to, never copied whole per line.
type fields struct {
	contentType, disposition, encoding, from []byte
	cur                                      *[]byte // the field being continued
}

// New starts the walk of one message for the handlers.
func New(o Options, handlers ...Handler) *Walker {
	return &Walker{o: o, handlers: handlers, bounds: map[string]int{}, parts: 1, top: true}
}

// Write takes the next bytes of the message, header block first; it
// never fails.
func (w *Walker) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && w.err == nil && !w.done {
		if len(w.bodies) == 0 && w.state != inHeader && (w.lineLen == 0 && p[0] != '-' || w.lineLen > lineKeep) {
			// No one reads this part and the line is no boundary (an
			// unread part's, a preamble's): on to the next line, uncopied.
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				w.lineLen += len(p) + lineKeep + 1
				break
			}
			w.line, w.lineLen = w.line[:0], 0
			p = p[i+1:]
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.fragment(p, false)
			break
		}
		w.fragment(p[:i+1], true)
		p = p[i+1:]
	}
	return n, nil
}

// Finish ends the message. The error says which bound stopped the walk:
// what comes after it was not read.
func (w *Walker) Finish() error {
	if w.done {
		return w.err
	}
	w.done = true
	if w.err == nil && w.lineLen > 0 {
		w.endLine(len(w.line) == w.lineLen)
	}
	if w.state == inHeader && w.top {
		w.from = w.fields.from // a message of header only
	}
	w.endPart()
	return w.err
}

// Err is the bound that stopped the walk, if one did.
func (w *Walker) Err() error { return w.err }

// From is the message's From field as written, unfolded (the first one,
// at most fieldKeep bytes), once the header has ended.
func (w *Walker) From() string { return string(w.from) }

// fragment handles a piece of a line; complete says it ends the line.
func (w *Walker) fragment(frag []byte, complete bool) {
	keep := lineKeep
	if w.state == inHeader {
		keep = fieldKeep
	}
	before := w.lineLen
	w.lineLen += len(frag)
	if w.lineLen <= keep {
		w.line = append(w.line, frag...)
		if complete {
			w.endLine(true)
		}
		return
	}
	if before <= keep {
		// Just grew too long: not a boundary, what was held is content,
		// and its start is all the header parser gets.
		if w.state == inHeader {
			w.line = append(w.line, frag[:keep-before]...)
		} else {
			w.content(w.line, 0)
			w.line = w.line[:0]
		}
	}
	if w.state != inHeader {
		if complete {
			body, eol := cutEOL(frag)
			w.content(body, eol)
		} else {
			w.content(frag, 0)
		}
	}
	if complete {
		w.endLine(false)
	}
}

// cutEOL splits a line from its line end (LF or CRLF).
func cutEOL(b []byte) ([]byte, int) {
	n := len(b)
	if n > 0 && b[n-1] == '\n' {
		n--
		if n > 0 && b[n-1] == '\r' {
			n--
		}
	}
	return b[:n], len(b) - n
}

// endLine ends the current line; whole says it is in w.line entire.
func (w *Walker) endLine(whole bool) {
	line := w.line
	w.line, w.lineLen = w.line[:0], 0
	if !whole {
		if w.state == inHeader {
			w.headerLine(line)
		}
		return
	}
	if w.boundary(line) {
		return
	}
	switch w.state {
	case inHeader:
		w.headerLine(line)
	case inBody:
		body, eol := cutEOL(line)
		w.content(body, eol)
	}
}

func (w *Walker) content(b []byte, eol int) {
	if w.state != inBody {
		return
	}
	for _, r := range w.bodies {
		r.Content(b, eol)
	}
}

// boundary acts on a line that opens or closes a part of an open
// multipart, and reports whether it was one.
func (w *Walker) boundary(line []byte) bool {
	if len(w.stack) == 0 || !bytes.HasPrefix(line, []byte("--")) {
		return false
	}
	b := string(bytes.TrimRight(line[2:], " \t\r\n"))
	closing := false
	depth, ok := w.bounds[b]
	if !ok && strings.HasSuffix(b, "--") {
		depth, ok = w.bounds[b[:len(b)-2]]
		closing = ok
	}
	if !ok {
		return false
	}
	w.endPart()
	// Inner multiparts left open end here too.
	for len(w.stack) > depth {
		w.pop()
	}
	if closing {
		w.pop()
		w.state = inSkip // the epilogue, up to the enclosing boundary
		return true
	}
	w.parts++
	if w.parts > w.o.MaxParts {
		w.err = fmt.Errorf("more than %d MIME parts", w.o.MaxParts)
		return true
	}
	w.state, w.fields = inHeader, fields{}
	return true
}

func (w *Walker) pop() {
	b := w.stack[len(w.stack)-1]
	w.stack = w.stack[:len(w.stack)-1]
	delete(w.bounds, b)
	// An outer multipart with the same boundary gets it back.
	for i := len(w.stack) - 1; i >= 0; i-- {
		if w.stack[i] == b {
			w.bounds[b] = i + 1
			break
		}
	}
}

func (w *Walker) headerLine(line []byte) {
	f := &w.fields
	line, _ = cutEOL(line)
	if len(line) == 0 {
		w.endHeader()
		return
	}
	if line[0] == ' ' || line[0] == '\t' {
		if f.cur != nil && len(*f.cur) < fieldKeep {
			*f.cur = append(append(*f.cur, ' '), bytes.TrimSpace(line)...)
		}
		return
	}
	f.cur = nil
	name, value, ok := bytes.Cut(line, []byte(":"))
	if !ok {
		return
	}
	var dst *[]byte
	switch strings.ToLower(string(bytes.TrimRight(name, " \t"))) {
	case "content-type":
		dst = &f.contentType
	case "content-disposition":
		dst = &f.disposition
	case "content-transfer-encoding":
		dst = &f.encoding
	case "from":
		if !w.top {
			return
		}
		dst = &f.from
	default:
		return
	}
	if *dst == nil { // the first of each counts
		*dst = append([]byte{}, bytes.TrimSpace(value)...)
		f.cur = dst
	}
}

// endHeader decides what the part whose header ended is and asks the
// handlers who reads it.
func (w *Walker) endHeader() {
	f := w.fields
	p := Part{Top: w.top, Depth: len(w.stack), ContentType: string(f.contentType), Disposition: string(f.disposition),
		Encoding: strings.ToLower(string(f.encoding))}
	if w.top {
		w.from = f.from
		w.top = false
	}
	w.state = inSkip
	ct, params, err := mime.ParseMediaType(p.ContentType)
	if p.ContentType == "" || err != nil && ct == "" {
		ct = "text/plain"
	}
	p.MediaType, p.Params = ct, params
	if strings.HasPrefix(ct, "multipart/") {
		p.Multipart = true
		for _, h := range w.handlers {
			h.Part(&p)
		}
		b := params["boundary"]
		if b == "" {
			return // no boundary: nothing in it can be told apart
		}
		if len(w.stack) >= w.o.MaxDepth {
			w.err = fmt.Errorf("MIME parts nested more than %d deep", w.o.MaxDepth)
			return
		}
		w.stack = append(w.stack, b)
		w.bounds[b] = len(w.stack)
		return // the preamble, up to the first boundary
	}
	w.bodies = w.bodies[:0]
	for _, h := range w.handlers {
		if r := h.Part(&p); r != nil {
			w.bodies = append(w.bodies, r)
		}
	}
	w.state = inBody
}

// endPart ends the current leaf part at a boundary or at the end.
func (w *Walker) endPart() {
	for _, r := range w.bodies {
		r.End()
	}
	w.bodies = w.bodies[:0]
}
