package content

import (
	"bytes"
	"mime"
	"strings"
)

const (
	// lineKeep is how much of a body line is held to tell a boundary: a
	// boundary is at most 70 characters (RFC 2046 section 5.1.1), with
	// "--" before and after and some transport padding. Longer lines are
	// content as they come.
	lineKeep = 256
	// fieldKeep bounds each header field kept.
	fieldKeep = 8 << 10
)

type walkState int

const (
	inHeader walkState = iota // a part's header (the message's first)
	inBody                    // the body of a leaf part
	inSkip                    // a preamble, an epilogue, a part not read
)

// walker follows the MIME structure line by line and hands the body of
// each text part to its decoder. Lines are never kept whole: a part's
// header field is kept up to fieldKeep, a body line up to lineKeep.
type walker struct {
	s       *Scanner
	line    []byte
	lineLen int
	state   walkState
	top     bool           // reading the message's own header
	stack   []string       // boundaries of the open multiparts, outermost first
	bounds  map[string]int // boundary → its depth in stack (1-based), innermost wins
	fields  fields
	part    *partDecoder // the text part being read, if any
	parts   int
	stopped bool
}

// fields are kept as bytes: a field folded over thousands of lines is
// appended to, never copied whole per line.
type fields struct {
	contentType, disposition, encoding []byte
	from                               []byte
	cur                                *[]byte
}

func (w *walker) init(s *Scanner) {
	*w = walker{s: s, bounds: map[string]int{}, parts: 1, top: true}
}

func (w *walker) Write(p []byte) {
	for len(p) > 0 && !w.stopped {
		if w.part == nil && w.state != inHeader && (w.lineLen == 0 && p[0] != '-' || w.lineLen > lineKeep) {
			// Nothing reads this part and the line is no boundary (an
			// attachment's, a preamble's): on to the next line, uncopied.
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				w.lineLen += len(p) + lineKeep + 1
				return
			}
			w.line, w.lineLen = w.line[:0], 0
			p = p[i+1:]
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.fragment(p, false)
			return
		}
		w.fragment(p[:i+1], true)
		p = p[i+1:]
	}
}

// fragment handles a piece of a line; complete says it ends the line.
func (w *walker) fragment(frag []byte, complete bool) {
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
		// Just grew too long: not a boundary, what was held is content.
		if w.state == inHeader {
			w.line = append(w.line, frag[:keep-before]...)
		} else {
			w.content(w.line, false)
			w.line = w.line[:0]
		}
	}
	if w.state != inHeader {
		if complete {
			w.content(trimEOL(frag), true)
		} else {
			w.content(frag, false)
		}
	}
	if complete {
		w.endLine(false)
	}
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// endLine ends the current line; whole says it is in w.line entire.
func (w *walker) endLine(whole bool) {
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
		w.content(trimEOL(line), true)
	}
}

func (w *walker) content(b []byte, eol bool) {
	if w.state == inBody && w.part != nil {
		w.part.write(b, eol)
	}
}

// boundary acts on a line that opens or closes a part of an open
// multipart, and reports whether it was one.
func (w *walker) boundary(line []byte) bool {
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
	for len(w.stack) > depth {
		w.pop()
	}
	if closing {
		w.pop()
		w.state = inSkip
		return true
	}
	w.parts++
	if w.parts > w.s.o.MaxParts {
		w.s.setLimit("more than %d MIME parts", w.s.o.MaxParts)
		w.stopped = true
		return true
	}
	w.state, w.fields = inHeader, fields{}
	return true
}

func (w *walker) pop() {
	b := w.stack[len(w.stack)-1]
	w.stack = w.stack[:len(w.stack)-1]
	delete(w.bounds, b)
	for i := len(w.stack) - 1; i >= 0; i-- {
		if w.stack[i] == b {
			w.bounds[b] = i + 1
			break
		}
	}
}

func (w *walker) headerLine(line []byte) {
	f := &w.fields
	if len(bytes.TrimRight(line, "\r\n")) == 0 {
		w.endHeader()
		return
	}
	line = trimEOL(line)
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

// endHeader decides what the part whose header ended is.
func (w *walker) endHeader() {
	f := w.fields
	if w.top {
		w.s.from = string(f.from)
		w.top = false
	}
	w.state = inSkip
	ct, params, err := mime.ParseMediaType(string(f.contentType))
	switch {
	case len(f.contentType) == 0:
		ct = "text/plain"
	case err != nil && ct == "":
		// Unreadable: readers show such a part as text.
		ct = "text/plain"
	}
	if strings.HasPrefix(ct, "multipart/") {
		b := params["boundary"]
		if b == "" {
			return
		}
		if len(w.stack) >= w.s.o.MaxDepth {
			w.s.setLimit("MIME parts nested more than %d deep", w.s.o.MaxDepth)
			w.stopped = true
			return
		}
		w.stack = append(w.stack, b)
		w.bounds[b] = len(w.stack)
		return
	}
	if !strings.HasPrefix(ct, "text/") {
		return
	}
	if disp, _, _ := mime.ParseMediaType(string(f.disposition)); disp == "attachment" {
		return
	}
	w.state = inBody
	w.s.res.TextParts++
	isHTML := ct == "text/html"
	if isHTML {
		w.s.res.HTML = true
	}
	w.part = newPartDecoder(w.s, strings.ToLower(string(f.encoding)), params["charset"], isHTML)
}

// endPart ends the current part at a boundary or at the end of the message.
func (w *walker) endPart() {
	if w.part != nil {
		w.part.finish()
		w.part = nil
	}
}

func (w *walker) finish() {
	if w.s == nil {
		return
	}
	if !w.stopped && w.lineLen > 0 {
		w.endLine(len(w.line) == w.lineLen)
	}
	if w.state == inHeader && w.top {
		w.s.from = string(w.fields.from) // a message of header only
	}
	w.endPart()
}
