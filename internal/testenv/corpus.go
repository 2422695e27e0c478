package testenv

import (
	"encoding/base64"
	"fmt"
	"strings"
)

// ContentCorpus is a mix of the mail a filter sees, from domain, bodies
// of about 4 KB as mailward-bench gen --html writes them: plain text,
// newsletters (quoted-printable text and HTML with links), an HTML-only
// base64 message in windows-1252 and a short note with a 100 KB PDF
// attachment. It is what the content scan's benchmarks read.
func ContentCorpus(domain string) []string {
	hdr := func(ct string, more ...string) string {
		return "From: Alice <alice@" + domain + ">\r\nTo: bob@example.net\r\nSubject: Your December newsletter\r\n" +
			"Date: Thu, 3 Dec 2026 07:00:00 +0000\r\nMessage-ID: <20261203070000.1234@" + domain + ">\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: " + ct + "\r\n" + strings.Join(more, "") + "\r\n"
	}
	plain := hdr("text/plain; charset=utf-8") +
		strings.Repeat("A line of the newsletter body, as long as most lines are, see www."+domain+".\r\n", 50)
	var alt strings.Builder
	alt.WriteString(hdr(`multipart/alternative; boundary="alt"`) + "--alt\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	for range 20 {
		alt.WriteString("Gr=C3=BC=C3=9Fe! The quick brown fox jumps over the lazy dog; mail filters keep =\r\nspam away. Read more at https://www." + domain + "/news/1\r\n")
	}
	alt.WriteString("\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><head><style>p { color: #333 }</style></head><body>\r\n")
	for i := range 15 {
		fmt.Fprintf(&alt, "<p>The quick brown fox jumps over the <b>lazy dog</b>; see <a href=\"https://www.%s/offer?id=%d\">our offer</a> and <a href=\"http://shop%d.example.com/item\">the shop</a>.</p>\r\n", domain, i, i)
	}
	alt.WriteString("<img src=\"https://cdn.bench.test/logo.png\"></body></html>\r\n--alt--\r\n")
	html := strings.Repeat("<div><p>Limited offer! <a href=\"https://deals.example/x\">Click</a> &amp; save.</p></div>\n", 45)
	htmlB64 := hdr("text/html; charset=windows-1252", "Content-Transfer-Encoding: base64\r\n") + wrap76(base64.StdEncoding.EncodeToString([]byte(html)))
	attach := hdr(`multipart/mixed; boundary="mix"`) + "--mix\r\nContent-Type: text/plain\r\n\r\nThe report is attached.\r\n" +
		"--mix\r\nContent-Type: application/pdf; name=r.pdf\r\nContent-Disposition: attachment; filename=r.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		wrap76(base64.StdEncoding.EncodeToString([]byte(strings.Repeat("%PDF-1.4 binary ", 6400)))) + "--mix--\r\n"
	return []string{plain, alt.String(), plain, alt.String(), htmlB64, plain, alt.String(), attach}
}

// wrap76 breaks base64 into lines of 76 characters, as MIME has it.
func wrap76(s string) string {
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	b.WriteString(s + "\r\n")
	return b.String()
}
