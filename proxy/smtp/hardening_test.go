package smtp

import (
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/testenv"
)

// XCLIENT from a trusted front end still cannot put CR or LF (or any
// control character) into the client's name or login: they reach logs,
// Received headers, the rules and upstream's own XCLIENT.
func TestXCLIENTNameAndLoginValidated(t *testing.T) {
	for _, tc := range []struct {
		arg string
		ok  bool
	}{
		{"NAME=mail.example.com", true},
		{"NAME=mail_1.example.com.", true},
		{"NAME=[UNAVAILABLE]", true},
		{"NAME=evil.example+0D+0AX-Injected:+20yes", false},
		{"NAME=evil.example+0A", false},
		{"NAME=has+20space.example", false},
		{"NAME=" + strings.Repeat("a", 64) + ".example", false},
		{"NAME=a..example", false},
		{"LOGIN=alice", true},
		{"LOGIN=j%C3%BCrgen@example.de", true},
		{"LOGIN=j+C3+BCrgen", true},
		{"LOGIN=alice+0D+0ARCPT+20TO:<x@y>", false},
		{"LOGIN=alice+09", false},
		{"LOGIN=alice+7F", false},
		{"LOGIN=+FF+FE", false},
		{"LOGIN=[UNAVAILABLE]", true},
	} {
		ci, err := parseXclient(tc.arg, clientInfo{})
		if (err == nil) != tc.ok {
			t.Errorf("XCLIENT %s: err %v, want ok=%v", tc.arg, err, tc.ok)
		}
		if strings.ContainsAny(ci.name+ci.login, "\r\n\t\x7f") && err == nil {
			t.Errorf("XCLIENT %s: control characters kept: %q %q", tc.arg, ci.name, ci.login)
		}
	}

	sink := testenv.StartSink(t)
	_, addr := startProxy(t, Config{Upstream: sink.Addr(), TrustedNetworks: []string{"127.0.0.5"}})
	c := newRawClient(t, dialFrom(t, "127.0.0.5", addr))
	c.expect(220)
	c.send("XCLIENT ADDR=127.0.0.80 NAME=evil.example+0D+0AX-Injected:+20yes\r\n")
	c.expect(501)
	c.send("XCLIENT ADDR=127.0.0.80 LOGIN=alice+0D+0A\r\n")
	c.expect(501)
	c.send("XCLIENT ADDR=127.0.0.80 NAME=client.example LOGIN=alice\r\n")
	c.expect(220)
}

// Commands that move no mail end the session once over the budget:
// NOOPs, refused recipients, anything after a refused connection. A
// message relayed starts the count again.
func TestJunkCommandBudget(t *testing.T) {
	sink := testenv.StartSink(t)
	_, addr := startProxy(t, Config{Upstream: sink.Addr(), MaxJunkCommands: 5})
	budget := func(name string, c *rawClient, junk string, code int) {
		t.Helper()
		for i := range 5 {
			c.send(junk)
			if r := c.expect(code); r.code != code {
				t.Fatalf("%s: command %d: %s", name, i, r)
			}
		}
		c.send(junk)
		c.expect(421)
		if !c.closed() {
			t.Fatalf("%s: still open past the budget", name)
		}
	}

	noop := newRawClient(t, dialFrom(t, "127.0.0.9", addr))
	noop.expect(220)
	noop.send("EHLO client.test.example\r\n")
	noop.expect(250)
	budget("NOOP", noop, "NOOP\r\n", 250)

	rcpt := newRawClient(t, dialFrom(t, "127.0.0.9", addr))
	rcpt.expect(220)
	rcpt.send("EHLO client.test.example\r\nMAIL FROM:<a@sender.example>\r\n")
	rcpt.expect(250)
	rcpt.expect(250)
	budget("refused RCPT", rcpt, "RCPT TO:<refused@rcpt.example>\r\n", 550)

	refused := newRawClient(t, dialFrom(t, "127.0.0.66", addr))
	refused.expect(554)
	refused.send("EHLO client.test.example\r\n")
	refused.expect(503)
	for range 4 {
		refused.send("NOOP\r\n")
		refused.expect(250)
	}
	refused.send("NOOP\r\n")
	refused.expect(421)
	if !refused.closed() {
		t.Fatal("a refused connection stays open on NOOPs")
	}

	// Four NOOPs, a message, four more: the message reset the count.
	c := newRawClient(t, dialFrom(t, "127.0.0.9", addr))
	c.expect(220)
	c.send("EHLO client.test.example\r\n")
	c.expect(250)
	for range 2 {
		for range 4 {
			c.send("NOOP\r\n")
			c.expect(250)
		}
		c.send("MAIL FROM:<alice@sender.example>\r\nRCPT TO:<bob@rcpt.example>\r\nDATA\r\n")
		c.expect(250)
		c.expect(250)
		c.expect(354)
		c.send(message("counted") + ".\r\n")
		c.expect(250)
	}
	c.send("QUIT\r\n")
	c.expect(221)
}

// No command is taken past the session's lifetime, and an idle client
// is cut off then, whatever command_timeout says.
func TestSessionLifetime(t *testing.T) {
	sink := testenv.StartSink(t)
	_, addr := startProxy(t, Config{Upstream: sink.Addr(), MaxSessionTime: 500 * time.Millisecond, MaxJunkCommands: 1000})
	busy := newRawClient(t, dialFrom(t, "127.0.0.9", addr))
	busy.expect(220)
	start := time.Now()
	for {
		busy.send("NOOP\r\n")
		r, err := busy.read()
		if err != nil {
			t.Fatal(err)
		}
		if r.code == 421 {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatal("session still taking commands long past its lifetime")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if time.Since(start) < 500*time.Millisecond {
		t.Errorf("cut off after %v, before its lifetime", time.Since(start))
	}
	idle := newRawClient(t, dialFrom(t, "127.0.0.9", addr))
	idle.expect(220)
	if r, err := idle.read(); err != nil || r.code != 421 {
		t.Fatalf("idle past the lifetime: %v %v; want 421", r, err)
	}
}

// A PROXY header that names no client (v1 UNKNOWN, v2 LOCAL) leaves the
// session on the balancer's trusted address, but not with its rights.
func TestProxyHeaderWithoutClientIsUntrusted(t *testing.T) {
	sink := testenv.StartSink(t)
	_, addr := startProxy(t, Config{Upstream: sink.Addr(), TrustedNetworks: []string{"127.0.0.5"}, ProxyProtocol: true})
	v2local := append([]byte(nil), proxyV2Sig...)
	v2local = append(v2local, 0x20, 0x00, 0, 0)
	for name, header := range map[string]string{
		"v1 UNKNOWN": "PROXY UNKNOWN\r\n",
		"v2 LOCAL":   string(v2local),
	} {
		c := newRawClient(t, dialFrom(t, "127.0.0.5", addr))
		c.send(header)
		c.expect(220)
		c.send("EHLO frontend.test.example\r\n")
		if r := c.expect(250); strings.Contains(strings.Join(r.text, " "), "XCLIENT") {
			t.Errorf("%s: XCLIENT offered", name)
		}
		c.send("XCLIENT ADDR=127.0.0.80 LOGIN=alice\r\n")
		c.expect(550)
		c.send("QUIT\r\n")
		c.expect(221)
	}
}
