package policy

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/emersion/go-message"
)

// Default bounds of the MIME structure scanned for attachments. Real
// mail nests multiparts a handful deep (mixed, related, alternative) and
// has tens of parts; a message past either bound cannot be checked and
// gets the on_error verdict, since an attachment could hide beyond it.
const (
	DefaultMIMEDepth = 20
	DefaultMIMEParts = 1000
)

const (
	// lineKeep is how much of a line is kept to tell a boundary line: a
	// boundary is at most 70 characters (RFC 2046 section 5.1.1), with
	// "--" before and after and some transport padding.
	lineKeep = 256
	// fieldKeep bounds each Content-* field kept from a part's header.
	fieldKeep = 8 << 10
)

// mimeScanner lists a message's attachments as the message streams
// through it, header block first, without keeping the message. It works
// line by line in the writer's goroutine: the cost is linear in the
// message, whatever its nesting, and stops with the writes.
type mimeScanner struct {
	maxDepth, maxParts int

	line    []byte // the start of the current line, at most lineKeep bytes
	lineLen int    // bytes of the current line so far
	heldCR  bool   // a long line's last piece ended in CR, perhaps of its CRLF

	state  scanState
	stack  []string       // boundaries of the open multiparts, outermost first
	bounds map[string]int // boundary → its depth in stack (1-based), innermost wins
	fields partFields     // of the part whose header is being read
	leaf   *leafCount     // the attachment being counted, if any
	parts  int

	result []Attachment
	err    error // a bound was passed: the scan stopped
}

type scanState int

const (
	inHeader scanState = iota // a part's header (the message's first)
	inBody                    // the body of a leaf part
	inSkip                    // a preamble, an epilogue, a multipart over the bounds
)

func newMIMEScanner(maxDepth, maxParts int) *mimeScanner {
	return &mimeScanner{maxDepth: maxDepth, maxParts: maxParts, bounds: map[string]int{}, parts: 1}
}

// Write takes the next bytes of the message; it never fails.
func (s *mimeScanner) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && s.err == nil {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.fragment(p, false)
			break
		}
		s.fragment(p[:i+1], true)
		p = p[i+1:]
	}
	return n, nil
}

// fragment handles a piece of a line; complete says it ends the line.
// A part's header lines are kept up to fieldKeep, other lines up to
// lineKeep: longer ones are content as they come.
func (s *mimeScanner) fragment(frag []byte, complete bool) {
	keep := lineKeep
	if s.state == inHeader {
		keep = fieldKeep
	}
	before := s.lineLen
	s.lineLen += len(frag)
	switch {
	case s.lineLen <= keep:
		s.line = append(s.line, frag...)
		if complete {
			s.endLine(true)
		}
		return
	case before <= keep:
		// The line just grew too long: what was kept is content too, and
		// its start is all the header parser gets.
		s.content(s.line, false)
		s.line = append(s.line, frag[:keep-before]...)
	}
	if s.heldCR {
		// A CR that ended the last piece: content unless the LF follows.
		s.heldCR = false
		if frag[0] != '\n' {
			s.content([]byte{'\r'}, false)
		}
	}
	switch {
	case complete:
		s.content(bytes.TrimRight(frag, "\r\n"), false) // the line end is counted apart
		s.endLine(false)
	case frag[len(frag)-1] == '\r':
		s.content(frag[:len(frag)-1], false)
		s.heldCR = true
	default:
		s.content(frag, false)
	}
}

// endLine ends the current line; whole says it is in s.line entire.
func (s *mimeScanner) endLine(whole bool) {
	line := s.line
	s.line, s.lineLen, s.heldCR = s.line[:0], 0, false
	if whole && len(line) <= lineKeep && s.boundary(line) {
		return
	}
	switch s.state {
	case inHeader:
		s.headerLine(line, whole)
	case inBody:
		if whole {
			s.content(line, true)
		} else if s.leaf != nil {
			s.leaf.lineEnd()
		}
	}
}

// content counts body bytes of the current attachment; line says frag
// is a whole line with its line end.
func (s *mimeScanner) content(frag []byte, line bool) {
	if s.state != inBody || s.leaf == nil {
		return
	}
	if line {
		s.leaf.line(frag)
		return
	}
	s.leaf.raw(frag)
}

// boundary acts on a line that opens or closes a part of an open
// multipart, and reports whether it was one.
func (s *mimeScanner) boundary(line []byte) bool {
	if len(s.stack) == 0 || !bytes.HasPrefix(line, []byte("--")) {
		return false
	}
	b := string(bytes.TrimRight(line[2:], " \t\r\n"))
	closing := false
	depth, ok := s.bounds[b]
	if !ok && strings.HasSuffix(b, "--") {
		depth, ok = s.bounds[b[:len(b)-2]]
		closing = ok
	}
	if !ok {
		return false
	}
	s.endPart()
	// Inner multiparts left open end here too.
	for len(s.stack) > depth {
		s.pop()
	}
	if closing {
		s.pop()
		s.state = inSkip // the epilogue, up to the enclosing boundary
		return true
	}
	s.parts++
	if s.parts > s.maxParts {
		s.err = fmt.Errorf("more than %d MIME parts", s.maxParts)
		return true
	}
	s.state, s.fields = inHeader, partFields{}
	return true
}

func (s *mimeScanner) pop() {
	b := s.stack[len(s.stack)-1]
	s.stack = s.stack[:len(s.stack)-1]
	delete(s.bounds, b)
	// An outer multipart with the same boundary gets it back.
	for i := len(s.stack) - 1; i >= 0; i-- {
		if s.stack[i] == b {
			s.bounds[b] = i + 1
			break
		}
	}
}

// partFields are the fields of a part's header that say what it is,
// as bytes: a field folded over thousands of lines is appended to, not
// copied whole for each line.
type partFields struct {
	contentType, disposition, encoding []byte
	cur                                *[]byte // the field being continued
}

func (s *mimeScanner) headerLine(line []byte, whole bool) {
	f := &s.fields
	if whole && len(bytes.TrimRight(line, "\r\n")) == 0 {
		s.endHeader()
		return
	}
	if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
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
	default:
		return
	}
	if len(*dst) == 0 { // the first of each counts
		*dst = append((*dst)[:0], bytes.TrimSpace(value)...)
		f.cur = dst
	}
}

// endHeader decides what the part whose header ended is.
func (s *mimeScanner) endHeader() {
	var h message.Header
	f := s.fields
	if len(f.contentType) > 0 {
		h.Set("Content-Type", string(f.contentType))
	}
	if len(f.disposition) > 0 {
		h.Set("Content-Disposition", string(f.disposition))
	}
	ct, ctParams, _ := h.ContentType()
	s.state = inSkip
	if strings.HasPrefix(ct, "multipart/") {
		b := ctParams["boundary"]
		if b == "" {
			return // no boundary: nothing in it can be told apart
		}
		if len(s.stack) >= s.maxDepth {
			s.err = fmt.Errorf("MIME parts nested more than %d deep", s.maxDepth)
			return
		}
		s.stack = append(s.stack, b)
		s.bounds[b] = len(s.stack)
		return // the preamble, up to the first boundary
	}
	s.state = inBody
	disp, dParams, _ := h.ContentDisposition()
	name := dParams["filename"]
	if name == "" {
		name = ctParams["name"]
	}
	if name == "" && disp != "attachment" {
		return
	}
	s.leaf = &leafCount{a: Attachment{Name: name, ContentType: ct}, enc: strings.ToLower(string(f.encoding))}
}

// endPart ends the current part at a boundary or at the end of the message.
func (s *mimeScanner) endPart() {
	if s.leaf != nil {
		s.result = append(s.result, s.leaf.done())
		s.leaf = nil
	}
}

// Finish ends the message and returns its attachments; the error says a
// bound was passed and the list may be incomplete.
func (s *mimeScanner) Finish() ([]Attachment, error) {
	if s.err == nil {
		if s.lineLen > 0 {
			s.endLine(len(s.line) == s.lineLen)
		}
		s.endPart()
	}
	return s.result, s.err
}

// Close abandons the message.
func (s *mimeScanner) Close() { s.leaf, s.result = nil, nil }

// leafCount counts the decoded size of an attachment as its lines pass.
type leafCount struct {
	a   Attachment
	enc string
	// pending is the previous line's end: content, unless a boundary follows
	// (RFC 2046: the line end before a boundary belongs to the boundary).
	pending int64
	b64     int64 // base64 alphabet characters seen
}

// line counts one whole line, line end included.
func (l *leafCount) line(line []byte) {
	body := bytes.TrimRight(line, "\r\n")
	end := int64(len(line) - len(body))
	switch l.enc {
	case "base64":
		l.raw(body)
		return
	case "quoted-printable":
		body = bytes.TrimRight(body, " \t")
		if bytes.HasSuffix(body, []byte("=")) {
			// A soft line break: the line continues, no line end.
			l.a.Size += l.pending + qpLen(body[:len(body)-1])
			l.pending = 0
			return
		}
		l.a.Size += l.pending + qpLen(body)
		l.pending = end
		return
	}
	l.a.Size += l.pending + int64(len(body))
	l.pending = end
}

// raw counts content that is not a whole line.
func (l *leafCount) raw(b []byte) {
	if l.enc == "base64" {
		for _, c := range b {
			if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' {
				l.b64++
			}
		}
		return
	}
	l.a.Size += l.pending + int64(len(b))
	l.pending = 0
}

// lineEnd ends a line that was counted as raw content.
func (l *leafCount) lineEnd() {
	if l.enc != "base64" {
		l.pending = 2
	}
}

func (l *leafCount) done() Attachment {
	if l.enc == "base64" {
		l.a.Size = l.b64 * 3 / 4
	}
	return l.a
}

// qpLen is the decoded length of quoted-printable text: "=XX" is one byte.
func qpLen(b []byte) int64 {
	n := int64(len(b))
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '=' && isHex(b[i+1]) && isHex(b[i+2]) {
			n -= 2
			i += 2
		}
	}
	return n
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
