package smtp

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
)

func FuzzProxyHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.1 198.51.100.2 40000 25\r\n"))
	f.Add([]byte("PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\nEHLO x\r\n"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(proxyV2(netip.MustParseAddrPort("127.0.0.79:40002"), netip.MustParseAddrPort("127.0.0.1:25")))
	f.Add(proxyV2TLV())
	f.Add(append(append([]byte(nil), proxyV2Sig...), 0x21, 0x21, 0, 36))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := readProxyHeader(bufio.NewReader(bytes.NewReader(data)))
		if err != nil || h.Local {
			return
		}
		if !h.Src.IsValid() || !h.Dst.IsValid() {
			t.Fatalf("accepted a header without addresses: %+v", h)
		}
		// What was read must survive a round trip through the v1 form.
		proto := "TCP6"
		if h.Src.Addr().Is4() {
			proto = "TCP4"
		}
		line := fmt.Sprintf("PROXY %s %s %s %d %d\r\n", proto, h.Src.Addr(), h.Dst.Addr(), h.Src.Port(), h.Dst.Port())
		h2, err := readProxyHeader(bufio.NewReader(strings.NewReader(line)))
		if err != nil {
			t.Fatalf("%q from %q: %v", line, data, err)
		}
		if h2 != h {
			t.Fatalf("round trip changed %+v into %+v", h, h2)
		}
	})
}

var replyLine = regexp.MustCompile(`^[2-5][0-9][0-9][ -][^\r\n]*$`)

// FuzzSession feeds SMTP commands and message data into the proxy,
// relaying to a real SMTP server. Whatever comes in, the proxy must
// answer with well-formed replies and close cleanly, never panic.
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"EHLO a.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n",
		"EHLO a\r\nMAIL FROM:<> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<refused@d>\r\nRCPT TO:<x@d>\r\nDATA\r\n..\r\nx\n.\n.\r\nRSET\r\n",
		"HELO a\r\nMAIL FROM:a@b\r\nRCPT TO:<x@y> NOTIFY=NEVER\r\nDATA\r\nSubject: reject at data\r\n\r\n.\r\n",
		"EHLO a\r\nXCLIENT ADDR=127.0.0.66 NAME=x\r\nEHLO b\r\nMAIL FROM:<a@b>\r\n",
		"EHLO a\r\nXCLIENT ADDR=IPV6:::1 HELO=h PROTO=SMTP LOGIN=u+20v\r\nMAIL FROM:<a@b>\r\nRCPT TO:<b@c>\r\nDATA\r\nNot a header\r\n.\r\n",
		"PROXY TCP4 127.0.0.5 127.0.0.1 1 25\r\nEHLO a\r\nSTARTTLS\r\nBDAT 1 LAST\r\nx",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<b@c>\r\nDATA\r\nSubject: discard me\r\n\r\nx\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<b@c>\r\nDATA\r\nSubject: quarantine me\r\n\r\n.\r\n",
		"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\x7f\x00\x00\x09\x7f\x00\x00\x01\x9c\x40\x00\x19EHLO a\r\n",
		"GET / HTTP/1.1\r\n",
	} {
		f.Add([]byte(s))
	}
	sink := testenv.StartSink(f)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng := policy.NewEngine(policy.Settings{Hostname: authservID}, nil, testRules(), log)
	servers := make([]*Server, 2)
	for i := range servers {
		cfg := Config{Upstream: sink.Addr(), Hostname: "proxy.test.example", MaxMessageSize: 2048, MaxRecipients: 3,
			TrustedNetworks: []string{"127.0.0.0/8"}, ProxyProtocol: i == 1}
		srv, err := New(eng, cfg, log)
		if err != nil {
			f.Fatal(err)
		}
		servers[i] = srv
		f.Cleanup(func() { srv.Shutdown(context.Background()) })
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		srv := servers[0]
		if bytes.HasPrefix(data, []byte("PROXY")) || bytes.HasPrefix(data, proxyV2Sig) {
			srv = servers[1]
		}
		c := &memConn{in: bytes.NewReader(data), closed: make(chan struct{})}
		srv.accept(c, false)
		<-c.closed // the session has written all it will
		out := c.out.String()
		if out == "" {
			if srv == servers[1] {
				return // a bad PROXY header closes the connection unanswered
			}
			t.Fatal("no greeting")
		}
		if !strings.HasSuffix(out, "\r\n") {
			t.Fatalf("output ends mid-line: %q", out)
		}
		for _, line := range strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n") {
			if !replyLine.MatchString(line) {
				t.Fatalf("malformed reply line %q in:\n%s", line, out)
			}
		}
	})
}

// FuzzSASLUser: whatever a client sends, the user read from it is empty
// or fit for logs, rules and XCLIENT LOGIN.
func FuzzSASLUser(f *testing.F) {
	for _, seed := range []struct{ mech, resp string }{
		{"PLAIN", "AGFsaWNlAHB3"}, {"PLAIN", "Ym9iAGFsaWNlAHB3"}, {"LOGIN", "YWxpY2U="},
		{"CRAM-MD5", "YWxpY2UgMDEyMw=="}, {"SCRAM-SHA-256", "bixhPWJvc3Msbj1hbGljZSxyPWFiYw=="}, {"LOGIN", "!"},
	} {
		f.Add(seed.mech, seed.resp)
	}
	f.Fuzz(func(t *testing.T, mech, resp string) {
		u := saslUser(mech, []string{resp})
		if u != "" && !validUser(u) {
			t.Fatalf("%s %q gave unfit user %q", mech, resp, u)
		}
		if strings.ContainsAny(u, "\r\n\x00") {
			t.Fatalf("user with a control character: %q", u)
		}
	})
}
