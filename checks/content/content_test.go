package content

import (
	"encoding/base64"
	"fmt"
	"mime/quotedprintable"
	"reflect"
	"strings"
	"testing"
)

// scan feeds msg in pieces of n bytes, to cut lines, escapes and
// characters anywhere.
func scan(t testing.TB, o Options, msg string, n int) *Result {
	t.Helper()
	s := NewScanner(o)
	for len(msg) > 0 {
		k := min(n, len(msg))
		s.Write([]byte(msg[:k]))
		msg = msg[k:]
	}
	return s.Finish()
}

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

const multipart = `From: "PayPal Service" <service@paypal.com>
To: you@example.org
Subject: hello
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b1"

--b1
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

Caf=E9 au lait, see http://Example.COM/a?x=3D1 and www.shop.example.co.uk.=
 Also hxxp://evil[.]example/x
--b1
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: base64

%s
--b1--
`

const htmlBody = `<html><head><title>T</title><style>p{color:red}</style><script>var u="http://script.example/";</script></head>
<body><p>Hello&nbsp;<b>there</b></p><a href="https://login.evil.example/x">https://www.paypal.com/signin</a>
<a href="https://www.paypal.com/help">PayPal help</a><img src="//cdn.example.net/i.png"><a href="/relative">r</a>
<a href="http://xn--bcher-kva.example/">b</a><a href="http://BÜCHER.example/">b2</a><a href="http://[2001:db8::1]:8080/p">v6</a></body></html>`

func TestMultipart(t *testing.T) {
	msg := crlf(fmt.Sprintf(multipart, base64.StdEncoding.EncodeToString([]byte(htmlBody))))
	want := []URL{
		{Scheme: "http", Host: "example.com", Domain: "example.com", Path: "/a"},
		{Scheme: "http", Host: "www.shop.example.co.uk", Domain: "example.co.uk"},
		{Scheme: "http", Host: "evil.example", Domain: "evil.example", Path: "/x"},
		{Scheme: "https", Host: "login.evil.example", Domain: "evil.example", Path: "/x"},
		{Scheme: "https", Host: "www.paypal.com", Domain: "paypal.com", Path: "/signin"},
		{Scheme: "https", Host: "www.paypal.com", Domain: "paypal.com", Path: "/help"},
		{Scheme: "http", Host: "cdn.example.net", Domain: "example.net", Path: "/i.png"},
		{Scheme: "http", Host: "xn--bcher-kva.example", Domain: "xn--bcher-kva.example", Path: "/"},
		{Scheme: "http", Host: "2001:db8::1", Path: "/p"},
	}
	for _, n := range []int{1, 3, 7, 64, 1 << 20} {
		r := scan(t, Options{}, msg, n)
		if !reflect.DeepEqual(r.URLs, want) {
			t.Errorf("pieces of %d: URLs\n got %+v\nwant %+v", n, r.URLs, want)
		}
		if !strings.Contains(r.Text, "Café au lait") || !strings.Contains(r.Text, "Hello\u00a0there") {
			t.Errorf("pieces of %d: text %q", n, r.Text)
		}
		for _, hidden := range []string{"color:red", "script.example", "var u"} {
			if strings.Contains(r.Text, hidden) {
				t.Errorf("pieces of %d: text shows %q", n, hidden)
			}
		}
		if !r.HTML || r.TextParts != 2 || r.URLCount != len(want) || r.PhishLinks != 1 || r.Limit != "" {
			t.Errorf("pieces of %d: summary %+v", n, r.Summary)
		}
		if r.FromDisplayMismatch {
			t.Errorf("pieces of %d: display name without a domain counted as a mismatch", n)
		}
	}
}

func TestNormalize(t *testing.T) {
	for _, c := range []struct {
		raw  string
		attr bool
		want URL
		ok   bool
	}{
		{"HTTP://User:pw@WWW.Example.COM:80/Path?q#f", false, URL{Scheme: "http", Host: "www.example.com", Path: "/Path"}, true},
		{"https://paypal.com@evil.example/", false, URL{Scheme: "https", Host: "evil.example", Path: "/"}, true},
		{"http://%65vil.example/", false, URL{Scheme: "http", Host: "evil.example", Path: "/"}, true},
		{"http://3232235777/", false, URL{Scheme: "http", Host: "192.168.1.1", Path: "/"}, true},
		{"http://192.168.1.1./x", false, URL{Scheme: "http", Host: "192.168.1.1", Path: "/x"}, true},
		// Hosts ending in a number are IPv4 addresses as browsers read
		// them (WHATWG URL), never names such as "0.1" for domain lists.
		{"http://0177.0.0.1/", false, URL{Scheme: "http", Host: "127.0.0.1", Path: "/"}, true},
		{"http://0x7F.0.0.1/", false, URL{Scheme: "http", Host: "127.0.0.1", Path: "/"}, true},
		{"http://0x7f000001/", false, URL{Scheme: "http", Host: "127.0.0.1", Path: "/"}, true},
		{"http://127.1/", false, URL{Scheme: "http", Host: "127.0.0.1", Path: "/"}, true},
		{"http://10.1.258/", false, URL{Scheme: "http", Host: "10.1.1.2", Path: "/"}, true},
		{"http://1.2.3.4.5/", false, URL{}, false},
		{"http://256.1.1.1/", false, URL{}, false},
		{"http://4294967296/", false, URL{}, false},
		{"http://09.1.1.1/", false, URL{}, false},
		{"http://example.123/", false, URL{}, false},
		{"http://123.example/", false, URL{Scheme: "http", Host: "123.example", Path: "/"}, true},
		{"hxxps://bad[.]example\\x", false, URL{Scheme: "https", Host: "bad.example", Path: "/x"}, true},
		{"http://münchen.example", false, URL{Scheme: "http", Host: "xn--mnchen-3ya.example"}, true},
		{"http://ex\u3002example/", false, URL{Scheme: "http", Host: "ex.example", Path: "/"}, true},
		{"http://spam.example\u3002/", true, URL{Scheme: "http", Host: "spam.example", Path: "/"}, true},
		{"\x01\x1fhttp://spam.example/\x00", true, URL{Scheme: "http", Host: "spam.example", Path: "/"}, true},
		{"http://spam\uFF0Eexample\uFF0E/x", true, URL{Scheme: "http", Host: "spam.example", Path: "/x"}, true},
		{"www.example.org", false, URL{Scheme: "http", Host: "www.example.org"}, true},
		{"www.example.org", true, URL{}, false},
		{"//cdn.example/", true, URL{Scheme: "http", Host: "cdn.example", Path: "/"}, true},
		{"//cdn.example/", false, URL{}, false},
		// Slashes and backslashes after the scheme are skipped, as
		// browsers do: each of these goes to evil.example.
		{`https:\\evil.example\x`, true, URL{Scheme: "https", Host: "evil.example", Path: "/x"}, true},
		{"HTTP:/evil.example/", true, URL{Scheme: "http", Host: "evil.example", Path: "/"}, true},
		{"http:evil.example", true, URL{Scheme: "http", Host: "evil.example"}, true},
		{"http:///evil.example/", false, URL{Scheme: "http", Host: "evil.example", Path: "/"}, true},
		{`\\evil.example/`, true, URL{Scheme: "http", Host: "evil.example", Path: "/"}, true},
		{"www.example.org:8080/x", false, URL{Scheme: "http", Host: "www.example.org", Path: "/x"}, true},
		{"cid:part1@example", true, URL{}, false},
		{"mailto:a@b.example", true, URL{}, false},
		{"ftp://a.example/", false, URL{}, false},
		{"javascript:alert(1)", true, URL{}, false},
		{"http://", false, URL{}, false},
		{"http://a..b/", false, URL{}, false},
		{"http://a b/", false, URL{}, false},
	} {
		got, ok := Normalize(c.raw, c.attr)
		if ok != c.ok || got != c.want {
			t.Errorf("Normalize(%q, %v) = %+v, %v; want %+v, %v", c.raw, c.attr, got, ok, c.want, c.ok)
		}
	}
}

func TestRegistrable(t *testing.T) {
	for host, want := range map[string]string{
		"www.example.co.uk": "example.co.uk",
		"a.b.example.com":   "example.com",
		"com":               "",
		"192.0.2.1":         "",
		"2001:db8::1":       "",
		"foo.blogspot.com":  "foo.blogspot.com",
	} {
		if got := registrable(host); got != want {
			t.Errorf("registrable(%q) = %q, want %q", host, got, want)
		}
	}
}

func TestFromDisplayMismatch(t *testing.T) {
	for field, want := range map[string]bool{
		`"service@paypal.com" <x@evil.example>`:          true,
		`"PayPal.com" <x@evil.example>`:                  true,
		`"PayPal.com" <x@mail.paypal.com>`:               false,
		`"Jane Doe" <jane@example.org>`:                  false,
		`"J. Doe (v1.2)" <jane@example.org>`:             false,
		`=?utf-8?q?support=40bank=2Ecom?= <a@b.example>`: true,
		`jane@example.org`:                               false,
		`not an address`:                                 false,
		// Compatibility forms and the full stops IDNA reads as dots
		// are what a reader sees: "paypal.com".
		"\"paypal\uFF0Ecom\" <x@evil.example>":                          true,
		"paypal\u3002com <x@evil.example>":                              true,
		"\"paypal\uFF61com\" <x@evil.example>":                          true,
		"\"\uFF50\uFF41\uFF59\uFF50\uFF41\uFF4C.com\" <x@evil.example>": true,
		"\"service\uFF20paypal.com\" <x@evil.example>":                  true,
		"\"paypal\uFF0Ecom\" <x@paypal.com>":                            false,
		"\"Jos\u00e9 M\u00fcller\" <x@example.org>":                     false,
		// The From address's own domain is read as the name is:
		// U-labels (RFC 6532), upper case, a trailing dot.
		"\"info@b\u00fccher.de\" <info@b\u00fccher.de>":                                                     false,
		"\"B\u00fccher b\u00fccher.de\" <info@xn--bcher-kva.de>":                                            false,
		"\"xn--bcher-kva.de\" <info@B\u00dcCHER.de>":                                                        false,
		"\"b\u00fccher.de\" <info@evil.de>":                                                                 true,
		"=?utf-8?b?" + base64.StdEncoding.EncodeToString([]byte("paypal\uFF0Ecom")) + "?= <x@evil.example>": true,
	} {
		msg := crlf("From: " + field + "\nSubject: x\n\nbody\n")
		if got := scan(t, Options{}, msg, 1<<20).FromDisplayMismatch; got != want {
			t.Errorf("From: %s: mismatch %v, want %v", field, got, want)
		}
	}
}

func TestQuotedPrintable(t *testing.T) {
	text := strings.Repeat("Grüße, ein langer Satz mit = Zeichen und http://qp.example/a-very-long-path-", 20) + "\nEnde\n"
	var b strings.Builder
	w := quotedprintable.NewWriter(&b)
	w.Write([]byte(text))
	w.Close()
	msg := crlf("Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n") + b.String()
	for _, n := range []int{1, 2, 5, 100} {
		r := scan(t, Options{}, msg, n)
		if strings.TrimRight(r.Text, "\n") != strings.TrimRight(text, "\n") {
			t.Fatalf("pieces of %d: decoded\n%q\nwant\n%q", n, r.Text, text)
		}
	}
}

func TestCharsets(t *testing.T) {
	for _, c := range []struct{ charset, body, want string }{
		{"windows-1252", "\x93quoted\x94 \x80", "\u201cquoted\u201d €"},
		{"koi8-r", "\xf0\xd2\xc9\xd7\xc5\xd4", "Привет"},
		{"shift_jis", "\x82\xb1\x82\xf1\x82\xc9\x82\xbf\x82\xcd", "こんにちは"},
		{"utf-8", "ok \xff bad", "ok \ufffd bad"},
		{"x-unknown", "plain", "plain"},
	} {
		msg := crlf("Content-Type: text/plain; charset=" + c.charset + "\n\n" + c.body + "\n")
		for _, n := range []int{1, 1 << 10} {
			if got := strings.TrimSpace(scan(t, Options{}, msg, n).Text); got != c.want {
				t.Errorf("%s, pieces of %d: %q, want %q", c.charset, n, got, c.want)
			}
		}
	}
}

func TestAttachmentsNotRead(t *testing.T) {
	msg := crlf(`Content-Type: multipart/mixed; boundary=x

--x
Content-Type: text/plain

see http://body.example/
--x
Content-Type: text/plain; name=notes.txt
Content-Disposition: attachment; filename=notes.txt

http://attached.example/
--x
Content-Type: text/html
Content-Disposition: attachment; filename=page.html

<a href="http://attached-html.example/">x</a>
--x
Content-Type: application/octet-stream

http://binary.example/
--x--
`)
	r := scan(t, Options{}, msg, 1<<20)
	if len(r.URLs) != 1 || r.URLs[0].Host != "body.example" || r.TextParts != 1 || r.HTML {
		t.Errorf("got %+v", r)
	}
}

func TestPhishLinks(t *testing.T) {
	for body, want := range map[string]int{
		`<a href="http://198.51.100.7/x">www.bank.example</a>`:                                               1,
		`<a href="https://evil.example/">Log in at <b>paypal.com</b></a>`:                                    1,
		`<a href="https://www.paypal.com/x">paypal.com</a>`:                                                  0,
		`<a href="https://t.paypal.com/x">https://www.paypal.com/</a>`:                                       0,
		`<a href="https://evil.example/">Click here</a>`:                                                     0,
		`<a href="https:\\evil.example\">www.paypal.com</a>`:                                                 1, // browsers go to evil.example
		`<a href="mailto:a@b.example">support@bank.example</a>`:                                              0,
		`<a href="https://evil.example/">v1.2 notes</a>`:                                                     0,
		"<a href=\"https://evil.example/\">paypal\uFF0Ecom</a>":                                              1, // fullwidth full stop
		"<a href=\"https://evil.example/\">www\u3002paypal\u3002com</a>":                                     1,
		"<a href=\"https://evil.example/\">\uFF50\uFF41\uFF59\uFF50\uFF41\uFF4C\uFF0E\uFF43\uFF4F\uFF4D</a>": 1,
		"<a href=\"https://www.paypal.com/\">paypal\uFF0Ecom</a>":                                            0,
		"<a href=\"https://evil.example/\">Gr\u00fc\u00dfe</a>":                                              0,
		`<a href="https://a.example/">a.example</a><a href=/x>b.example</a>`:                                 0,
		`<a href="https://a.example/">b.com<a href="https://c.example/">c.example`:                           1, // an unknown suffix is no name: "c.example"
	} {
		r := scan(t, Options{}, "Content-Type: text/html\r\n\r\n"+body, 1<<20)
		if r.PhishLinks != want {
			t.Errorf("%s: %d deceptive links, want %d", body, r.PhishLinks, want)
		}
	}
}

func TestLinksInRunningText(t *testing.T) {
	r := scan(t, Options{}, "\r\nsee http://a.example and www.b.example, or <https://c.example/x>. \"hxxp://d[.]example\"\r\nhttp://r.example/?u=https://e.example/\r\n", 5)
	var hosts []string
	for _, u := range r.URLs {
		hosts = append(hosts, u.Host)
	}
	if want := []string{"a.example", "www.b.example", "c.example", "d.example", "r.example", "e.example"}; !reflect.DeepEqual(hosts, want) {
		t.Errorf("hosts %v, want %v", hosts, want)
	}
	// White space and punctuation outside ASCII end a link: a link then
	// "&nbsp;" is not a name "example.comtoday" the lists never heard of.
	for _, c := range []struct{ body, host, path string }{
		{"Content-Type: text/html\r\n\r\n<p>Visit http://spam.example&nbsp;today</p>", "spam.example", ""},
		{"\r\nhttp://spam.example/x\u00a0today", "spam.example", "/x"},
		{"\r\n詳しくはhttp://spam.example。次へ", "spam.example", ""},
		{"\r\n（http://spam.example、http://spam.example）", "spam.example", ""},
		{"\r\n「http://spam.example/a」", "spam.example", "/a"},
		{"\r\n«http://spam.example/a»", "spam.example", "/a"},
		{"\r\nhttp://ex\u3002spam.example/", "ex.spam.example", "/"},
		// A bracket the link opened is the link's: an IPv6 literal, a
		// path; one it did not open ends a sentence.
		{"\r\nsee http://[2001:db8::1]. now", "2001:db8::1", ""},
		{"\r\n[http://[2001:db8::1]]", "2001:db8::1", ""},
		{"\r\n(see https://en.wikipedia.example/wiki/Foo_(bar)).", "en.wikipedia.example", "/wiki/Foo_(bar)"},
		{"\r\n(https://spam.example/a)", "spam.example", "/a"},
	} {
		r := scan(t, Options{}, c.body+"\r\n", 3)
		if len(r.URLs) != 1 || r.URLs[0].Host != c.host || r.URLs[0].Path != c.path {
			t.Errorf("%q: %+v, want host %s path %q", c.body, r.URLs, c.host, c.path)
		}
	}
}

// An address is not a link, even when its domain starts with "www.".
func TestAddressIsNoLink(t *testing.T) {
	for _, body := range []string{
		"write to me@www.example.com today",
		"write to ME@WWW.example.com",
		"<me@www.example.com>",
		"mailto:me@www.example.com",
		"me.too+x@www[.]example.com",
	} {
		r := scan(t, Options{}, "\r\n"+body+"\r\n", 3)
		if len(r.URLs) != 0 || r.URLCount != 0 {
			t.Errorf("%q: links %+v", body, r.URLs)
		}
	}
	// A link after an address is still one.
	r := scan(t, Options{}, "\r\nme@www.example.com www.shop.example\r\n", 3)
	if len(r.URLs) != 1 || r.URLs[0].Host != "www.shop.example" {
		t.Errorf("links %+v", r.URLs)
	}
}

// A run of text is looked at up to maxWord bytes however it comes: a
// link past that is not found in one piece and missed in several.
func TestLongRunPieces(t *testing.T) {
	body := "\r\n" + strings.Repeat("a", maxWord+100) + "http://evil.example/ http://ok.example/\r\n"
	whole := scan(t, Options{}, body, len(body)+1)
	for _, n := range []int{1, 7, 100, 4096} {
		r := scan(t, Options{}, body, n)
		if len(r.URLs) != len(whole.URLs) || r.URLCount != whole.URLCount {
			t.Errorf("pieces of %d: %+v, whole: %+v", n, r.URLs, whole.URLs)
		}
	}
	if len(whole.URLs) != 1 || whole.URLs[0].Host != "ok.example" {
		t.Errorf("links %+v", whole.URLs)
	}
}
