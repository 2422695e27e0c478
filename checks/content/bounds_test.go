package content

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
)

// The bounds: whatever the message, the scan keeps at most its bounds
// and says which one it met; what it found before stands.

func TestHugeBase64Part(t *testing.T) {
	text := strings.Repeat("spam spam http://huge.example/ spam\n", 200000) // 7 MB
	enc := base64.StdEncoding.EncodeToString([]byte(text))
	var b strings.Builder
	b.WriteString("Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	r := scan(t, Options{MaxTextBytes: 1000}, b.String(), 64<<10)
	if len(r.Text) != 1000 || r.Text != text[:1000] {
		t.Errorf("text of %d bytes kept, want the first 1000", len(r.Text))
	}
	if !strings.HasPrefix(r.Limit, "text over 1000 bytes") || len(r.URLs) != 1 {
		t.Errorf("limit %q, URLs %+v", r.Limit, r.URLs)
	}
}

func TestLongLine(t *testing.T) {
	msg := "Subject: x\r\n\r\n" + strings.Repeat("x", 5<<20) + " http://end.example/"
	r := scan(t, Options{}, msg, 1<<20)
	if len(r.Text) != DefaultMaxTextBytes || len(r.URLs) != 1 {
		t.Errorf("text %d bytes, URLs %+v", len(r.Text), r.URLs)
	}
}

func TestDeepNesting(t *testing.T) {
	var b strings.Builder
	b.WriteString("Content-Type: multipart/mixed; boundary=b0\r\n\r\n")
	for i := 1; i <= 1000; i++ {
		fmt.Fprintf(&b, "--b%d\r\nContent-Type: text/plain\r\n\r\nhttp://level%d.example/\r\n--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n", i-1, i, i-1, i)
	}
	r := scan(t, Options{MaxDepth: 5}, b.String(), 4096)
	if r.Limit != "MIME parts nested more than 5 deep" || len(r.URLs) != 5 {
		t.Errorf("limit %q, %d URLs", r.Limit, len(r.URLs))
	}
}

func TestManyParts(t *testing.T) {
	var b strings.Builder
	b.WriteString("Content-Type: multipart/mixed; boundary=b\r\n\r\n")
	for i := 0; i < 5000; i++ {
		fmt.Fprintf(&b, "--b\r\nContent-Type: text/plain\r\n\r\nhttp://p%d.example/\r\n", i)
	}
	r := scan(t, Options{MaxParts: 50}, b.String(), 4096)
	if r.Limit != "more than 50 MIME parts" || r.TextParts != 49 || len(r.URLs) != 49 {
		t.Errorf("limit %q, %d parts, %d URLs", r.Limit, r.TextParts, len(r.URLs))
	}
}

func TestManyLinks(t *testing.T) {
	var b strings.Builder
	b.WriteString("Content-Type: text/html\r\n\r\n")
	for i := 0; i < 100000; i++ {
		fmt.Fprintf(&b, "<a href=\"http://l%d.example/\">x</a>\r\n", i)
	}
	r := scan(t, Options{MaxTextBytes: 4 << 20}, b.String(), 64<<10)
	if len(r.URLs) != DefaultMaxURLs || r.URLCount != maxCandidates {
		t.Errorf("%d URLs kept, %d counted", len(r.URLs), r.URLCount)
	}
	if r.URLs[0].Host != "l0.example" || r.URLs[99].Host != "l99.example" {
		t.Errorf("not the first ones: %+v ... %+v", r.URLs[0], r.URLs[99])
	}
	if r.Limit == "" {
		t.Error("no limit reported")
	}
}

func TestDuplicateLinks(t *testing.T) {
	msg := "\r\n" + strings.Repeat("http://same.example/x http://SAME.example/x www.same.example\r\n", 50000)
	r := scan(t, Options{}, msg, 64<<10)
	if len(r.URLs) != 2 || r.URLCount != 2 {
		t.Errorf("%+v, count %d", r.URLs, r.URLCount)
	}
}

func TestPathologicalHTML(t *testing.T) {
	for name, body := range map[string]string{
		"open tags":     strings.Repeat("<div><a href=x>", 200000),
		"one long tag":  "<a href=\"http://x.example/" + strings.Repeat("a", 2<<20) + "\">",
		"lone brackets": strings.Repeat("<", 3<<20),
		"comments":      strings.Repeat("<!--", 500000),
		"attributes":    "<p " + strings.Repeat("a=b ", 500000) + ">",
		"entities":      strings.Repeat("&amp;&#x41;&bogus;", 200000),
		"script":        "<script>" + strings.Repeat("</scrip", 300000),
	} {
		msg := "Content-Type: text/html\r\n\r\n" + body
		r := scan(t, Options{}, msg, 64<<10)
		if len(r.Text) > DefaultMaxTextBytes || len(r.URLs) > DefaultMaxURLs {
			t.Errorf("%s: text %d bytes, %d URLs", name, len(r.Text), len(r.URLs))
		}
	}
}

// Runs of links without a break, and fields folded over many lines, cost
// their length once, not once per link or line.
func TestLongRunsAndFolds(t *testing.T) {
	run := "\r\n" + strings.Repeat("http://a.example/hxxp://b[.]example/www.c.example/", 100000) + "\r\n"
	r := scan(t, Options{}, run, 1<<20)
	if len(r.URLs) == 0 || r.URLCount > maxCandidates {
		t.Errorf("%d URLs, count %d", len(r.URLs), r.URLCount)
	}
	folded := "From: \"x\"\r\n" + strings.Repeat(" a@b.example\r\n", 200000) + " <c@d.example>\r\nContent-Type: text/plain;\r\n" +
		strings.Repeat(" x=y;\r\n", 200000) + "\r\nhttp://e.example/\r\n"
	r = scan(t, Options{}, folded, 1<<16)
	if len(r.URLs) != 1 {
		t.Errorf("URLs %+v", r.URLs)
	}
}

// A host's labels are bounded before IDNA, whose Punycode costs the
// square of a label's length: a label of more characters than a DNS
// label holds is no link, whatever it costs to encode.
func TestIDNALabelBound(t *testing.T) {
	label := func(n int) string {
		var b strings.Builder
		for r := rune(0x4E00); r < rune(0x4E00+n); r++ {
			b.WriteRune(r)
		}
		return b.String()
	}
	if _, ok := Normalize("http://"+label(64)+".example/", false); ok {
		t.Errorf("a label of 64 characters is a link")
	}
	if _, ok := Normalize("http://"+label(30)+"."+label(30)+"."+label(30)+"."+label(30)+"."+label(30)+"."+label(30)+".example/", false); ok {
		t.Errorf("a host of more than 253 characters is a link")
	}
	// Characters IDNA drops do not count.
	if u, ok := Normalize("http://pay"+strings.Repeat("\u00ad", 100)+"pal.example/", false); !ok || u.Host != "paypal.example" {
		t.Errorf("soft hyphens: %+v, %v", u, ok)
	}
	if u, ok := Normalize("http://b\u00fccher.example/", false); !ok || u.Host != "xn--bcher-kva.example" {
		t.Errorf("%+v, %v", u, ok)
	}
}

// The hosts put through IDNA are bounded per message: past the bound
// such links are not read (Limit says so), ASCII ones still are.
func TestIDNABytesBound(t *testing.T) {
	var b strings.Builder
	b.WriteString("\r\nhttp://b\u00fccher.example/\r\n")
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&b, "http://%s%d.example/\r\n", strings.Repeat("\u4e00\u4e01\u4e02", 20), i)
	}
	b.WriteString("http://ascii.example/ http://m\u00fcnchen.example/\r\n")
	r := scan(t, Options{MaxURLs: 10000}, b.String(), 1<<16)
	if !strings.Contains(r.Limit, "IDNA") {
		t.Errorf("limit %q", r.Limit)
	}
	if len(r.URLs) < 2 || r.URLs[0].Host != "xn--bcher-kva.example" || r.URLs[len(r.URLs)-1].Host != "ascii.example" {
		t.Errorf("first %+v, last %+v", r.URLs[0], r.URLs[len(r.URLs)-1])
	}
	if n := len(r.URLs); n > maxIDNABytes/180+2 {
		t.Errorf("%d links read past the IDNA bound", n)
	}
}

// Padding a message with links does not hide its anchors from the deceit
// check: an anchor past the links looked at, or between two paddings, is
// checked as the first one is.
func TestPhishPastPadding(t *testing.T) {
	pad := func(b *strings.Builder, from int) {
		for i := from; i < from+maxCandidates; i++ {
			fmt.Fprintf(b, "<a href=\"http://l%d.example/\">x</a>\r\n", i)
		}
	}
	const phish = `<a href="https://evil.example/">paypal.com</a>` + "\r\n"
	const honest = `<a href="https://www.paypal.com/">paypal.com</a>` + "\r\n"
	var b strings.Builder
	b.WriteString("Content-Type: text/html\r\n\r\n")
	pad(&b, 0)
	b.WriteString(phish + honest)
	pad(&b, maxCandidates)
	b.WriteString(phish + honest)
	r := scan(t, Options{MaxTextBytes: 4 << 20, MaxURLs: MaxMaxURLs}, b.String(), 64<<10)
	if r.PhishLinks != 2 || r.URLCount != maxCandidates || !strings.Contains(r.Limit, "links") {
		t.Errorf("%d deceptive links, %d counted, limit %q", r.PhishLinks, r.URLCount, r.Limit)
	}
}

// Past the IDNA bound, an anchor whose host or shown name was not read
// for it counts as deceptive: it cannot be told to match, and only a
// message padded with such names gets there.
func TestPhishPastIDNABound(t *testing.T) {
	var b strings.Builder
	b.WriteString("Content-Type: text/html\r\n\r\n")
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&b, "<p>http://%s%d.example/\r\n", strings.Repeat("\u4e00\u4e01\u4e02", 20), i)
	}
	for body, want := range map[string]int{
		"<a href=\"http://\u00e9vil.example/\">paypal.com</a>":            1, // the href not read
		"<a href=\"https://evil.example/\">p\u0430ypal.com</a>":           1, // the shown name not read
		"<a href=\"https://www.paypal.com/\">paypal.com</a>":              0,
		"<a href=\"http://\u00e9vil.example/\">click here</a>":            0,
		"<a href=\"http://\u00e9vil.example/\">www.\u00e9vil.example</a>": 1,
	} {
		r := scan(t, Options{MaxTextBytes: 4 << 20, MaxURLs: MaxMaxURLs}, b.String()+body, 64<<10)
		if r.PhishLinks != want || !strings.Contains(r.Limit, "IDNA") {
			t.Errorf("%s: %d deceptive links, want %d; limit %q", body, r.PhishLinks, want, r.Limit)
		}
	}
}

// A host read once is not paid for again: an honest message whose many
// anchors all name its own non-ASCII domain does not run out of the
// IDNA bound and get its anchors counted as deceit.
func TestIDNAHostRepeated(t *testing.T) {
	var b strings.Builder
	b.WriteString("Content-Type: text/html; charset=utf-8\r\n\r\n")
	for i := 0; i < 3000; i++ {
		fmt.Fprintf(&b, "<p><a href=\"https://www.b\u00fccher-laden.example/%d\">www.b\u00fccher-laden.example</a>\r\n", i)
	}
	r := scan(t, Options{MaxURLs: MaxMaxURLs}, b.String(), 4096)
	if r.PhishLinks != 0 || r.Limit != "" || r.URLCount != 3001 {
		t.Errorf("%d deceptive links, %d links, limit %q", r.PhishLinks, r.URLCount, r.Limit)
	}
}

// The hosts kept from IDNA stay within their bytes, entries counted
// whole, however many short ones a message names.
func TestIDNAReadBound(t *testing.T) {
	s := NewScanner(Options{})
	s.Write([]byte("\r\n"))
	for i := 0; i < 40000; i++ {
		s.Write([]byte(fmt.Sprintf("http://\u00e9%d.example/\r\n", i)))
	}
	if s.idna.kept > maxIDNABytes || len(s.idna.read)*entryCost > maxIDNABytes {
		t.Errorf("%d hosts kept in %d bytes", len(s.idna.read), s.idna.kept)
	}
	s.Finish()
}
