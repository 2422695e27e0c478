package content

import (
	"encoding/base64"
	"fmt"
	"strings"
)

// corpus is a mix of the mail a filter sees, bodies of about 4 KB as
// mailward-bench writes them: plain text, newsletters (quoted-printable
// text and HTML with links), an HTML-only base64 message and a short
// note with a 100 KB attachment.
func corpus() []string {
	hdr := func(ct string) string {
		return "From: News <news@list.example>\r\nTo: bob@example.net\r\nSubject: December\r\n" +
			"Message-ID: <1@list.example>\r\nMIME-Version: 1.0\r\nContent-Type: " + ct + "\r\n"
	}
	plain := hdr("text/plain; charset=utf-8") + "\r\n" +
		strings.Repeat("A line of the newsletter body, as long as most lines are, see www.list.example.\r\n", 50)
	var alt strings.Builder
	alt.WriteString(hdr(`multipart/alternative; boundary="alt"`) + "\r\n--alt\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	for range 20 {
		alt.WriteString("Gr=C3=BC=C3=9Fe! The quick brown fox jumps over the lazy dog; mail filters keep =\r\nspam away. Read more at https://www.list.example/news/1\r\n")
	}
	alt.WriteString("\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><head><style>p { color: #333 }</style></head><body>\r\n")
	for i := range 15 {
		fmt.Fprintf(&alt, "<p>The quick brown fox jumps over the <b>lazy dog</b>; see <a href=\"https://www.list.example/offer?id=%d\">our offer</a> and <a href=\"http://shop%d.example.com/item\">the shop</a>.</p>\r\n", i, i)
	}
	alt.WriteString("<img src=\"https://cdn.bench.test/logo.png\"></body></html>\r\n--alt--\r\n")
	html := strings.Repeat("<div><p>Limited offer! <a href=\"https://deals.example/x\">Click</a> &amp; save.</p></div>\n", 45)
	htmlB64 := hdr("text/html; charset=windows-1252") + "Content-Transfer-Encoding: base64\r\n\r\n" + wrap(base64.StdEncoding.EncodeToString([]byte(html)))
	attach := hdr(`multipart/mixed; boundary="mix"`) + "\r\n--mix\r\nContent-Type: text/plain\r\n\r\nThe report is attached.\r\n" +
		"--mix\r\nContent-Type: application/pdf; name=r.pdf\r\nContent-Disposition: attachment; filename=r.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		wrap(base64.StdEncoding.EncodeToString([]byte(strings.Repeat("%PDF-1.4 binary ", 6400)))) + "--mix--\r\n"
	return []string{plain, alt.String(), plain, alt.String(), htmlB64, plain, alt.String(), attach}
}

func wrap(s string) string {
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	b.WriteString(s + "\r\n")
	return b.String()
}
