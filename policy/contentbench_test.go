package policy_test

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"
)

// contentCorpus is a mix of the mail a filter sees, bodies of about
// 4 KB as mailward-bench writes them (gen --html 0.5): plain text,
// newsletters (quoted-printable text and HTML with links), an HTML-only
// base64 message and a short note with a 100 KB attachment; each signed.
func contentCorpus(b *testing.B, w *world) []string {
	hdr := func(ct string, more ...string) string {
		return "From: Alice <alice@example.test>\r\nTo: bob@example.net\r\nSubject: Your December newsletter\r\n" +
			"Date: Thu, 3 Dec 2026 07:00:00 +0000\r\nMessage-ID: <20261203070000.1234@example.test>\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: " + ct + "\r\n" + strings.Join(more, "") + "\r\n"
	}
	plain := hdr("text/plain; charset=utf-8") +
		strings.Repeat("A line of the newsletter body, as long as most lines are, see www.example.test.\r\n", 50)
	var alt strings.Builder
	alt.WriteString(hdr(`multipart/alternative; boundary="alt"`) + "--alt\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	for range 20 {
		alt.WriteString("Gr=C3=BC=C3=9Fe! The quick brown fox jumps over the lazy dog; mail filters keep =\r\nspam away. Read more at https://www.example.test/news/1\r\n")
	}
	alt.WriteString("\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><head><style>p { color: #333 }</style></head><body>\r\n")
	for i := range 15 {
		fmt.Fprintf(&alt, "<p>The quick brown fox jumps over the <b>lazy dog</b>; see <a href=\"https://www.example.test/offer?id=%d\">our offer</a> and <a href=\"http://shop%d.example.com/item\">the shop</a>.</p>\r\n", i, i)
	}
	alt.WriteString("<img src=\"https://cdn.bench.test/logo.png\"></body></html>\r\n--alt--\r\n")
	html := strings.Repeat("<div><p>Limited offer! <a href=\"https://deals.example/x\">Click</a> &amp; save.</p></div>\n", 45)
	htmlB64 := hdr("text/html; charset=windows-1252", "Content-Transfer-Encoding: base64\r\n") + wrap76(base64.StdEncoding.EncodeToString([]byte(html)))
	attach := hdr(`multipart/mixed; boundary="mix"`) + "--mix\r\nContent-Type: text/plain\r\n\r\nThe report is attached.\r\n" +
		"--mix\r\nContent-Type: application/pdf; name=r.pdf\r\nContent-Disposition: attachment; filename=r.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		wrap76(base64.StdEncoding.EncodeToString([]byte(strings.Repeat("%PDF-1.4 binary ", 6400)))) + "--mix--\r\n"
	var out []string
	for _, m := range []string{plain, alt.String(), plain, alt.String(), htmlB64, plain, alt.String(), attach} {
		out = append(out, w.sign(b, m))
	}
	return out
}

func wrap76(s string) string {
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	b.WriteString(s + "\r\n")
	return b.String()
}

// BenchmarkContentCost compares the CPU time per message of the engine
// with real checks (SPF, DKIM, DMARC, iprev on the fixture DNS server)
// with the content scan off and on, over the same corpus, rounds
// interleaved (off, on, off, on) so that a busy machine weighs on both
// alike. The target is 1.3 times or less:
//
//	go test -run - -bench ContentCost -benchtime 20x ./policy
func BenchmarkContentCost(b *testing.B) {
	w := newWorld(b)
	msgs := contentCorpus(b, w)
	on := w.engine(b, nil)
	w.contentOff = true
	off := w.engine(b, nil)
	rc := []string{"bob@example.net"}
	const perRound = 25 // times the corpus
	var cpuOff, cpuOn time.Duration
	n := 0
	for b.Loop() {
		start := cpuTime()
		for range perRound {
			for _, m := range msgs {
				send(b, off, "192.0.2.1", "alice@example.test", rc, m)
			}
		}
		cpuOff += cpuTime() - start
		start = cpuTime()
		for range perRound {
			for _, m := range msgs {
				send(b, on, "192.0.2.1", "alice@example.test", rc, m)
			}
		}
		cpuOn += cpuTime() - start
		n += perRound * len(msgs)
	}
	b.ReportMetric(float64(cpuOff.Microseconds())/float64(n), "off-cpu-µs/msg")
	b.ReportMetric(float64(cpuOn.Microseconds())/float64(n), "on-cpu-µs/msg")
	b.ReportMetric(float64(cpuOn)/float64(cpuOff), "on/off")
}
