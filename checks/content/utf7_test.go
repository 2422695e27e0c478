package content

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"

	"golang.org/x/text/transform"

	"github.com/mailward/mailward/internal/testenv"
)

// utf7 decodes b in one call, or fed in pieces of n bytes to a small
// buffer, to cut shifts, code units and surrogate pairs anywhere.
func utf7(t testing.TB, b []byte, n int) string {
	t.Helper()
	if n <= 0 {
		out, _, err := transform.Bytes(&utf7Decoder{}, b)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	var out []byte
	d := &utf7Decoder{}
	buf := make([]byte, 2*utf8.UTFMax)
	for len(b) > 0 || n > 0 {
		k := min(n, len(b))
		src, eof := b[:k], k == len(b)
		for {
			nd, ns, err := d.Transform(buf, src, eof)
			out = append(out, buf[:nd]...)
			src = src[ns:]
			if err == nil {
				break
			}
			if err != transform.ErrShortDst {
				t.Fatal(err)
			}
		}
		b = b[k:]
		if eof {
			break
		}
	}
	return string(out)
}

func TestUTF7(t *testing.T) {
	// Python's utf-7 codec gives the same, but for the ill-formed
	// endings it drops or passes through (marked).
	for in, want := range map[string]string{
		"Hi Mom -+Jjo--!":          "Hi Mom -\u263a-!", // RFC 2152's examples
		"+ZeVnLIqe-":               "日本語",
		"A+ImIDkQ.":                "A\u2262\u0391.",
		"Hi+-Mom":                  "Hi+Mom",
		"+-+-":                     "++",
		"+AGEAYgBj":                "abc",
		"+2D3eAA http://x.example": "\U0001F600 http://x.example",
		"+AH4AXA-":                 "~\\",
		"+ZeVnLIqe.":               "日本語.",
		"+AG-":                     "\ufffd",
		"+!x":                      "\ufffd!x", // Python: "\ufffdx"
		"\xffa":                    "\ufffda",
		"a+":                       "a\ufffd",      // Python: "a"
		"+2D0-x":                   "\ufffdx",      // Python: a lone surrogate
		"+3gA-":                    "\ufffd",       // a low surrogate alone
		"+2D3YPQ-":                 "\ufffd\ufffd", // two high surrogates
		"+2D0AYQ-":                 "\ufffda",      // a high one, then "a"
		"":                         "",
	} {
		for _, n := range []int{0, 1, 2, 3} {
			if got := utf7(t, []byte(in), n); got != want {
				t.Errorf("%q in pieces of %d: %q, want %q", in, n, got, want)
			}
		}
	}
}

// A UTF-7 part's text and links are read: as UTF-8, "+AGg-ttp://..."
// hid both.
func TestUTF7Part(t *testing.T) {
	body := encodeUTF7("Gewinn! Jetzt http://spam.example/win öffnen")
	// Every IANA name and alias of UTF-7 (csUTF7 too).
	for _, label := range []string{"UTF-7", "csUTF7", "UNICODE-1-1-UTF-7", "csUnicode11UTF7"} {
		msg := crlf("Content-Type: text/plain; charset=" + label + "\n\n" + body + "\n")
		for _, n := range []int{1, 5, 1 << 10} {
			r := scan(t, Options{}, msg, n)
			if !strings.Contains(r.Text, "http://spam.example/win öffnen") || len(r.URLs) != 1 || r.URLs[0].Host != "spam.example" {
				t.Errorf("%s in pieces of %d: text %q, URLs %+v", label, n, r.Text, r.URLs)
			}
		}
	}
}

// encodeUTF7 writes every character but letters, digits and spaces in
// base64, as a sender hiding words would.
func encodeUTF7(s string) string {
	var b strings.Builder
	var units []uint16
	flush := func() {
		if len(units) == 0 {
			return
		}
		const alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
		b.WriteByte('+')
		var bits uint32
		n := 0
		for _, u := range units {
			bits = bits<<16 | uint32(u)
			n += 16
			for n >= 6 {
				n -= 6
				b.WriteByte(alpha[bits>>n&63])
			}
		}
		if n > 0 {
			b.WriteByte(alpha[bits<<(6-n)&63])
		}
		b.WriteByte('-')
		units = units[:0]
	}
	for _, r := range s {
		if r == ' ' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' {
			flush()
			b.WriteRune(r)
			continue
		}
		units = utf16.AppendRune(units, r)
	}
	flush()
	return b.String()
}

// FuzzUTF7: any bytes decode to UTF-8, the same in any pieces, and what
// encodeUTF7 writes decodes back to the text.
func FuzzUTF7(f *testing.F) {
	for _, s := range []string{"Hi Mom -+Jjo--!", "+ZeVnLIqe-", "+2D3eAA-", "a+", "+-", "+AG"} {
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, b []byte, piece uint8) {
		whole := utf7(t, b, 0)
		if !utf8.ValidString(whole) {
			t.Fatalf("%q: not UTF-8: %q", b, whole)
		}
		if got := utf7(t, b, int(piece)%8+1); got != whole {
			t.Fatalf("%q in pieces of %d: %q, whole %q", b, piece%8+1, got, whole)
		}
		if len(whole) > 3*len(b)+3 {
			t.Fatalf("%q: %d bytes out of %d", b, len(whole), len(b))
		}
		text := strings.ToValidUTF8(string(b), "\ufffd")
		if got := utf7(t, []byte(encodeUTF7(text)), 0); got != text {
			t.Fatalf("%q encoded and decoded is %q", text, got)
		}
	})
}

// Python's codec, an independent implementation, encodes random text;
// the decoder must give the text back.
func TestUTF7AgainstPython(t *testing.T) {
	python := testenv.Require(t, "python3")
	rng := rand.New(rand.NewPCG(7, 7))
	pick := []rune("a+-/=~\\. A0\n\u00e9\u4e00\U0001F600")
	var texts []string
	for range 2000 {
		var b strings.Builder
		for range rng.IntN(30) {
			switch rng.IntN(4) {
			case 0:
				b.WriteRune(rune(0x20 + rng.IntN(0x5F)))
			case 1:
				b.WriteRune(rune(0x80 + rng.IntN(0xD800-0x80)))
			case 2:
				b.WriteRune(rune(0x10000 + rng.IntN(0x100000)))
			default:
				b.WriteRune(pick[rng.IntN(len(pick))])
			}
		}
		texts = append(texts, b.String())
	}
	in, err := json.Marshal(texts)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python, "-c", `import json, sys
print(json.dumps([list(s.encode("utf-7")) for s in json.load(sys.stdin)]))`)
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3: %v", err)
	}
	var encoded [][]byte
	var raw [][]int
	if err := json.Unmarshal(out, &raw); err != nil {
		t.Fatal(err)
	}
	for _, r := range raw {
		b := make([]byte, len(r))
		for i, v := range r {
			b[i] = byte(v)
		}
		encoded = append(encoded, b)
	}
	for i, e := range encoded {
		for _, n := range []int{0, 1, 3} {
			if got := utf7(t, e, n); got != texts[i] {
				t.Fatalf("%q (pieces of %d): %q, want %q", e, n, got, texts[i])
			}
		}
	}
}
