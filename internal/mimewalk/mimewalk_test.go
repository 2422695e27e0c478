package mimewalk

import (
	"fmt"
	"strings"
	"testing"
)

// record is a reader that keeps what it is given, as text: each part's
// type, then its lines with their line-end lengths.
type record struct {
	out  strings.Builder
	skip string // a media type not read
}

func (r *record) Part(p *Part) Body {
	fmt.Fprintf(&r.out, "[%s top=%v multi=%v enc=%s]", p.MediaType, p.Top, p.Multipart, p.Encoding)
	if p.Multipart || p.MediaType == r.skip {
		return nil
	}
	return r
}

func (r *record) Content(b []byte, eol int) {
	r.out.Write(b)
	if eol > 0 {
		fmt.Fprintf(&r.out, "<%d>", eol)
	}
}

func (r *record) End() { r.out.WriteString("|") }

func walk(msg string, chunk int, o Options, readers ...Handler) (*Walker, error) {
	w := New(o, readers...)
	for i := 0; i < len(msg); i += chunk {
		w.Write([]byte(msg[i:min(i+chunk, len(msg))]))
	}
	return w, w.Finish()
}

const sample = "From: A <a@example.com>\r\nContent-Type: multipart/mixed;\r\n boundary=\"b\"\r\n\r\npreamble\r\n" +
	"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: Quoted-Printable\r\n\r\none\r\ntwo\n" +
	"--b\r\nContent-Type: image/png\r\n\r\nPNG\r\n" +
	"--b--\r\nepilogue\r\n"

func TestWalkerPartsAndLines(t *testing.T) {
	want := "[multipart/mixed top=true multi=true enc=][text/plain top=false multi=false enc=quoted-printable]one<2>two<1>|" +
		"[image/png top=false multi=false enc=]PNG<2>|"
	for _, chunk := range []int{1, 3, 64, len(sample)} {
		r := &record{}
		w, err := walk(sample, chunk, Options{MaxDepth: 5, MaxParts: 10}, r)
		if err != nil || r.out.String() != want || w.From() != "A <a@example.com>" {
			t.Errorf("chunks of %d: %v\n got %s\nwant %s\nfrom %q", chunk, err, r.out.String(), want, w.From())
		}
	}
}

// Two readers see the same parts; a part one of them skips still reaches
// the other, and a part neither reads is passed over.
func TestWalkerReaders(t *testing.T) {
	a, b := &record{skip: "image/png"}, &record{skip: "text/plain"}
	if _, err := walk(sample, 7, Options{MaxDepth: 5, MaxParts: 10}, a, b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(a.out.String(), "one<2>") || strings.Contains(a.out.String(), "PNG") {
		t.Errorf("a: %s", a.out.String())
	}
	if strings.Contains(b.out.String(), "one") || !strings.Contains(b.out.String(), "PNG<2>") {
		t.Errorf("b: %s", b.out.String())
	}
}

func TestWalkerBounds(t *testing.T) {
	deep := strings.Repeat("Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n", 4)
	if _, err := walk(deep, 64, Options{MaxDepth: 3, MaxParts: 100}); err == nil || err.Error() != "MIME parts nested more than 3 deep" {
		t.Errorf("depth: %v", err)
	}
	many := "Content-Type: multipart/mixed; boundary=x\r\n\r\n" + strings.Repeat("--x\r\n\r\nbody\r\n", 5)
	if _, err := walk(many, 64, Options{MaxDepth: 3, MaxParts: 5}); err == nil || err.Error() != "more than 5 MIME parts" {
		t.Errorf("parts: %v", err)
	}
}

// A line longer than a boundary can be reaches the reader in pieces,
// whole, and a header-only message still has its From.
func TestWalkerLongLinesAndHeaderOnly(t *testing.T) {
	long := strings.Repeat("y", 5000)
	r := &record{}
	if _, err := walk("Subject: x\r\n\r\n"+long+"\r\nend\r\n", 100, Options{MaxDepth: 1, MaxParts: 1}, r); err != nil {
		t.Fatal(err)
	}
	if got := r.out.String(); got != "[text/plain top=true multi=false enc=]"+long+"<2>end<2>|" {
		t.Errorf("long line: %.80s…", got)
	}
	w, _ := walk("From: only@example.com\r\n", 5, Options{MaxDepth: 1, MaxParts: 1})
	if w.From() != "only@example.com" {
		t.Errorf("header only: From %q", w.From())
	}
}

type depths []string

func (d *depths) Part(p *Part) Body {
	*d = append(*d, fmt.Sprintf("%s@%d", p.MediaType, p.Depth))
	return nil
}

// Depth is the multiparts a part is inside.
func TestWalkerDepth(t *testing.T) {
	msg := "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n--a\r\nContent-Type: message/rfc822\r\n\r\nSubject: y\r\n\r\nz\r\n--a--\r\n"
	var d depths
	if _, err := walk(msg, 5, Options{MaxDepth: 5, MaxParts: 10}, &d); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(d, " "), "multipart/mixed@0 multipart/alternative@1 text/plain@2 message/rfc822@1"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
