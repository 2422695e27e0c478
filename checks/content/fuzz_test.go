package content

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func checkResult(t *testing.T, o Options, r *Result) {
	o = o.withDefaults()
	if len(r.Text) > o.MaxTextBytes || len(r.URLs) > o.MaxURLs || r.URLCount < len(r.URLs) {
		t.Fatalf("over the bounds: text %d, URLs %d, count %d", len(r.Text), len(r.URLs), r.URLCount)
	}
	if !utf8.ValidString(r.Text) {
		t.Fatalf("text is not UTF-8: %q", r.Text)
	}
	for _, u := range r.URLs {
		checkURL(t, u)
	}
}

func checkURL(t *testing.T, u URL) {
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.Host != strings.ToLower(u.Host) {
		t.Fatalf("bad URL %+v", u)
	}
	// Normalised is a fixed point.
	host := u.Host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	again, ok := Normalize(u.Scheme+"://"+host+u.Path, false)
	if !ok || again.Host != u.Host || again.Scheme != u.Scheme {
		t.Fatalf("%+v normalised again is %+v, %v", u, again, ok)
	}
}

// FuzzScanner feeds whole messages, cut in pieces of any size.
func FuzzScanner(f *testing.F) {
	f.Add([]byte(crlf("Content-Type: multipart/alternative; boundary=b\n\n--b\nContent-Type: text/plain; charset=koi8-r\nContent-Transfer-Encoding: quoted-printable\n\nhttp://a.example/=\n=F0x\n--b\nContent-Type: text/html\nContent-Transfer-Encoding: base64\n\nPGEgaHJlZj0iaHR0cDovL2IuZXhhbXBsZS8iPnd3dy5jLmV4YW1wbGU8L2E+\n--b--\n")), uint8(7))
	f.Add([]byte("From: \"a@b.example\" <c@d.example>\r\n\r\nwww.x.example hxxp://y[.]example"), uint8(1))
	f.Add([]byte(crlf("Content-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: message/rfc822\n\nContent-Type: multipart/alternative; boundary=o\n\n--o\nContent-Type: text/plain; charset=utf-7\n\n+AGg-ttp://a.example/\n--o--\n--o--\n")), uint8(5))
	f.Fuzz(func(t *testing.T, msg []byte, piece uint8) {
		o := Options{MaxTextBytes: 4096, MaxURLs: 10, MaxDepth: 4, MaxParts: 20}
		r := scan(t, o, string(msg), int(piece)+1)
		checkResult(t, o, r)
		whole := scan(t, o, string(msg), len(msg)+1)
		if whole.Text != r.Text || len(whole.URLs) != len(r.URLs) {
			t.Fatalf("the pieces change the result: %q vs %q", whole.Text, r.Text)
		}
		if whole.Summary != r.Summary {
			t.Fatalf("the pieces change the summary: %+v vs %+v", whole.Summary, r.Summary)
		}
		for i := range r.URLs {
			if r.URLs[i] != whole.URLs[i] {
				t.Fatalf("the pieces change link %d: %+v vs %+v", i, r.URLs[i], whole.URLs[i])
			}
		}
	})
}

// FuzzHTML runs the HTML scanner on any markup.
func FuzzHTML(f *testing.F) {
	f.Add(`<p>Hi <a href="https://x.example/">www.y.example</a><script>z</script><img src=//i.example/p>`)
	f.Add(`<a href=http://a.example><a href="http://b.example">`)
	f.Fuzz(func(t *testing.T, markup string) {
		o := Options{MaxTextBytes: 4096, MaxURLs: 10}
		s := NewScanner(o)
		s.scanHTML([]byte(markup))
		s.words.end()
		r := s.Finish()
		checkResult(t, o, r)
		if r.PhishLinks > strings.Count(strings.ToLower(markup), "<a") {
			t.Fatalf("%d phishing links of fewer anchors", r.PhishLinks)
		}
	})
}

// FuzzURL runs the link finder and normaliser on any text.
func FuzzURL(f *testing.F) {
	for _, s := range []string{"http://a.example/b", "HXXPS://x[.]example", "www.münchen.example", "http://[::1]:80/", "http://%41.example", "http://4294967295/", "//a.example"} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, text string, attr bool) {
		if u, ok := Normalize(text, attr); ok {
			checkURL(t, u)
		}
		s := NewScanner(Options{MaxURLs: 10})
		s.words.write([]byte(text))
		s.words.end()
		checkResult(t, Options{MaxURLs: 10}, s.Finish())
	})
}
