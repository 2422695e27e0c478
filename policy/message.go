package policy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
)

// ReadHeader reads a message's header block from r: one Header per
// field, its Value all that follows the colon (leading space and folding
// kept, folds as CRLF + white space), ready for Conn.HeaderField. It
// accepts LF or CRLF line ends and stops after the empty line that ends
// the header. A first line "From sender date", the envelope line of an
// mbox file, is skipped, as mail tools do.
func ReadHeader(r *bufio.Reader) ([]Header, error) {
	var out []Header
	// The folded value of the last field, built once: the lines are the
	// sender's, and joining them by concatenation is quadratic.
	var folded strings.Builder
	flush := func() {
		if folded.Len() > 0 {
			out[len(out)-1].Value = folded.String()
			folded.Reset()
		}
	}
	for n := 1; ; n++ {
		line, err := r.ReadString('\n')
		if err != nil && (err != io.EOF || line == "") {
			if err == io.EOF {
				flush()
				return out, nil // a message of header only
			}
			return nil, fmt.Errorf("reading header: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			flush()
			return out, nil
		}
		if n == 1 && strings.HasPrefix(line, "From ") {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(out) == 0 {
				return nil, fmt.Errorf("header line %d: continuation before any field", n)
			}
			if folded.Len() == 0 {
				folded.WriteString(out[len(out)-1].Value)
			}
			folded.WriteString("\r\n")
			folded.WriteString(line)
			if err == io.EOF {
				flush()
				return out, nil
			}
			continue
		}
		flush()
		// The name as written: obsolete syntax allows white space before
		// the colon, and HeaderField keeps it for the DKIM verifier.
		name, value, ok := strings.Cut(line, ":")
		if !ok || name == "" || strings.ContainsAny(strings.TrimRight(name, " \t"), " \t") {
			return nil, fmt.Errorf("header line %d: not a header field: %q", n, truncate(line, 60))
		}
		out = append(out, Header{Name: name, Value: value})
		if err == io.EOF {
			return out, nil
		}
	}
}

// Unfold joins a folded header value into one line: every line end that
// comes before white space goes, the white space stays (RFC 5322
// section 2.2.3).
func Unfold(v string) string {
	if strings.IndexByte(v, '\n') < 0 {
		return v
	}
	var b strings.Builder
	b.Grow(len(v))
	for i := 0; i < len(v); i++ {
		switch {
		case v[i] == '\r' && i+2 < len(v) && v[i+1] == '\n' && (v[i+2] == ' ' || v[i+2] == '\t'):
			i++
		case v[i] == '\n' && i+1 < len(v) && (v[i+1] == ' ' || v[i+1] == '\t'):
		default:
			b.WriteByte(v[i])
		}
	}
	return b.String()
}

// CRLFWriter turns bare LF line ends into CRLF, as SMTP carries a body.
type CRLFWriter struct {
	W      io.Writer
	lastCR bool
}

func (c *CRLFWriter) Write(p []byte) (int, error) {
	var buf bytes.Buffer
	for _, b := range p {
		if b == '\n' && !c.lastCR {
			buf.WriteByte('\r')
		}
		buf.WriteByte(b)
		c.lastCR = b == '\r'
	}
	if _, err := c.W.Write(buf.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
