package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/mailward/mailward/policy"
)

func TestReadProxyHeader(t *testing.T) {
	tests := []struct {
		name, in string
		src      string // "" for Local
		rest     string // what must remain unread
		err      bool
	}{
		{"v1 tcp4", "PROXY TCP4 192.0.2.1 198.51.100.2 40000 25\r\nEHLO", "192.0.2.1:40000", "EHLO", false},
		{"v1 tcp6", "PROXY TCP6 2001:db8::1 2001:db8::2 40000 25\r\n", "[2001:db8::1]:40000", "", false},
		{"v1 unknown", "PROXY UNKNOWN whatever\r\nX", "", "X", false},
		{"v1 family mismatch", "PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n", "", "", true},
		{"v1 bad port", "PROXY TCP4 192.0.2.1 192.0.2.2 65536 25\r\n", "", "", true},
		{"v1 leading zero port", "PROXY TCP4 192.0.2.1 192.0.2.2 025 25\r\n", "", "", true},
		{"v1 bare LF", "PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n", "", "", true},
		{"v1 too long", "PROXY TCP4 " + strings.Repeat("1", 120) + "\r\n", "", "", true},
		{"v1 missing field", "PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n", "", "", true},
		{"not a header", "EHLO x\r\n", "", "", true},
		{"v2 tcp4 with TLV", string(proxyV2TLV()) + "EHLO", "127.0.0.79:40002", "EHLO", false},
		{"v2 local", string(append(append([]byte(nil), proxyV2Sig...), 0x20, 0x00, 0, 0)) + "Z", "", "Z", false},
		{"v2 truncated", string(proxyV2Sig) + "\x21\x11\x00\x0c\x7f", "", "", true},
		{"v2 bad version", string(proxyV2Sig) + "\x31\x11\x00\x00", "", "", true},
		{"v2 short address block", string(proxyV2Sig) + "\x21\x11\x00\x04\x7f\x00\x00\x01", "", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tc.in))
			h, err := readProxyHeader(br)
			if tc.err {
				if err == nil {
					t.Fatalf("accepted: %+v", h)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.src == "" {
				if !h.Local {
					t.Fatalf("want a local header, got %+v", h)
				}
			} else if h.Local || h.Src.String() != tc.src {
				t.Fatalf("source %v (local %v), want %s", h.Src, h.Local, tc.src)
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != tc.rest {
				t.Fatalf("left %q unread, want %q", rest, tc.rest)
			}
		})
	}
}

func proxyV2TLV() []byte {
	b := proxyV2(netip.MustParseAddrPort("127.0.0.79:40002"), netip.MustParseAddrPort("127.0.0.1:25"))
	b[15] += 7 // a 7-byte TLV follows the addresses
	return append(b, 0x04, 0x00, 0x04, 'n', 'o', 'o', 'p')
}

func TestXtext(t *testing.T) {
	for _, s := range []string{"", "plain", "a b+c=d", "é\x00\r\n[UNAVAILABLE]"} {
		enc := xtextEncode(s)
		if strings.ContainsAny(enc, " =\r\n") {
			t.Errorf("encoding of %q has raw specials: %q", s, enc)
		}
		dec, err := xtextDecode(enc)
		if err != nil || dec != s {
			t.Errorf("round trip of %q: %q, %v", s, dec, err)
		}
	}
	for _, bad := range []string{"+", "+4", "+zz", "+4a", "a=b"} {
		if _, err := xtextDecode(bad); err == nil {
			t.Errorf("xtext %q accepted", bad)
		}
	}
}

func TestParsePath(t *testing.T) {
	tests := []struct {
		in, addr string
		params   []string
		err      bool
	}{
		{"<a@b.example>", "a@b.example", nil, false},
		{"<> SIZE=10 BODY=8BITMIME", "", []string{"SIZE=10", "BODY=8BITMIME"}, false},
		{` <"odd > local"@b.example> X=1`, `"odd > local"@b.example`, []string{"X=1"}, false},
		{"a@b.example SIZE=1", "a@b.example", []string{"SIZE=1"}, false},
		{"<a@b.example", "", nil, true},
		{"<a@b.example>junk", "", nil, true},
		{"<a\x01@b.example>", "", nil, true},
	}
	for _, tc := range tests {
		addr, params, err := parsePath(tc.in)
		if tc.err {
			if err == nil {
				t.Errorf("%q accepted as %q", tc.in, addr)
			}
			continue
		}
		if err != nil || addr != tc.addr || strings.Join(params, "|") != strings.Join(tc.params, "|") {
			t.Errorf("%q: got %q %q %v", tc.in, addr, params, err)
		}
	}
}

func readData(t *testing.T, in string) (string, string) {
	t.Helper()
	br := bufio.NewReaderSize(strings.NewReader(in), 16)
	dr := newDataReader(br)
	var out bytes.Buffer
	for {
		b, err := dr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading %q: %v", in, err)
		}
		out.Write(b)
	}
	rest, _ := io.ReadAll(br)
	return out.String(), string(rest)
}

func TestDataReader(t *testing.T) {
	tests := []struct{ in, out, rest string }{
		{".\r\nQUIT\r\n", "", "QUIT\r\n"},
		{"a\r\n..b\r\n.\r\n", "a\r\n.b\r\n", ""},
		{"bare\nlf\r\n.\r\n", "bare\r\nlf\r\n", ""},
		// After a bare LF, ".\r\n" is content: CRLF "." CRLF alone ends the data.
		{"x\n.\r\ny\r\n.\r\n", "x\r\n.\r\ny\r\n", ""},
		{"x\r\n.\nMAIL\r\n.\r\n", "x\r\n\r\nMAIL\r\n", ""},
		{"\n\n\r\n.\r\n", "\r\n\r\n\r\n", ""},
		// A CRLF split across two reads is one line end, not a bare LF.
		{strings.Repeat("z", 15) + "\r\n.\r\n", strings.Repeat("z", 15) + "\r\n", ""},
		{strings.Repeat("y", 40) + "\r\n.\r\n", strings.Repeat("y", 40) + "\r\n", ""},
		// A bare CR becomes a space; no upstream can take it for a line end.
		{"a\rb\r\n.\r\n", "a b\r\n", ""},
		{"x\r.\r\n\r\r\n.\r\n", "x .\r\n \r\n", ""},
		{strings.Repeat("z", 15) + "\ry\r\n.\r\n", strings.Repeat("z", 15) + " y\r\n", ""},
		{strings.Repeat("z", 15) + "\r\r\n.\r\n", strings.Repeat("z", 15) + " \r\n", ""},
	}
	for _, tc := range tests {
		out, rest := readData(t, tc.in)
		if out != tc.out || rest != tc.rest {
			t.Errorf("%q: got %q rest %q; want %q rest %q", tc.in, out, rest, tc.out, tc.rest)
		}
	}
	dr := newDataReader(bufio.NewReader(strings.NewReader("no end\r\n")))
	dr.next()
	if _, err := dr.next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("data without its end: %v", err)
	}
}

func parseHeaders(t *testing.T, msg string) (*headerParser, string) {
	t.Helper()
	hp := &headerParser{}
	var body strings.Builder
	for _, line := range strings.SplitAfter(msg, "\r\n") {
		if line == "" {
			continue
		}
		if hp.done {
			body.WriteString(line)
			continue
		}
		rest, err := hp.feed([]byte(line))
		if err != nil {
			t.Fatal(err)
		}
		body.Write(rest)
	}
	if !hp.done {
		hp.finish()
	}
	return hp, body.String()
}

func TestHeaderParserAndEdits(t *testing.T) {
	msg := "Received: from a\r\n\tby b\r\n" +
		"Authentication-Results: mw.test.example; spf=pass\r\n" +
		"Subject:  two spaces\r\n" +
		"Authentication-Results: other.example; dkim=pass\r\n" +
		"X-Score: 1\r\n" +
		"Authentication-Results: mw.test.example; dkim=pass\r\n" +
		"\r\nbody\r\n"
	hp, body := parseHeaders(t, msg)
	if !hp.blank || body != "body\r\n" || len(hp.headers) != 6 {
		t.Fatalf("parsed %d headers, blank=%v, body %q", len(hp.headers), hp.blank, body)
	}
	if _, v := hp.headers[0].split(); v != " from a\r\n\tby b" {
		t.Errorf("folded value %q", v)
	}
	if _, v := hp.headers[2].split(); v != "  two spaces" {
		t.Errorf("value %q; want both spaces kept", v)
	}
	v := policy.Verdict{
		Headers: []policy.HeaderEdit{
			{Name: "Authentication-Results", Value: "mw.test.example;\r\n\tspf=none", Prepend: true},
			{Name: "X-Score", Value: "5.0", Replace: true},
			{Name: "X-Added", Value: "line one\nline two\r\n\r\n"},
			{Name: "Bad Name", Value: "dropped"},
		},
		Remove: []policy.HeaderRef{{Name: "Authentication-Results", Index: 1}, {Name: "authentication-results", Index: 3}},
	}
	var out bytes.Buffer
	e := planEdits(hp.headers, v, []policy.HeaderEdit{{Name: "Received", Value: "from c by d"}})
	if err := e.write(&out, hp.headers, hp.blank, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	want := "Received: from c by d\r\n" +
		"Authentication-Results: mw.test.example;\r\n\tspf=none\r\n" +
		"Received: from a\r\n\tby b\r\n" +
		"Subject:  two spaces\r\n" +
		"Authentication-Results: other.example; dkim=pass\r\n" +
		"X-Score: 5.0\r\n" +
		"X-Added: line one\r\n\tline two\r\n" +
		"\r\nbody\r\n"
	if out.String() != want {
		t.Errorf("edited message:\n%q\nwant:\n%q", out.String(), want)
	}
}

func TestHeaderParserOddStarts(t *testing.T) {
	// No blank line: the body starts at the first line that is no header.
	hp, body := parseHeaders(t, "Subject: x\r\nnot a header line\r\nmore\r\n")
	if hp.blank || len(hp.headers) != 1 || body != "not a header line\r\nmore\r\n" {
		t.Fatalf("headers %d blank %v body %q", len(hp.headers), hp.blank, body)
	}
	hp, body = parseHeaders(t, "Subject: only headers\r\n")
	if len(hp.headers) != 1 || body != "" {
		t.Fatalf("headers %d body %q", len(hp.headers), body)
	}
	hp, _ = parseHeaders(t, "Obsolete : form\r\n\r\n")
	if len(hp.headers) != 1 || hp.headers[0].name != "Obsolete" {
		t.Fatalf("obsolete header: %+v", hp.headers)
	}
	// The engine gets the field as written, for DKIM's "simple" form.
	if name, v := hp.headers[0].split(); name != "Obsolete " || v != " form" {
		t.Fatalf("obsolete header split as %q %q", name, v)
	}
	big := &headerParser{}
	line := []byte("X-Big: " + strings.Repeat("a", 1000) + "\r\n")
	var err error
	for i := 0; i < 2000 && err == nil; i++ {
		_, err = big.feed(line)
	}
	if !errors.Is(err, errHeaderTooLarge) {
		t.Fatalf("a 2 MB header block: %v", err)
	}
}

func TestCapsAndOffer(t *testing.T) {
	r := reply{code: 250, text: []string{"mx.example", "PIPELINING", "SIZE 10240000", "8BITMIME", "CHUNKING",
		"ENHANCEDSTATUSCODES", "XCLIENT NAME ADDR PROTO HELO LOGIN", "XFORWARD NAME ADDR"}}
	c := parseEHLO(r)
	if !c.eightBit || !c.enhanced || c.smtpUTF8 || c.size != 10240000 || !c.xclient["LOGIN"] || !c.xforward["ADDR"] {
		t.Fatalf("parsed %+v", c)
	}
	if got := maxSize(50<<20, c); got != 10240000-sizeHeadroom {
		t.Errorf("max size %d", got)
	}
	if got := maxSize(1000, c); got != 1000 {
		t.Errorf("max size %d", got)
	}
	got := strings.Join(offer(c, 1000, true, false, nil), ",")
	if got != "PIPELINING,SIZE 1000,8BITMIME,ENHANCEDSTATUSCODES,STARTTLS" {
		t.Errorf("offer %s", got)
	}
	if got := strings.Join(offer(caps{}, 0, false, true, nil), ","); got != "PIPELINING,SIZE,XCLIENT ADDR NAME HELO PROTO LOGIN PORT" {
		t.Errorf("offer with upstream unknown: %s", got)
	}
}

func TestXclientLine(t *testing.T) {
	ci := &clientInfo{ip: netip.MustParseAddr("2001:db8::7"), port: 4000, helo: "h h", esmtp: true, login: "u"}
	got := xclientLine(ci, attrSet([]string{"NAME", "ADDR", "HELO", "PROTO"}))
	if got != "XCLIENT NAME=[UNAVAILABLE] ADDR=IPV6:2001:db8::7 PROTO=ESMTP HELO=h+20h" {
		t.Errorf("got %q", got)
	}
}

func TestConfigProblems(t *testing.T) {
	c := Config{
		Listen: "nope", Upstream: "", UpstreamTLS: "maybe", TrustedNetworks: []string{"10.0.0.0/8", "bogus"},
		TLSCert: "x.pem", Quarantine: "hold", QuarantineHeader: "Bad Header", MaxRecipients: -1,
	}
	keys := map[string]bool{}
	for _, p := range c.Problems() {
		keys[p.Key] = true
	}
	for _, k := range []string{"listen", "upstream", "upstream_tls", "trusted_networks", "tls_cert", "quarantine", "quarantine_header", "max_recipients"} {
		if !keys[k] {
			t.Errorf("no problem reported for %s", k)
		}
	}
	if err := (Config{Upstream: "127.0.0.1:25"}).Validate(); err != nil {
		t.Errorf("minimal config: %v", err)
	}
	if _, err := New(nil, Config{Upstream: "127.0.0.1:25"}, nil); err == nil {
		t.Error("New without an engine succeeded")
	}
}

func TestDotWriterRoundTrip(t *testing.T) {
	for _, content := range []string{
		"",
		"plain\r\n",
		".\r\n..\r\n.x\r\nx.\r\n",
		"no final line end",
		".",
		"a\r\n.\r\nb\r\n",
	} {
		var buf bytes.Buffer
		bw := bufio.NewWriter(&buf)
		dw := newDotWriter(bw)
		// Written in pieces, so that line starts fall on write boundaries.
		for i := 0; i < len(content); i += 2 {
			dw.Write([]byte(content[i:min(i+2, len(content))]))
		}
		dw.Close()
		bw.Flush()
		wire := buf.String()
		if !strings.HasSuffix(wire, "\r\n.\r\n") && wire != ".\r\n" {
			t.Errorf("%q: data %q not ended by CRLF . CRLF", content, wire)
		}
		got, rest := readData(t, wire)
		want := content
		if want != "" && !strings.HasSuffix(want, "\r\n") {
			want += "\r\n"
		}
		if got != want || rest != "" {
			t.Errorf("%q: read back %q (rest %q) from %q", content, got, rest, wire)
		}
	}
}

func TestValidUser(t *testing.T) {
	for u, want := range map[string]bool{
		"alice": true, "alice@example.com": true, "jürgen": true, "a b": true,
		"": false, "a\x00b": false, "a\rb": false, "a\x7fb": false, "a\u0085b": false, "a\u202eb": false,
	} {
		if validUser(u) != want {
			t.Errorf("validUser(%q) = %v, want %v", u, !want, want)
		}
	}
}
