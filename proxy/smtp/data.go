package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"

	"github.com/mailward/mailward/policy"
)

// maxHeaderBytes bounds the header block, which is held in memory for
// the rules and for the header edits made on the way upstream.
const maxHeaderBytes = 1 << 20

var errHeaderTooLarge = errors.New("header block too large")

// dataReader reads the DATA of a message: it removes dot-stuffing, makes
// bare LF line ends CRLF and a bare CR a space, and stops at the
// end-of-data line. Only CRLF "." CRLF ends the data: a lone "." after a
// bare LF is content, so a sender's relay cannot smuggle a second message
// past its own checks; and since no bare CR or LF goes upstream, neither
// can an upstream MTA that reads line ends differently be misled.
type dataReader struct {
	br        *bufio.Reader
	pendingCR bool // the last piece ended with CR (a CRLF may span two reads)
	lineOK    bool // the next line follows a CRLF
	midLine   bool // the next byte continues a line
	done      bool
	scratch   []byte
}

func newDataReader(br *bufio.Reader) *dataReader {
	return &dataReader{br: br, lineOK: true}
}

// next returns the next piece of content (a line or part of a long one),
// valid until the following call, or io.EOF after the end-of-data line.
func (d *dataReader) next() ([]byte, error) {
	if d.done {
		return nil, io.EOF
	}
	frag, err := d.br.ReadSlice('\n')
	complete := err == nil
	if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	startsLine := !d.midLine
	if startsLine && d.lineOK && complete && string(frag) == ".\r\n" {
		d.done = true
		return nil, io.EOF
	}
	if startsLine && d.lineOK && len(frag) > 0 && frag[0] == '.' {
		frag = frag[1:]
	}
	d.midLine = !complete
	if complete {
		d.lineOK = bytes.HasSuffix(frag, []byte("\r\n")) || len(frag) == 1 && d.pendingCR
	}
	return d.normalize(frag, complete), nil
}

// normalize makes every line end CRLF and every other CR a space.
func (d *dataReader) normalize(frag []byte, complete bool) []byte {
	if !d.pendingCR {
		cr := bytes.IndexByte(frag, '\r')
		if cr < 0 && !complete || complete && cr >= 0 && cr == len(frag)-2 {
			return frag // the usual case: nothing to change
		}
	}
	out := d.scratch[:0]
	if d.pendingCR {
		d.pendingCR = false
		if len(frag) > 0 && frag[0] == '\n' {
			out = append(out, '\r')
		} else {
			out = append(out, ' ')
		}
	}
	for i := 0; i < len(frag); i++ {
		switch c := frag[i]; {
		case c == '\r' && i+1 < len(frag) && frag[i+1] == '\n':
			out = append(out, '\r', '\n')
			i++
		case c == '\r' && i+1 == len(frag) && !complete:
			d.pendingCR = true
		case c == '\r':
			out = append(out, ' ')
		case c == '\n' && (i > 0 || len(out) == 0 || out[len(out)-1] != '\r'):
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	d.scratch = out
	return out
}

// drain reads and drops the rest of the data.
func (d *dataReader) drain() error {
	for {
		if _, err := d.next(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// rawHeader is one header field as received, folding and all.
type rawHeader struct {
	name string
	raw  []byte // "Name: value\r\n" with continuation lines
}

// split returns the field as written: the name with any white space
// before the colon, and all after the colon without the final CRLF,
// folding kept. The engine needs both to see the field byte for byte.
func (h rawHeader) split() (name, afterColon string) {
	i := bytes.IndexByte(h.raw, ':')
	return string(h.raw[:i]), strings.TrimSuffix(string(h.raw[i+1:]), "\r\n")
}

// headerParser splits the start of the content into header fields.
type headerParser struct {
	headers []rawHeader
	cur     []byte
	size    int
	midLine bool
	done    bool
	// blank is true when a blank line ended the header block; otherwise
	// the body starts right after the last header.
	blank bool
}

// feed takes the next piece of content and returns the body bytes that
// follow the header block, once the block has ended.
func (h *headerParser) feed(frag []byte) ([]byte, error) {
	if len(frag) == 0 {
		return nil, nil
	}
	h.size += len(frag)
	if h.size > maxHeaderBytes {
		return nil, errHeaderTooLarge
	}
	startsLine := !h.midLine
	h.midLine = len(frag) == 0 || frag[len(frag)-1] != '\n'
	switch {
	case !startsLine:
		h.cur = append(h.cur, frag...)
	case string(frag) == "\r\n":
		h.finish()
		h.done, h.blank = true, true
	case (frag[0] == ' ' || frag[0] == '\t') && h.cur != nil:
		h.cur = append(h.cur, frag...)
	case headerName(frag) != "":
		h.finish()
		h.cur = append([]byte(nil), frag...)
	default:
		// Not a header line: the body starts here, with no blank line.
		h.finish()
		h.done = true
		return frag, nil
	}
	return nil, nil
}

// finish ends the header block at the end of the data.
func (h *headerParser) finish() {
	if h.cur == nil {
		return
	}
	if !bytes.HasSuffix(h.cur, []byte("\r\n")) {
		h.cur = append(h.cur, '\r', '\n')
	}
	h.headers = append(h.headers, rawHeader{name: headerName(h.cur), raw: h.cur})
	h.cur = nil
}

// headerName returns the field name of a header line, or "".
func headerName(line []byte) string {
	for i, c := range line {
		switch {
		case c == ':':
			if i == 0 {
				return ""
			}
			return strings.TrimRight(string(line[:i]), " \t")
		case c == ' ' || c == '\t':
			// Obsolete syntax allows white space before the colon only.
			rest := bytes.TrimLeft(line[i:], " \t")
			if i == 0 || len(rest) == 0 || rest[0] != ':' {
				return ""
			}
			return string(line[:i])
		case c < '!' || c > '~':
			return ""
		}
	}
	return ""
}

// messageWriter writes the message upstream with the verdict's header
// edits applied: top headers (our Received, prepended edits) first, the
// received headers minus the removed and replaced ones, then the
// appended edits, then the body.
type messageEdits struct {
	top    []policy.HeaderEdit
	append []policy.HeaderEdit
	drop   map[int]bool // indexes into the received headers
}

func planEdits(have []rawHeader, v policy.Verdict, extraTop []policy.HeaderEdit) messageEdits {
	e := messageEdits{top: extraTop, drop: map[int]bool{}}
	for _, r := range v.Remove {
		n := 0
		for i, h := range have {
			if strings.EqualFold(h.name, r.Name) {
				n++
				if n == r.Index {
					e.drop[i] = true
				}
			}
		}
	}
	for _, ed := range v.Headers {
		if !validHeaderName(ed.Name) {
			continue
		}
		switch {
		case ed.Replace:
			for i, h := range have {
				if strings.EqualFold(h.name, ed.Name) {
					e.drop[i] = true
				}
			}
			e.append = append(e.append, ed)
		case ed.Prepend:
			e.top = append(e.top, ed)
		default:
			e.append = append(e.append, ed)
		}
	}
	return e
}

func (e messageEdits) write(w io.Writer, have []rawHeader, blank bool, body io.Reader) error {
	bw := bufio.NewWriterSize(w, 32<<10)
	for _, ed := range e.top {
		bw.WriteString(formatHeader(ed.Name, ed.Value))
	}
	for i, h := range have {
		if !e.drop[i] {
			bw.Write(h.raw)
		}
	}
	for _, ed := range e.append {
		bw.WriteString(formatHeader(ed.Name, ed.Value))
	}
	if blank || len(e.top)+len(e.append) > 0 && len(have) == 0 {
		bw.WriteString("\r\n")
	}
	if _, err := bw.ReadFrom(body); err != nil {
		return err
	}
	return bw.Flush()
}

// formatHeader renders a header field with CRLF folding; every
// continuation line starts with white space, so a value cannot start a
// header or the body of its own.
func formatHeader(name, value string) string {
	value = strings.ReplaceAll(value, "\r\n", "\n")
	value = strings.Map(func(r rune) rune {
		if r == '\r' || r == 0 {
			return ' '
		}
		return r
	}, value)
	lines := strings.Split(value, "\n")
	var b strings.Builder
	b.WriteString(name + ": ")
	for i, l := range lines {
		if i > 0 {
			if strings.TrimSpace(l) == "" {
				continue
			}
			b.WriteString("\r\n")
			if l[0] != ' ' && l[0] != '\t' {
				b.WriteByte('\t')
			}
		}
		b.WriteString(l)
	}
	b.WriteString("\r\n")
	return b.String()
}

// dotWriter dot-stuffs a message for DATA; Close writes the end-of-data
// line. What it is given has CRLF line ends already (the data reader
// makes them so); a dot after any LF is doubled all the same, so that no
// line can end the data early.
type dotWriter struct {
	w   *bufio.Writer
	mid bool // inside a line
}

func newDotWriter(w *bufio.Writer) *dotWriter { return &dotWriter{w: w} }

func (d *dotWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if !d.mid && p[0] == '.' {
			if err := d.w.WriteByte('.'); err != nil {
				return 0, err
			}
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			d.mid = true
			if _, err := d.w.Write(p); err != nil {
				return 0, err
			}
			break
		}
		d.mid = false
		if _, err := d.w.Write(p[:i+1]); err != nil {
			return 0, err
		}
		p = p[i+1:]
	}
	return n, nil
}

func (d *dotWriter) Close() error {
	if d.mid {
		if _, err := d.w.WriteString("\r\n"); err != nil {
			return err
		}
	}
	_, err := d.w.WriteString(".\r\n")
	return err
}
