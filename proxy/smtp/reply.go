package smtp

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// maxLine bounds a command or reply line; Postfix's line_length_limit is the same.
const maxLine = 2048

// maxReplyLines bounds a multi-line reply from upstream.
const maxReplyLines = 100

var errLineTooLong = errors.New("line too long")

// reply is one SMTP reply. Text holds the text of each line, without the
// code and separator, so that a reply read from upstream is written to the
// client as it came.
type reply struct {
	code int
	text []string
}

func newReply(code int, enhanced, text string) reply {
	if enhanced != "" {
		text = enhanced + " " + text
	}
	return reply{code: code, text: []string{oneLine(text)}}
}

func (r reply) positive() bool  { return r.code >= 200 && r.code < 400 }
func (r reply) transient() bool { return r.code >= 400 && r.code < 500 }

// String is the reply on one line, for logs and errors.
func (r reply) String() string {
	return strconv.Itoa(r.code) + " " + strings.Join(r.text, " / ")
}

func (r reply) writeTo(w *bufio.Writer) error {
	if len(r.text) == 0 {
		r.text = []string{""}
	}
	for i, t := range r.text {
		sep := "-"
		if i == len(r.text)-1 {
			sep = " "
		}
		if _, err := fmt.Fprintf(w, "%03d%s%s\r\n", r.code, sep, t); err != nil {
			return err
		}
	}
	return nil
}

// readReply reads one possibly multi-line reply.
func readReply(br *bufio.Reader) (reply, error) {
	var r reply
	for i := 0; ; i++ {
		line, err := readLine(br, maxLine)
		if err != nil {
			return reply{}, err
		}
		if len(line) < 3 || (len(line) > 3 && line[3] != ' ' && line[3] != '-') {
			return reply{}, fmt.Errorf("malformed reply %q", truncate(line, 80))
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil || code < 200 || code > 599 {
			return reply{}, fmt.Errorf("malformed reply code in %q", truncate(line, 80))
		}
		if i > 0 && code != r.code {
			return reply{}, fmt.Errorf("reply code changed from %d to %d within one reply", r.code, code)
		}
		r.code = code
		text := ""
		if len(line) > 4 {
			text = oneLine(line[4:])
		}
		r.text = append(r.text, text)
		if len(line) == 3 || line[3] == ' ' {
			return r, nil
		}
		if i >= maxReplyLines {
			return reply{}, fmt.Errorf("reply of more than %d lines", maxReplyLines)
		}
	}
}

// readLine reads one line and drops its CRLF (or bare LF). A longer line
// than max is consumed whole and reported as errLineTooLong.
func readLine(br *bufio.Reader, max int) (string, error) {
	var buf []byte
	tooLong := false
	for {
		frag, err := br.ReadSlice('\n')
		if len(buf)+len(frag) > max+2 {
			tooLong = true
		} else {
			buf = append(buf, frag...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			return "", err
		}
		break
	}
	if tooLong {
		return "", errLineTooLong
	}
	s := string(buf[:len(buf)-1])
	return strings.TrimSuffix(s, "\r"), nil
}

// oneLine keeps a reply or header text to one line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return ' '
		}
		return r
	}, s)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// xtextEncode encodes an XCLIENT/XFORWARD/DSN value (RFC 3461 section 4).
func xtextEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '!' || c > '~' || c == '+' || c == '=' {
			fmt.Fprintf(&b, "+%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// xtextDecode reverses xtextEncode.
func xtextDecode(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '+' {
			if c < '!' || c > '~' || c == '=' {
				return "", fmt.Errorf("bad character %q in xtext", c)
			}
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(s) {
			return "", errors.New("truncated +XX in xtext")
		}
		n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil || strings.ToUpper(s[i+1:i+3]) != s[i+1:i+3] {
			return "", fmt.Errorf("bad escape %q in xtext", s[i:i+3])
		}
		b.WriteByte(byte(n))
		i += 2
	}
	return b.String(), nil
}
