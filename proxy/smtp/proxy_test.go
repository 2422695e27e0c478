package smtp

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
)

// send delivers one message with go-smtp's client and returns the error
// of the first step that failed.
func send(t *testing.T, c *gosmtp.Client, from string, to []string, msg string) error {
	t.Helper()
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		return err
	}
	return w.Close()
}

func dialClient(t *testing.T, from, addr string) *gosmtp.Client {
	t.Helper()
	c := gosmtp.NewClient(dialFrom(t, from, addr))
	if err := c.Hello("client.test.example"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	return c
}

func smtpCode(err error) int {
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestRelayAddsHeadersAndReceivedWithoutXCLIENT(t *testing.T) {
	sink := testenv.StartSink(t)
	_, addr := startProxy(t, Config{Upstream: sink.Addr()})
	c := dialClient(t, "127.0.0.9", addr)
	body := message("hello",
		"Authentication-Results: "+authservID+"; dkim=pass header.d=bank.example",
		"Authentication-Results: other.example; spf=pass smtp.mailfrom=sender.example")
	if err := send(t, c, "alice@sender.example", []string{"bob@rcpt.example"}, body); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	msgs, err := sink.Wait(1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	h := m.Header()
	// The sink offers neither XCLIENT nor XFORWARD: our Received header
	// carries the client, on top.
	if !strings.HasPrefix(h, "Received: from client.test.example (unknown [127.0.0.9])\r\n\tby proxy.test.example (mailward) with ESMTP id ") {
		t.Errorf("no Received header of ours on top:\n%s", h)
	}
	if !strings.Contains(h, "for <bob@rcpt.example>;") {
		t.Errorf("Received header lacks the recipient:\n%s", h)
	}
	if strings.Contains(h, "header.d=bank.example") {
		t.Errorf("forged Authentication-Results with our authserv-id reached upstream:\n%s", h)
	}
	for _, want := range []string{
		"Authentication-Results: other.example; spf=pass",
		"Authentication-Results: " + authservID,
		"X-Mailward-Test: client=127.0.0.9 helo=client.test.example rcpts=bob@rcpt.example tls= login=",
		"Subject: hello\r\n",
	} {
		if !strings.Contains(h, want) {
			t.Errorf("header block lacks %q:\n%s", want, h)
		}
	}
	if ours, theirs := strings.Index(h, "Authentication-Results: "+authservID), strings.Index(h, "From: Alice"); ours > theirs {
		t.Errorf("our Authentication-Results is not above the message's headers:\n%s", h)
	}
	if !strings.HasSuffix(string(m.Data), "\r\n\r\nHello Bob.\r\n") {
		t.Errorf("body changed: %q", m.Data)
	}
	if m.From != "alice@sender.example" || strings.Join(m.To, ",") != "bob@rcpt.example" {
		t.Errorf("envelope = %s -> %v", m.From, m.To)
	}
}

func TestEngineRefusalsNeverReachUpstream(t *testing.T) {
	sink := testenv.StartSink(t)
	_, addr := startProxy(t, Config{Upstream: sink.Addr()})
	c := dialClient(t, "", addr)
	defer c.Close()

	err := c.Mail("spammer@bad.example", nil)
	if smtpCode(err) != 550 || !strings.Contains(err.Error(), "Sender spammer@bad.example refused") {
		t.Fatalf("MAIL from a refused sender: %v", err)
	}
	if err := c.Mail("alice@sender.example", nil); err != nil {
		t.Fatal(err)
	}
	for rcpt, code := range map[string]int{"refused@rcpt.example": 550, "later@rcpt.example": 450} {
		if err := c.Rcpt(rcpt, nil); smtpCode(err) != code {
			t.Fatalf("RCPT %s: want %d, got %v", rcpt, code, err)
		}
	}
	if err := c.Rcpt("bob@rcpt.example", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(message("two refused")))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Refused at the end of headers: the client hears the rule's reply.
	err = send(t, c, "alice@sender.example", []string{"bob@rcpt.example"}, message("reject at data"))
	if smtpCode(err) != 550 || !strings.Contains(err.Error(), "Content refused") {
		t.Fatalf("message refused at end of headers: %v", err)
	}
	c.Quit()
	msgs, err := sink.Wait(1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if msgs = sink.Messages(); len(msgs) != 1 {
		t.Fatalf("sink has %d messages, want only the accepted one", len(msgs))
	}
	if got := strings.Join(msgs[0].To, ","); got != "bob@rcpt.example" {
		t.Fatalf("upstream saw recipients %s", got)
	}
	if !strings.Contains(msgs[0].Header(), "rcpts=bob@rcpt.example ") {
		t.Errorf("end-of-message rules saw other recipients:\n%s", msgs[0].Header())
	}
}

func TestConnectReject(t *testing.T) {
	sink := testenv.StartSink(t)
	_, addr := startProxy(t, Config{Upstream: sink.Addr()})
	rc := newRawClient(t, dialFrom(t, "127.0.0.66", addr))
	r := rc.expect(554)
	if !strings.Contains(r.String(), "5.7.1") || !strings.Contains(r.String(), "Client blocked") {
		t.Fatalf("greeting %s", r)
	}
	rc.send("EHLO x.example\r\n")
	rc.expect(503)
	rc.send("QUIT\r\n")
	rc.expect(221)
}

func TestDiscardAndQuarantine(t *testing.T) {
	for _, mode := range []string{"header", "tempfail", "reject"} {
		t.Run(mode, func(t *testing.T) {
			sink := testenv.StartSink(t)
			_, addr := startProxy(t, Config{Upstream: sink.Addr(), Quarantine: mode})
			c := dialClient(t, "", addr)
			defer c.Close()
			if err := send(t, c, "alice@sender.example", []string{"bob@rcpt.example"}, message("discard me")); err != nil {
				t.Fatalf("a discarded message must look delivered: %v", err)
			}
			err := send(t, c, "alice@sender.example", []string{"bob@rcpt.example"}, message("quarantine me"))
			switch mode {
			case "header":
				if err != nil {
					t.Fatal(err)
				}
				msgs, err := sink.Wait(1, 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(msgs[0].Header(), DefaultQuarantineHeader+": looks odd\r\n") {
					t.Fatalf("quarantined message lacks the header:\n%s", msgs[0].Header())
				}
			case "tempfail":
				if smtpCode(err) != 451 {
					t.Fatalf("want 451, got %v", err)
				}
			case "reject":
				if smtpCode(err) != 550 {
					t.Fatalf("want 550, got %v", err)
				}
			}
			c.Quit()
			time.Sleep(200 * time.Millisecond)
			for _, m := range sink.Messages() {
				if strings.Contains(m.Header(), "Subject: discard me") {
					t.Fatal("a discarded message reached upstream")
				}
				if mode != "header" {
					t.Fatal("a quarantined message reached upstream")
				}
			}
		})
	}
}

func TestUpstreamDown(t *testing.T) {
	port := testenv.FreePort(t)
	_, addr := startProxy(t, Config{Upstream: fmt.Sprintf("127.0.0.1:%d", port)})
	c := dialClient(t, "", addr)
	defer c.Close()
	err := c.Mail("alice@sender.example", nil)
	if smtpCode(err) != 451 {
		t.Fatalf("with upstream down MAIL got %v; want 451", err)
	}
	if err := c.Noop(); err != nil {
		t.Fatalf("the session must go on after 451: %v", err)
	}
}

func TestUpstreamLostMidTransaction(t *testing.T) {
	sink := testenv.StartSink(t)
	cab := startCable(t, sink.Addr())
	_, addr := startProxy(t, Config{Upstream: cab.addr()})
	c := dialClient(t, "", addr)
	defer c.Close()
	if err := c.Mail("alice@sender.example", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("bob@rcpt.example", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(message("lost")))
	cab.cut()
	err = w.Close()
	if smtpCode(err) != 451 {
		t.Fatalf("upstream lost during the message: client got %v; want 451", err)
	}
	if n := len(sink.Messages()); n != 0 {
		t.Fatalf("sink has %d messages", n)
	}
	// The next message opens a new upstream session.
	if err := send(t, c, "alice@sender.example", []string{"bob@rcpt.example"}, message("after")); err != nil {
		t.Fatalf("after reconnecting: %v", err)
	}
}

func TestIdleUpstreamSessionReplaced(t *testing.T) {
	sink := testenv.StartSink(t)
	cab := startCable(t, sink.Addr())
	_, addr := startProxy(t, Config{Upstream: cab.addr()})
	c := dialClient(t, "", addr)
	defer c.Close()
	if err := send(t, c, "alice@sender.example", []string{"bob@rcpt.example"}, message("first")); err != nil {
		t.Fatal(err)
	}
	// Upstream drops the idle session between two messages, as an MTA's
	// idle timeout does; the next message must not suffer for it.
	cab.cut()
	if err := send(t, c, "alice@sender.example", []string{"bob@rcpt.example"}, message("second")); err != nil {
		t.Fatalf("message after upstream dropped the idle session: %v", err)
	}
	if _, err := sink.Wait(2, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestEHLOOffersOnlyWhatUpstreamTakes(t *testing.T) {
	sink := testenv.StartSink(t)
	_, addr := startProxy(t, Config{Upstream: sink.Addr(), MaxMessageSize: 1 << 20})
	rc := newRawClient(t, dialFrom(t, "", addr))
	rc.expect(220)
	rc.send("EHLO client.test.example\r\n")
	r := rc.expect(250)
	got := strings.Join(r.text, "\n")
	// The sink (go-smtp) offers 8BITMIME, ENHANCEDSTATUSCODES and CHUNKING,
	// and no SMTPUTF8 or DSN.
	for _, want := range []string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SIZE 1048576"} {
		if !strings.Contains(got, want) {
			t.Errorf("EHLO lacks %s:\n%s", want, got)
		}
	}
	for _, not := range []string{"CHUNKING", "SMTPUTF8", "DSN", "STARTTLS", "XCLIENT", "AUTH"} {
		if strings.Contains(got, not) {
			t.Errorf("EHLO offers %s:\n%s", not, got)
		}
	}
	rc.send("MAIL FROM:<a@sender.example> SMTPUTF8\r\n")
	rc.expect(555)
	rc.send("BDAT 10 LAST\r\n")
	rc.expect(502)
	rc.send("MAIL FROM:<a@sender.example> BODY=8BITMIME SIZE=2000000\r\n")
	rc.expect(552)
	rc.send("MAIL FROM:<a@sender.example> BODY=8BITMIME SIZE=2000\r\n")
	rc.expect(250)
}

func TestSizeLimitDuringData(t *testing.T) {
	sink := testenv.StartSink(t)
	_, addr := startProxy(t, Config{Upstream: sink.Addr(), MaxMessageSize: 4096})
	c := dialClient(t, "", addr)
	defer c.Close()
	big := message("big") + strings.Repeat("x", 100) + "\r\n"
	big += strings.Repeat(strings.Repeat("y", 70)+"\r\n", 100)
	err := send(t, c, "alice@sender.example", []string{"bob@rcpt.example"}, big)
	if smtpCode(err) != 552 {
		t.Fatalf("oversized message: %v; want 552", err)
	}
	if err := send(t, c, "alice@sender.example", []string{"bob@rcpt.example"}, message("small")); err != nil {
		t.Fatalf("a small message after a refused one: %v", err)
	}
	msgs, _ := sink.Wait(1, 5*time.Second)
	if len(msgs) != 1 || !strings.Contains(msgs[0].Header(), "Subject: small") {
		t.Fatalf("sink got %d messages", len(msgs))
	}
}

func TestMaxRecipients(t *testing.T) {
	sink := testenv.StartSink(t)
	_, addr := startProxy(t, Config{Upstream: sink.Addr(), MaxRecipients: 2})
	c := dialClient(t, "", addr)
	defer c.Close()
	if err := c.Mail("alice@sender.example", nil); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		if err := c.Rcpt(fmt.Sprintf("r%d@rcpt.example", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	err := c.Rcpt("r3@rcpt.example", nil)
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) || se.Code != 452 || se.EnhancedCode != (gosmtp.EnhancedCode{4, 5, 3}) {
		t.Fatalf("third recipient: %v; want 452 4.5.3", err)
	}
}

func TestConnectionLimits(t *testing.T) {
	sink := testenv.StartSink(t)
	t.Run("per-ip", func(t *testing.T) {
		_, addr := startProxy(t, Config{Upstream: sink.Addr(), MaxConnectionsPerIP: 1})
		first := newRawClient(t, dialFrom(t, "127.0.0.21", addr))
		first.expect(220)
		second := newRawClient(t, dialFrom(t, "127.0.0.21", addr))
		if r := second.expect(421); !strings.Contains(r.String(), "4.7.0") {
			t.Fatalf("second connection: %s", r)
		}
		other := newRawClient(t, dialFrom(t, "127.0.0.22", addr))
		other.expect(220)
		// The count goes down when a client leaves.
		first.send("QUIT\r\n")
		first.expect(221)
		first.closed()
		waitFor(t, func() bool {
			rc := newRawClient(t, dialFrom(t, "127.0.0.21", addr))
			r, err := rc.read()
			return err == nil && r.code == 220
		})
	})
	t.Run("total", func(t *testing.T) {
		_, addr := startProxy(t, Config{Upstream: sink.Addr(), MaxConnections: 1})
		first := newRawClient(t, dialFrom(t, "127.0.0.23", addr))
		first.expect(220)
		second := newRawClient(t, dialFrom(t, "127.0.0.24", addr))
		second.expect(421)
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCommandTimeout(t *testing.T) {
	sink := testenv.StartSink(t)
	_, addr := startProxy(t, Config{Upstream: sink.Addr(), CommandTimeout: 300 * time.Millisecond})
	rc := newRawClient(t, dialFrom(t, "", addr))
	rc.expect(220)
	if r := rc.expect(421); !strings.Contains(r.String(), "4.4.2") {
		t.Fatalf("idle client: %s", r)
	}
	if !rc.closed() {
		t.Fatal("connection still open after the timeout")
	}
}

// A client that trickles a command or a message a byte at a time is cut
// off when the command or the whole message is not in within its
// timeout, however steadily the bytes come.
func TestSlowClientCutOff(t *testing.T) {
	sink := testenv.StartSink(t)
	_, addr := startProxy(t, Config{Upstream: sink.Addr(), CommandTimeout: 600 * time.Millisecond, DataTimeout: 800 * time.Millisecond})
	trickle := func(rc *rawClient, s string, stop <-chan struct{}) {
		for i := 0; i < len(s); i++ {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if _, err := rc.c.Write([]byte{s[i]}); err != nil {
				return
			}
		}
	}

	rc := newRawClient(t, dialFrom(t, "", addr))
	rc.expect(220)
	stop := make(chan struct{})
	start := time.Now()
	go trickle(rc, "EHLO a-very-slow-client.example\r\n", stop)
	r := rc.expect(421)
	close(stop)
	if took := time.Since(start); !strings.Contains(r.String(), "4.4.2") || took > 2*time.Second {
		t.Fatalf("slow command: %s after %s; want 421 4.4.2 within about 600ms", r, took)
	}

	rc = newRawClient(t, dialFrom(t, "", addr))
	rc.expect(220)
	rc.send("EHLO c.example\r\n")
	rc.expect(250)
	rc.send("MAIL FROM:<alice@sender.example>\r\n")
	rc.expect(250)
	rc.send("RCPT TO:<bob@rcpt.example>\r\n")
	rc.expect(250)
	rc.send("DATA\r\n")
	rc.expect(354)
	stop = make(chan struct{})
	start = time.Now()
	go trickle(rc, strings.Repeat("x", 200)+"\r\n.\r\n", stop)
	r = rc.expect(421)
	close(stop)
	if took := time.Since(start); took > 2500*time.Millisecond {
		t.Fatalf("slow message: %s after %s; want 421 within about 800ms", r, took)
	}
	if n := len(sink.Messages()); n != 0 {
		t.Fatalf("%d messages relayed from a client cut off", n)
	}
}

func TestPipelining(t *testing.T) {
	sink := testenv.StartSink(t)
	_, addr := startProxy(t, Config{Upstream: sink.Addr()})
	rc := newRawClient(t, dialFrom(t, "", addr))
	rc.expect(220)
	rc.send("EHLO client.test.example\r\n")
	rc.expect(250)
	// One write, as a pipelining client sends a group of commands.
	rc.send("MAIL FROM:<alice@sender.example>\r\nRCPT TO:<one@rcpt.example>\r\nRCPT TO:<refused@rcpt.example>\r\n" +
		"RCPT TO:<two@rcpt.example>\r\nDATA\r\n")
	for _, code := range []int{250, 250, 550, 250, 354} {
		rc.expect(code)
	}
	rc.send(message("pipelined") + ".\r\nQUIT\r\n")
	rc.expect(250)
	rc.expect(221)
	msgs, err := sink.Wait(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(msgs[0].To, ","); got != "one@rcpt.example,two@rcpt.example" {
		t.Fatalf("recipients %s", got)
	}
}

func TestDotStuffingAndSmuggling(t *testing.T) {
	sink := testenv.StartSink(t)
	_, addr := startProxy(t, Config{Upstream: sink.Addr()})
	rc := newRawClient(t, dialFrom(t, "", addr))
	rc.expect(220)
	rc.send("EHLO client.test.example\r\nMAIL FROM:<alice@sender.example>\r\nRCPT TO:<bob@rcpt.example>\r\nDATA\r\n")
	rc.expect(250)
	rc.expect(250)
	rc.expect(250)
	rc.expect(354)
	// A bare-LF "." line is content, not the end: no second message may
	// be smuggled in after it.
	rc.send("Subject: smuggle\r\n\r\n..leading dot\r\nbare lf\n.\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@rcpt.example>\r\nDATA\r\n" +
		"Subject: smuggled\r\n\r\nbad\r\n.\r\n")
	rc.expect(250)
	rc.send("QUIT\r\n")
	rc.expect(221)
	msgs, err := sink.Wait(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(sink.Messages()); n != 1 {
		t.Fatalf("sink has %d messages; want 1", n)
	}
	body := string(msgs[0].Data)
	if !strings.Contains(body, "\r\n\r\n.leading dot\r\nbare lf\r\n.\r\nMAIL FROM:<evil@x.example>\r\n") {
		t.Fatalf("body not carried as content:\n%q", body)
	}
}

func TestXCLIENTAndPROXYTrust(t *testing.T) {
	sink := testenv.StartSink(t)
	_, addr := startProxy(t, Config{Upstream: sink.Addr(), TrustedNetworks: []string{"127.0.0.5"}, ProxyProtocol: true})

	untrusted := newRawClient(t, dialFrom(t, "127.0.0.1", addr))
	untrusted.expect(220)
	untrusted.send("EHLO client.test.example\r\n")
	if r := untrusted.expect(250); strings.Contains(strings.Join(r.text, " "), "XCLIENT") {
		t.Error("XCLIENT offered to an untrusted client")
	}
	untrusted.send("XCLIENT ADDR=127.0.0.80 NAME=forged.example\r\n")
	untrusted.expect(550)

	spoof := newRawClient(t, dialFrom(t, "127.0.0.1", addr))
	spoof.send("PROXY TCP4 127.0.0.81 127.0.0.1 4000 25\r\n")
	spoof.expect(220)
	spoof.expect(550)
	if !spoof.closed() {
		t.Fatal("a PROXY header from an untrusted address left the connection open")
	}

	// A trusted proxy must send the header.
	bare := newRawClient(t, dialFrom(t, "127.0.0.5", addr))
	bare.send("EHLO client.test.example\r\n")
	if !bare.closed() {
		t.Fatal("a trusted peer without a PROXY header got a session")
	}

	v1 := newRawClient(t, dialFrom(t, "127.0.0.5", addr))
	v1.send("PROXY TCP4 127.0.0.78 127.0.0.1 40001 25\r\n")
	v1.expect(220)
	relay(t, v1, "via proxy v1")

	v2 := newRawClient(t, dialFrom(t, "127.0.0.5", addr))
	v2.send(string(proxyV2(netip.MustParseAddrPort("127.0.0.79:40002"), netip.MustParseAddrPort("127.0.0.1:25"))))
	v2.expect(220)
	relay(t, v2, "via proxy v2")

	xc := newRawClient(t, dialFrom(t, "127.0.0.5", addr))
	xc.send("PROXY TCP4 127.0.0.5 127.0.0.1 40003 25\r\n")
	xc.expect(220)
	xc.send("EHLO frontend.test.example\r\n")
	if r := xc.expect(250); !strings.Contains(strings.Join(r.text, " "), "XCLIENT") {
		t.Error("XCLIENT not offered to a trusted client")
	}
	xc.send("XCLIENT ADDR=127.0.0.77 NAME=client.example PROTO=ESMTP LOGIN=carol HELO=helo+20name\r\n")
	xc.expect(501) // the HELO attribute may not hold a space
	xc.send("XCLIENT ADDR=127.0.0.77 NAME=client.example PROTO=ESMTP LOGIN=carol\r\n")
	xc.expect(220)
	relay(t, xc, "via xclient")

	msgs, err := sink.Wait(3, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"via proxy v1": "(unknown [127.0.0.78])",
		"via proxy v2": "(unknown [127.0.0.79])",
		"via xclient":  "(client.example [127.0.0.77])",
	}
	for _, m := range msgs {
		h := m.Header()
		for subj, rcv := range want {
			if strings.Contains(h, "Subject: "+subj+"\r\n") && !strings.Contains(h, rcv) {
				t.Errorf("%s: Received header lacks %s:\n%s", subj, rcv, h)
			}
		}
		if strings.Contains(h, "Subject: via xclient") && !strings.Contains(h, "client=127.0.0.77 ") || strings.Contains(h, "Subject: via xclient") && !strings.Contains(h, "login=carol") {
			t.Errorf("engine did not see the XCLIENT identity:\n%s", h)
		}
	}
}

func relay(t *testing.T, rc *rawClient, subject string) {
	t.Helper()
	rc.send("EHLO client.test.example\r\n")
	rc.expect(250)
	rc.send("MAIL FROM:<alice@sender.example>\r\n")
	rc.expect(250)
	rc.send("RCPT TO:<bob@rcpt.example>\r\n")
	rc.expect(250)
	rc.send("DATA\r\n")
	rc.expect(354)
	rc.send(message(subject) + ".\r\n")
	rc.expect(250)
	rc.send("QUIT\r\n")
	rc.expect(221)
}

// proxyV2 encodes a PROXY protocol v2 header for a TCP over IPv4 connection.
func proxyV2(src, dst netip.AddrPort) []byte {
	b := append([]byte(nil), proxyV2Sig...)
	b = append(b, 0x21, 0x11, 0, 12)
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	b = append(b, s4[:]...)
	b = append(b, d4[:]...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	return b
}

func TestImplicitTLSAndReload(t *testing.T) {
	sink := testenv.StartSink(t)
	cert1 := testenv.SelfSignedCert(t, "proxy.test.example", "127.0.0.1")
	cert2 := testenv.SelfSignedCert(t, "proxy.test.example", "127.0.0.1")
	cfg := Config{Upstream: sink.Addr(), TLSCert: cert1.CertFile, TLSKey: cert1.KeyFile}
	eng := policy.NewEngine(policy.Settings{Hostname: authservID}, nil, testRules(), testLogger(t))
	srv, err := New(eng, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln)
	defer srv.Shutdown(context.Background())

	both := cert1.Pool.Clone()
	both.AppendCertsFromPEM(mustRead(t, cert2.CertFile))
	connect := func() *gosmtp.Client {
		c, err := gosmtp.DialTLS(ln.Addr().String(), &tls.Config{RootCAs: both, ServerName: "proxy.test.example"})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Hello("client.test.example"); err != nil {
			t.Fatal(err)
		}
		return c
	}
	serial := func(c *gosmtp.Client) string {
		st, ok := c.TLSConnectionState()
		if !ok {
			t.Fatal("no TLS")
		}
		return st.PeerCertificates[0].SerialNumber.String()
	}
	c := connect()
	if serial(c) != cert1.Serial.String() {
		t.Fatal("first certificate not served")
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered inside TLS")
	}
	if err := send(t, c, "alice@sender.example", []string{"bob@rcpt.example"}, message("over tls")); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	msgs, err := sink.Wait(1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if h := msgs[0].Header(); !strings.Contains(h, "tls=TLSv1.3") || !strings.Contains(h, "with ESMTPS id") {
		t.Errorf("TLS not seen by the engine or the Received header:\n%s", h)
	}

	bad := cfg
	bad.TLSKey = filepath.Join(t.TempDir(), "missing.pem")
	if err := srv.Reload(bad); err == nil {
		t.Fatal("a reload with a missing key succeeded")
	}
	if c := connect(); serial(c) != cert1.Serial.String() {
		t.Fatal("a failed reload changed the certificate")
	}
	cfg.TLSCert, cfg.TLSKey = cert2.CertFile, cert2.KeyFile
	if err := srv.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if c := connect(); serial(c) != cert2.Serial.String() {
		t.Fatal("reloaded certificate not served")
	}
}

func mustRead(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSTARTTLSToClient(t *testing.T) {
	sink := testenv.StartSink(t)
	cert := testenv.SelfSignedCert(t, "proxy.test.example")
	_, addr := startProxy(t, Config{Upstream: sink.Addr(), TLSCert: cert.CertFile, TLSKey: cert.KeyFile})

	// Commands pipelined after STARTTLS were sent in clear text: dropped.
	rc := newRawClient(t, dialFrom(t, "", addr))
	rc.expect(220)
	rc.send("EHLO client.test.example\r\n")
	if r := rc.expect(250); !strings.Contains(strings.Join(r.text, " "), "STARTTLS") {
		t.Fatal("STARTTLS not offered")
	}
	rc.send("STARTTLS\r\nMAIL FROM:<injected@x.example>\r\n")
	rc.expect(220)
	tc := tls.Client(rc.c, &tls.Config{RootCAs: cert.Pool, ServerName: "proxy.test.example"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	trc := newRawClient(t, tc)
	trc.send("MAIL FROM:<alice@sender.example>\r\n")
	trc.expect(503) // EHLO is needed again after STARTTLS, and nothing was injected
	trc.send("EHLO client.test.example\r\n")
	if r := trc.expect(250); strings.Contains(strings.Join(r.text, " "), "STARTTLS") {
		t.Fatal("STARTTLS offered twice")
	}
	trc.send("MAIL FROM:<alice@sender.example>\r\n")
	trc.expect(250)
}

func TestShutdown(t *testing.T) {
	sink := testenv.StartSink(t)
	srv, addr := startProxy(t, Config{Upstream: sink.Addr()})
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.ServeTLS(ln2) }()
	idle := newRawClient(t, dialFrom(t, "", addr))
	idle.expect(220)
	busy := dialClient(t, "", addr)
	if err := busy.Mail("alice@sender.example", nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	if r := idle.expect(421); !strings.Contains(r.String(), "4.3.2") {
		t.Fatalf("idle client at shutdown: %s", r)
	}
	// The transaction in flight finishes.
	if err := busy.Rcpt("bob@rcpt.example", nil); err != nil {
		t.Fatal(err)
	}
	w, err := busy.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(message("during shutdown")))
	if err := w.Close(); err != nil {
		t.Fatalf("message in flight at shutdown: %v", err)
	}
	if err := busy.Noop(); smtpCode(err) != 421 {
		t.Fatalf("after its transaction the client must hear 421, got %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-serveErr; err != nil {
		t.Fatalf("Serve after Shutdown returned %v; want nil", err)
	}
	ln3, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := srv.Serve(ln3); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve on a shut-down server: %v", err)
	}
	if _, err := sink.Wait(1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestListenAndServe(t *testing.T) {
	sink := testenv.StartSink(t)
	cert := testenv.SelfSignedCert(t, "proxy.test.example")
	// Two free ports found while both are held, so that they differ.
	l1, err1 := net.Listen("tcp", "127.0.0.1:0")
	l2, err2 := net.Listen("tcp", "127.0.0.1:0")
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	plain, implicit := l1.Addr().String(), l2.Addr().String()
	l1.Close()
	l2.Close()
	cfg := Config{Upstream: sink.Addr(), Hostname: "proxy.test.example", Listen: plain, ListenTLS: implicit,
		TLSCert: cert.CertFile, TLSKey: cert.KeyFile}
	eng := policy.NewEngine(policy.Settings{Hostname: authservID}, nil, testRules(), testLogger(t))
	srv, err := New(eng, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe() }()
	waitFor(t, func() bool {
		select {
		case err := <-done:
			t.Fatalf("ListenAndServe: %v", err)
		default:
		}
		c, err := net.Dial("tcp", plain)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	rc := newRawClient(t, dialFrom(t, "", plain))
	rc.expect(220)
	tc, err := tls.Dial("tcp", implicit, &tls.Config{RootCAs: cert.Pool, ServerName: "proxy.test.example"})
	if err != nil {
		t.Fatal(err)
	}
	trc := newRawClient(t, tc)
	trc.expect(220)
	trc.send("QUIT\r\n")
	trc.expect(221)
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("ListenAndServe after Shutdown: %v", err)
	}
	if _, err := New(eng, Config{Upstream: sink.Addr()}, nil); err != nil {
		t.Fatal(err)
	}
	none, _ := New(eng, Config{Upstream: sink.Addr()}, nil)
	if err := none.ListenAndServe(); err == nil {
		t.Fatal("ListenAndServe with no listen address succeeded")
	}
}
