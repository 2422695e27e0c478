package content

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
)

const attached = `From: "Bank" <x@evil.example>
Subject: forwarded
Content-Type: multipart/alternative; boundary=in

--in
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

Caf=E9, see http://inner.example/a
--in
Content-Type: text/html

<a href="https://evil.example/">paypal.com</a>
--in--
`

// An attached message's text parts and links are read as the message's.
func TestAttachedMessage(t *testing.T) {
	for name, part := range map[string]string{
		"7bit":   "Content-Type: message/rfc822\nContent-Disposition: attachment; filename=fw.eml\n\n" + attached,
		"base64": "Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n" + wrap76(base64.StdEncoding.EncodeToString([]byte(crlf(attached)))),
		"global": "Content-Type: message/global\n\n" + attached,
	} {
		msg := crlf("From: a@example.org\nContent-Type: multipart/mixed; boundary=out\n\n--out\nContent-Type: text/plain\n\nouter http://outer.example/\n--out\n" +
			part + "\n--out\nContent-Type: text/plain\n\nafter http://after.example/\n--out--\n")
		for _, n := range []int{1, 7, 1 << 20} {
			r := scan(t, Options{}, msg, n)
			var hosts []string
			for _, u := range r.URLs {
				hosts = append(hosts, u.Host)
			}
			if got := strings.Join(hosts, " "); got != "outer.example inner.example evil.example after.example" {
				t.Errorf("%s, pieces of %d: hosts %s", name, n, got)
			}
			if !strings.Contains(r.Text, "Café, see") || !r.HTML || r.TextParts != 4 || r.PhishLinks != 1 || r.Limit != "" {
				t.Errorf("%s, pieces of %d: text %q, summary %+v", name, n, r.Text, r.Summary)
			}
			if r.FromDisplayMismatch {
				t.Errorf("%s: the attached message's From is taken for the message's", name)
			}
		}
	}
}

func wrap76(s string) string {
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76] + "\n")
		s = s[76:]
	}
	return b.String() + s
}

// Attached messages count toward the message's bounds: their parts,
// their nesting, their text.
func TestAttachedMessageBounds(t *testing.T) {
	// Messages inside messages: the nesting is bounded.
	msg := "hello http://l0.example/\r\n"
	for i := 1; i <= 10; i++ {
		msg = fmt.Sprintf("Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\nContent-Type: text/plain\r\n\r\nhttp://l%d.example/\r\n--b%d\r\nContent-Type: message/rfc822\r\n\r\n%s\r\n--b%d--\r\n", i, i, i, i, msg, i)
	}
	r := scan(t, Options{}, msg, 1<<10)
	if len(r.URLs) != maxMessageNesting+1 || r.URLs[0].Host != "l10.example" || !strings.Contains(r.Limit, "attached messages nested") {
		t.Errorf("nesting: %d URLs, limit %q", len(r.URLs), r.Limit)
	}
	r = scan(t, Options{MaxDepth: 4}, msg, 1<<10)
	if len(r.URLs) != 2 || !strings.Contains(r.Limit, "nested more than 4 deep") {
		t.Errorf("depth 4: %d URLs, limit %q", len(r.URLs), r.Limit)
	}
	// Parts: those of the attached message count with the others.
	var b strings.Builder
	for i := 0; i < 30; i++ {
		fmt.Fprintf(&b, "--in\r\nContent-Type: text/plain\r\n\r\nhttp://p%d.example/\r\n", i)
	}
	inner := "Content-Type: multipart/mixed; boundary=in\r\n\r\n" + b.String() + "--in--\r\n"
	outer := "Content-Type: multipart/mixed; boundary=out\r\n\r\n--out\r\nContent-Type: message/rfc822\r\n\r\n" + inner + "--out\r\nContent-Type: message/rfc822\r\n\r\n" + inner + "--out--\r\n"
	r = scan(t, Options{MaxParts: 40}, outer, 1<<10)
	if r.TextParts > 40 || !strings.Contains(r.Limit, "more than 40 MIME parts") {
		t.Errorf("parts: %d text parts, limit %q", r.TextParts, r.Limit)
	}
	// Text: one budget for the message.
	big := strings.Repeat("word ", 2000)
	outer = "Content-Type: multipart/mixed; boundary=out\r\n\r\n--out\r\n\r\n" + big + "\r\n--out\r\nContent-Type: message/rfc822\r\n\r\n\r\n" + big + "\r\n--out--\r\n"
	r = scan(t, Options{MaxTextBytes: 12000}, outer, 1<<10)
	if len(r.Text) != 12000 || !strings.Contains(r.Limit, "text over") {
		t.Errorf("text: %d bytes, limit %q", len(r.Text), r.Limit)
	}
}
