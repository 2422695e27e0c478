package dovecotauth

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/testenv"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

var info = Info{Service: "smtp", Remote: netip.MustParseAddrPort("127.0.0.9:40000"), Local: netip.MustParseAddrPort("127.0.0.1:587"), Secured: true}

func dial(t *testing.T, d *testenv.Dovecot) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, d.Socket(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestAgainstDovecot(t *testing.T) {
	d := testenv.StartDovecot(t, map[string]string{"alice": "s3cret", "bob": "pass word+=/é"})
	c := dial(t, d)
	names := map[string]bool{}
	for _, m := range c.Mechs() {
		names[m.Name] = true
	}
	if !names["PLAIN"] || !names["LOGIN"] || !names["CRAM-MD5"] {
		t.Fatalf("mechanisms %v", c.Mechs())
	}

	r, err := c.Auth("PLAIN", b64("\x00alice\x00s3cret"), info)
	if err != nil || r.Status != OK || r.User != "alice" {
		t.Fatalf("PLAIN: %+v %v", r, err)
	}
	// The same connection takes the next exchange.
	r, err = c.Auth("PLAIN", b64("\x00alice\x00wrong"), info)
	if err != nil || r.Status != Fail || r.Temp {
		t.Fatalf("wrong password: %+v %v", r, err)
	}

	// LOGIN: two challenges.
	r, err = c.Auth("LOGIN", "", info)
	if err != nil || r.Status != Continue {
		t.Fatalf("LOGIN: %+v %v", r, err)
	}
	r, err = c.Continue(b64("alice"))
	if err != nil || r.Status != Continue {
		t.Fatalf("LOGIN user: %+v %v", r, err)
	}
	r, err = c.Continue(b64("s3cret"))
	if err != nil || r.Status != OK || r.User != "alice" {
		t.Fatalf("LOGIN password: %+v %v", r, err)
	}

	// CRAM-MD5: the challenge is Dovecot's, the digest ours.
	r, err = c.Auth("CRAM-MD5", "", info)
	if err != nil || r.Status != Continue {
		t.Fatalf("CRAM-MD5: %+v %v", r, err)
	}
	ch, _ := base64.StdEncoding.DecodeString(r.Challenge)
	mac := hmac.New(md5.New, []byte("s3cret"))
	mac.Write(ch)
	r, err = c.Continue(b64("alice " + hex.EncodeToString(mac.Sum(nil))))
	if err != nil || r.Status != OK || r.User != "alice" {
		t.Fatalf("CRAM-MD5 response: %+v %v", r, err)
	}

	// A password with spaces and base64 characters travels inside base64.
	r, err = c.Auth("PLAIN", b64("\x00bob\x00pass word+=/é"), info)
	if err != nil || r.Status != OK || r.User != "bob" {
		t.Fatalf("bob: %+v %v", r, err)
	}
}

func TestNothingButBase64ReachesDovecot(t *testing.T) {
	d := testenv.StartDovecot(t, map[string]string{"alice": "s3cret"})
	c := dial(t, d)
	if _, err := c.Auth("PLAIN", b64("\x00alice\x00x")+"\tuser=alice", info); err == nil {
		t.Fatal("an initial response with a tab was sent")
	}
	if _, err := c.Auth("PLAIN\tX", "", info); err == nil {
		t.Fatal("a mechanism with a tab was sent")
	}
	r, err := c.Auth("LOGIN", "", info)
	if err != nil || r.Status != Continue {
		t.Fatalf("LOGIN: %+v %v", r, err)
	}
	if _, err := c.Continue("YWxpY2U=\nAUTH\t9\tPLAIN"); err == nil {
		t.Fatal("a response with a newline was sent")
	}
}

func TestEscape(t *testing.T) {
	for _, s := range []string{"plain", "a\tb", "a\nb\rc", "\x01t", "x\x011"} {
		if got := unescape(escape(s)); got != s {
			t.Errorf("%q: round trip gave %q", s, got)
		}
	}
	if unescape("a\x01tb") != "a\tb" {
		t.Error("unescape")
	}
}

// TestDialEndsWithContext: a socket that accepts and never answers (an
// auth process stuck) holds Dial only as long as its context, deadline
// or cancel, not for the much longer timeout of later reads.
func TestDialEndsWithContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth-client")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // silent until the test ends
		}
	}()
	deadline, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	cancelled, cancel2 := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel2)
	for name, tc := range map[string]struct {
		ctx  context.Context
		want error
	}{"deadline": {deadline, context.DeadlineExceeded}, "cancel": {cancelled, context.Canceled}} {
		ctx := tc.ctx
		done := make(chan error, 1)
		go func() {
			c, err := Dial(ctx, path, time.Hour)
			if err == nil {
				c.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			// The context's own error, which for a deadline may be set a
			// moment after the socket's deadline has ended the read.
			if !errors.Is(err, tc.want) {
				t.Errorf("%s: Dial returned %v, want %v", name, err, tc.want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: Dial still waiting for a silent socket after its context ended", name)
		}
	}
}

// TestAnswerAmongOtherLines: lines about other requests are skipped, but
// only so many: a peer that never answers ours ends the exchange.
func TestAnswerAmongOtherLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth-client")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t1\nCUID\t1\nCOOKIE\tx\nDONE\n")
		br := bufio.NewReader(c)
		br.ReadString('\n') // VERSION
		br.ReadString('\n') // CPID
		br.ReadString('\n') // AUTH 1
		for i := 0; i < 10 && err == nil; i++ {
			_, err = io.WriteString(c, "FAIL\t99\treason=not yours\n")
		}
		io.WriteString(c, "OK\t1\tuser=alice\n")
		br.ReadString('\n') // AUTH 2
		for err == nil {
			_, err = io.WriteString(c, "CONT\t99\t\n")
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, path, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r, err := c.Auth("PLAIN", b64("\x00alice\x00pw"), info); err != nil || r.Status != OK || r.User != "alice" {
		t.Fatalf("first exchange: %+v, %v", r, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Auth("PLAIN", b64("\x00alice\x00pw"), info)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("an exchange Dovecot never answered succeeded")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("still reading lines about other requests")
	}
}

// TestEmptyInitialResponse: "=" (RFC 4954: an empty initial response)
// reaches Dovecot as an empty response, which PLAIN refuses at once as
// invalid, while no initial response gets PLAIN's empty challenge.
func TestEmptyInitialResponse(t *testing.T) {
	d := testenv.StartDovecot(t, map[string]string{"alice": "s3cret"})
	c := dial(t, d)
	r, err := c.Auth("PLAIN", "=", info)
	if err != nil || r.Status != Fail || r.Temp {
		t.Fatalf("PLAIN with an empty initial response: %+v %v, want a failure", r, err)
	}
	r, err = c.Auth("PLAIN", "", info)
	if err != nil || r.Status != Continue || r.Challenge != "" {
		t.Fatalf("PLAIN without an initial response: %+v %v, want an empty challenge", r, err)
	}
	r, err = c.Continue(b64("\x00alice\x00s3cret"))
	if err != nil || r.Status != OK || r.User != "alice" {
		t.Fatalf("PLAIN after the empty challenge: %+v %v", r, err)
	}
	// LOGIN asks for the user either way.
	r, err = c.Auth("LOGIN", "=", info)
	if err != nil || r.Status != Continue || r.Challenge != b64("Username:") {
		t.Fatalf("LOGIN with an empty initial response: %+v %v", r, err)
	}
	if !strings.Contains(d.Log(), "plain(?,127.0.0.9): invalid input") {
		t.Errorf("Dovecot did not see an empty PLAIN response:\n%s", d.Log())
	}
}

// TestNologinIsRefused: Dovecot's OK with nologin (or proxy) says the
// password was right but the user must not be let in; it is a failure,
// with Dovecot's reason.
func TestNologinIsRefused(t *testing.T) {
	d := testenv.StartDovecot(t, map[string]string{"alice": "s3cret", "carol": "s3cret::::::nologin reason=disabled", "dave": "s3cret::::::proxy host=127.0.0.2"})
	c := dial(t, d)
	r, err := c.Auth("PLAIN", b64("\x00carol\x00s3cret"), info)
	if err != nil || r.Status != Fail || r.Temp || r.Reason != "disabled" {
		t.Fatalf("nologin: %+v %v, want a failure with reason disabled", r, err)
	}
	r, err = c.Auth("PLAIN", b64("\x00dave\x00s3cret"), info)
	if err != nil || r.Status != Fail {
		t.Fatalf("proxy: %+v %v, want a failure", r, err)
	}
	r, err = c.Auth("PLAIN", b64("\x00alice\x00s3cret"), info)
	if err != nil || r.Status != OK || r.User != "alice" {
		t.Fatalf("alice: %+v %v", r, err)
	}
}
