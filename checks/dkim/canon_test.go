package dkim

import (
	"bytes"
	"crypto/sha256"
	"regexp"
	"strings"
	"testing"
)

// refBody canonicalizes a whole body the plain way (RFC 6376 section
// 3.4.3 and 3.4.4), for the streaming bodyHasher to be checked against.
func refBody(body string, relaxed bool) string {
	// Line ends: CRLF, and a bare LF counts as one; a lone CR is content.
	var lines []string
	var cur strings.Builder
	for i := 0; i < len(body); i++ {
		switch {
		case body[i] == '\r' && i+1 < len(body) && body[i+1] == '\n':
			lines = append(lines, cur.String())
			cur.Reset()
			i++
		case body[i] == '\n':
			lines = append(lines, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(body[i])
		}
	}
	if cur.Len() > 0 {
		lines = append(lines, cur.String())
	}
	if relaxed {
		wsp := regexp.MustCompile(`[ \t]+`)
		for i, l := range lines {
			lines[i] = strings.TrimRight(wsp.ReplaceAllString(l, " "), " ")
		}
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) == 0 {
		if relaxed {
			return ""
		}
		return "\r\n"
	}
	return strings.Join(lines, "\r\n") + "\r\n"
}

func FuzzBodyCanon(f *testing.F) {
	for _, s := range []string{"", "\r\n", "a", "a \t b \r\n\r\n", "x\r", "x\ry\n\n", " \r\n \r\nz", "\t\t\r\n"} {
		f.Add(s, uint8(3))
	}
	f.Fuzz(func(t *testing.T, body string, chunk uint8) {
		for _, relaxed := range []bool{false, true} {
			want := sha256.Sum256([]byte(refBody(body, relaxed)))
			b := &bodyHasher{relaxed: relaxed, h: sha256.New()}
			n := max(int(chunk), 1)
			for p := []byte(body); len(p) > 0; p = p[min(n, len(p)):] {
				b.Write(p[:min(n, len(p))])
			}
			if got := b.sum(); !bytes.Equal(got, want[:]) {
				t.Fatalf("relaxed=%v %q: canonical form differs from %q", relaxed, body, refBody(body, relaxed))
			}
		}
	})
}
