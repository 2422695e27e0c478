package smtp

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gosasl "github.com/emersion/go-sasl"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/internal/testenv"
)

// startDovecotRig is client → proxy (smtp.auth: dovecot) → Postfix, which
// relays only for authenticated clients and learns the user by XCLIENT
// LOGIN. Postfix has SASL too (the same Dovecot), as a submission
// service would, but the proxy never relays AUTH to it.
func startDovecotRig(t *testing.T, cfg Config) *authRig {
	t.Helper()
	testenv.Require(t, "postfix")
	dc := testenv.StartDovecot(t, map[string]string{"alice": alicePass})
	main := testenv.DovecotSASL(dc)
	main["smtpd_recipient_restrictions"] = "permit_sasl_authenticated, reject"
	main["smtpd_relay_restrictions"] = "permit_sasl_authenticated, reject"
	logs := &logBuffer{t: t}
	cfg.Auth, cfg.DovecotSocket = AuthDovecot, dc.Socket()
	r := startRigLog(t, main, cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	return &authRig{rig: r, logs: logs, dc: dc}
}

func TestDovecotAuth(t *testing.T) {
	r := startDovecotRig(t, Config{AuthFailLimit: 2, AuthFailWindow: time.Hour})
	body := message("via dovecot")

	c := tlsClient(t, r.addr)
	if ok, mechs := c.Extension("AUTH"); !ok || !strings.Contains(mechs, "PLAIN") || !strings.Contains(mechs, "CRAM-MD5") {
		t.Fatalf("want Dovecot's mechanisms offered, got %v %q", ok, mechs)
	}
	if err := c.Auth(gosasl.NewPlainClient("", "alice", wrongPass)); smtpCode(err) != 535 {
		t.Fatalf("wrong password: want 535, got %v", err)
	}
	// Not authenticated: Postfix refuses to relay.
	if err := send(t, c, "alice@sender.example", []string{"bob@rcpt.example"}, body); smtpCode(err) != 554 {
		t.Fatalf("unauthenticated: want 554, got %v", err)
	}
	c.Quit()

	rc, ehlo := rawTLS(t, "127.0.0.9", r.addr)
	if offersAuth(ehlo) == "" {
		t.Fatal("no AUTH offered")
	}
	rc.send("AUTH LOGIN\r\n")
	rc.expect(334)
	rc.send(b64("alice") + "\r\n")
	rc.expect(334)
	rc.send(b64(alicePass) + "\r\n")
	rc.expect(235)
	rc.send("MAIL FROM:<alice@sender.example>\r\n")
	rc.expect(250)
	rc.send("RCPT TO:<bob@rcpt.example>\r\n")
	rc.expect(250)
	rc.send("DATA\r\n")
	rc.expect(354)
	rc.send(body + ".\r\n")
	rc.expect(250)
	// The upstream session outlives the message and keeps the login;
	// a second message goes the same way.
	rc.send("MAIL FROM:<alice@sender.example>\r\nRCPT TO:<carol@rcpt.example>\r\nDATA\r\n")
	rc.expect(250)
	rc.expect(250)
	rc.expect(354)
	rc.send(message("second") + ".\r\n")
	rc.expect(250)
	rc.send("QUIT\r\n")
	rc.expect(221)

	msgs, err := r.sink.Wait(2, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if h := m.Header(); !strings.Contains(h, "login=alice") {
			t.Errorf("the rules did not see auth_user alice:\n%s", h)
		}
	}
	if err := r.pf.WaitLog("sasl_username=alice", 10*time.Second); err != nil {
		t.Error(err)
	}
	if !transactionLine(r.logs.String(), "auth_user=alice") {
		t.Error("no transaction line with auth_user=alice in the log")
	}

	// Second failure from this address spends the limit of 2.
	rc, _ = rawTLS(t, "127.0.0.9", r.addr)
	rc.send("AUTH PLAIN " + b64("\x00alice\x00"+wrongPass) + "\r\n")
	rc.expect(535)
	rc.send("AUTH PLAIN " + b64("\x00alice\x00"+alicePass) + "\r\n")
	rc.expect(454)
	// A response that is not base64 never reaches Dovecot.
	rc2, _ := rawTLS(t, "127.0.0.10", r.addr)
	rc2.send("AUTH PLAIN " + b64("\x00alice\x00x") + "\tuser=alice\r\n")
	rc2.expect(501)
	noSecrets(t, r.logs.String())
}

func TestDovecotAuthNeedsXCLIENTLogin(t *testing.T) {
	// The sink offers no XCLIENT: upstream could not learn the login, so
	// the client never hears 235.
	dc := testenv.StartDovecot(t, map[string]string{"alice": alicePass})
	sink := testenv.StartSink(t)
	cert := testenv.SelfSignedCert(t, "proxy.test.example")
	_, addr := startProxy(t, Config{Upstream: sink.Addr(), TLSCert: cert.CertFile, TLSKey: cert.KeyFile, Auth: AuthDovecot, DovecotSocket: dc.Socket()})
	rc, _ := rawTLS(t, "127.0.0.9", addr)
	rc.send("AUTH PLAIN " + b64("\x00alice\x00"+alicePass) + "\r\n")
	rc.expect(454)

	// Dovecot down: no AUTH offered.
	_, addr = startProxy(t, Config{Upstream: sink.Addr(), TLSCert: cert.CertFile, TLSKey: cert.KeyFile, Auth: AuthDovecot, DovecotSocket: dc.Socket() + ".missing"})
	_, ehlo := rawTLS(t, "127.0.0.9", addr)
	if a := offersAuth(ehlo); a != "" {
		t.Fatalf("AUTH offered without Dovecot: %s", a)
	}
}

func TestFailedAuthCountsTowardErrorBudget(t *testing.T) {
	dc := testenv.StartDovecot(t, map[string]string{"alice": alicePass})
	sink := testenv.StartSink(t)
	cert := testenv.SelfSignedCert(t, "proxy.test.example")
	_, addr := startProxy(t, Config{Upstream: sink.Addr(), TLSCert: cert.CertFile, TLSKey: cert.KeyFile,
		Auth: AuthDovecot, DovecotSocket: dc.Socket()})
	rc, _ := rawTLS(t, "127.0.0.9", addr)
	for i := 0; i < maxErrors-1; i++ {
		rc.send("XYZZY\r\n")
		rc.expect(500)
	}
	// The 20th error is a refused AUTH: the session ends there.
	rc.send("AUTH PLAIN " + b64("\x00alice\x00"+wrongPass) + "\r\n")
	rc.expect(535)
	if got := rc.expect(421); !strings.Contains(got.String(), "too many errors") {
		t.Fatalf("got %s", got)
	}
	if !rc.closed() {
		t.Fatal("connection still open after the error budget was spent")
	}
}

func TestAuthOfferedOnImplicitTLS(t *testing.T) {
	dc := testenv.StartDovecot(t, map[string]string{"alice": alicePass})
	sink := testenv.StartSink(t)
	cert := testenv.SelfSignedCert(t, "proxy.test.example")
	srv, _ := startProxy(t, Config{Upstream: sink.Addr(), TLSCert: cert.CertFile, TLSKey: cert.KeyFile, Auth: AuthDovecot, DovecotSocket: dc.Socket()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln)
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc := newRawClient(t, c)
	rc.expect(220)
	rc.send("EHLO client.test.example\r\n")
	if a := offersAuth(rc.expect(250)); !strings.Contains(a, "PLAIN") {
		t.Fatalf("no AUTH on the implicit-TLS listener: %q", a)
	}
	rc.send("AUTH PLAIN " + b64("\x00alice\x00"+wrongPass) + "\r\n")
	rc.expect(535)
}

// TestAuthFailLimitSharedThroughRedis: two proxies on one Redis, as a
// fleet would run: failures on one spend the allowance on both. With
// Redis gone, AUTH is decided as if there were no limit.
func TestAuthFailLimitSharedThroughRedis(t *testing.T) {
	rd := testenv.StartRedis(t)
	dc := testenv.StartDovecot(t, map[string]string{"alice": alicePass})
	sink := testenv.StartSink(t)
	cert := testenv.SelfSignedCert(t, "proxy.test.example")
	cfg := Config{Upstream: sink.Addr(), TLSCert: cert.CertFile, TLSKey: cert.KeyFile, Auth: AuthDovecot, DovecotSocket: dc.Socket(),
		AuthFailLimit: 2, AuthFailWindow: time.Hour}
	var addrs []string
	for range 2 {
		ccfg := cache.DefaultConfig()
		ccfg.Type, ccfg.Redis.Addrs = cache.TypeRedis, []string{rd.Addr()}
		rc, err := cache.NewRedis(ccfg, cache.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rc.Close() })
		srv, addr := startProxy(t, cfg)
		srv.SetCache(rc)
		addrs = append(addrs, addr)
	}
	c, _ := rawTLS(t, "127.0.0.9", addrs[0])
	for range 2 {
		c.send("AUTH PLAIN " + b64("\x00alice\x00"+wrongPass) + "\r\n")
		c.expect(535)
	}
	c2, _ := rawTLS(t, "127.0.0.9", addrs[1])
	c2.send("AUTH PLAIN " + b64("\x00alice\x00"+alicePass) + "\r\n")
	c2.expect(454)

	rd.Stop()
	c3, _ := rawTLS(t, "127.0.0.9", addrs[1])
	c3.send("AUTH PLAIN " + b64("\x00alice\x00"+wrongPass) + "\r\n")
	c3.expect(535)
}

// TestShutdownDuringDovecotExchange: a shutdown whose grace period ends
// while Dovecot has not answered an AUTH closes the Dovecot connection
// and returns, rather than wait out upstream_timeout.
func TestShutdownDuringDovecotExchange(t *testing.T) {
	sock, ln := fakeAuthSocket(t)
	// An auth process that shakes hands and then answers nothing; it
	// tells when an AUTH request has come.
	authed := make(chan struct{}, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, dovecotHello)
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if strings.HasPrefix(sc.Text(), "AUTH\t") {
						select {
						case authed <- struct{}{}:
						default:
						}
					}
				}
			}()
		}
	}()
	sink := testenv.StartSink(t)
	cert := testenv.SelfSignedCert(t, "proxy.test.example")
	srv, addr := startProxy(t, Config{Upstream: sink.Addr(), TLSCert: cert.CertFile, TLSKey: cert.KeyFile,
		Auth: AuthDovecot, DovecotSocket: sock, UpstreamTimeout: 40 * time.Second})
	rc, ehlo := rawTLS(t, "127.0.0.9", addr)
	if offersAuth(ehlo) == "" {
		t.Fatal("no AUTH offered")
	}
	rc.send("AUTH PLAIN " + b64("\x00alice\x00"+alicePass) + "\r\n")
	select {
	case <-authed: // the session is blocked on Dovecot
	case <-time.After(30 * time.Second):
		t.Fatal("the AUTH never reached Dovecot")
	}
	done := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		srv.Shutdown(ctx)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("shutdown still waiting for a session blocked on Dovecot")
	}
}

// TestDovecotEmptyInitialResponse: "AUTH PLAIN =" is an empty initial
// response (RFC 4954), which Dovecot refuses as PLAIN; "AUTH PLAIN"
// without one gets PLAIN's empty challenge.
func TestDovecotEmptyInitialResponse(t *testing.T) {
	dc := testenv.StartDovecot(t, map[string]string{"alice": alicePass})
	sink := testenv.StartSink(t)
	cert := testenv.SelfSignedCert(t, "proxy.test.example")
	_, addr := startProxy(t, Config{Upstream: sink.Addr(), TLSCert: cert.CertFile, TLSKey: cert.KeyFile, Auth: AuthDovecot, DovecotSocket: dc.Socket()})
	rc, _ := rawTLS(t, "127.0.0.9", addr)
	rc.send("AUTH PLAIN =\r\n")
	rc.expect(535)
	rc.send("AUTH PLAIN\r\n")
	if got := rc.expect(334); strings.Join(got.text, "") != "" {
		t.Fatalf("want an empty challenge, got %q", got)
	}
	rc.send("*\r\n")
	rc.expect(501)
}

// TestEHLONotHeldByHungDovecot: with a Dovecot that accepts and never
// answers, EHLO replies come within their own bound (without AUTH), all
// of them while the one fetch of the mechanisms is still hanging, not
// one after the other behind it; a Dovecot that answers again is
// offered once the retry time has passed.
func TestEHLONotHeldByHungDovecot(t *testing.T) {
	sock, ln := fakeAuthSocket(t)
	accepted := make(chan struct{}, 16)
	hungUp := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		accepted <- struct{}{}
		io.Copy(io.Discard, c) // says nothing until the proxy gives up
		c.Close()
		close(hungUp)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			io.WriteString(c, dovecotHello)
			c.Close()
		}
	}()
	sink := testenv.StartSink(t)
	_, addr := startProxy(t, Config{Upstream: sink.Addr(), Auth: AuthDovecot, DovecotSocket: sock, AuthPlaintext: true})
	ehlo := func() (string, error) {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		br := bufio.NewReader(c)
		if _, err := readReply(br); err != nil {
			return "", err
		}
		io.WriteString(c, "EHLO client.test.example\r\n")
		r, err := readReply(br)
		if err != nil {
			return "", err
		}
		return offersAuth(r), nil
	}
	const clients = 4
	errs := make(chan error, clients)
	for range clients {
		go func() {
			a, err := ehlo()
			if err == nil && a != "" {
				err = fmt.Errorf("AUTH offered with Dovecot hung: %s", a)
			}
			errs <- err
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-hungUp:
		t.Fatal("the EHLO replies waited until the fetch from the hung Dovecot gave up")
	default:
	}
	if n := len(accepted); n != 1 {
		t.Errorf("%d connections to Dovecot for %d EHLOs at once, want 1", n, clients)
	}
	// Once the hung fetch has given up and the retry time has passed, the
	// next EHLO starts a new fetch; the one after it gets the list.
	<-hungUp
	time.Sleep(mechsRetry)
	deadline := time.Now().Add(30 * time.Second)
	for {
		a, err := ehlo()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(a, "PLAIN") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("AUTH not offered again once Dovecot answers")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDovecotNologinRefused: a user Dovecot marks nologin (a disabled
// account) is refused with Dovecot's reason, though the password was
// right, and upstream never hears of it.
func TestDovecotNologinRefused(t *testing.T) {
	dc := testenv.StartDovecot(t, map[string]string{"carol": alicePass + "::::::nologin reason=disabled"})
	sink := testenv.StartSink(t)
	cert := testenv.SelfSignedCert(t, "proxy.test.example")
	_, addr := startProxy(t, Config{Upstream: sink.Addr(), TLSCert: cert.CertFile, TLSKey: cert.KeyFile, Auth: AuthDovecot, DovecotSocket: dc.Socket()})
	rc, _ := rawTLS(t, "127.0.0.9", addr)
	rc.send("AUTH PLAIN " + b64("\x00carol\x00"+alicePass) + "\r\n")
	if got := rc.expect(535); !strings.Contains(got.String(), "disabled") {
		t.Fatalf("got %s, want Dovecot's reason", got)
	}
}

// TestEHLOWaitsForDovecotBack: once Dovecot did not answer and the
// retry time has passed, the EHLO that starts the new fetch waits for it
// (within its bound) like the first EHLO does: a Dovecot that is back
// and answers at once is offered in that reply, not only in the next,
// so no client is told "no AUTH" after Dovecot recovered.
func TestEHLOWaitsForDovecotBack(t *testing.T) {
	sock, ln := fakeAuthSocket(t)
	go func() {
		for first := true; ; first = false {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !first {
				io.WriteString(c, dovecotHello)
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				io.Copy(io.Discard, c) // until the proxy hangs up
			}
			c.Close() // the first: a Dovecot going down mid-handshake
		}
	}()
	sink := testenv.StartSink(t)
	srv, addr := startProxy(t, Config{Upstream: sink.Addr(), Auth: AuthDovecot, DovecotSocket: sock, AuthPlaintext: true})
	ehlo := func() string {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		br := bufio.NewReader(c)
		if _, err := readReply(br); err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "EHLO client.test.example\r\n")
		r, err := readReply(br)
		if err != nil {
			t.Fatal(err)
		}
		return offersAuth(r)
	}
	if a := ehlo(); a != "" {
		t.Fatalf("AUTH offered while Dovecot did not answer: %s", a)
	}
	// The retry time passes (rather than sleeping mechsRetry).
	srv.mechs.mu.Lock()
	if !srv.mechs.known || srv.mechs.fetching != nil {
		srv.mechs.mu.Unlock()
		t.Fatal("the failed fetch was not recorded")
	}
	srv.mechs.until = time.Now()
	srv.mechs.mu.Unlock()
	if a := ehlo(); !strings.Contains(a, "PLAIN") {
		t.Fatalf("EHLO once Dovecot answers again offers %q, want PLAIN", a)
	}
}

// TestDovecotMechsAfterShutdownBegun: once shutdown has begun no fetch of
// the mechanisms is started, and none is left marked under way for the
// EHLO replies of sessions still draining to wait on.
func TestDovecotMechsAfterShutdownBegun(t *testing.T) {
	sink := testenv.StartSink(t)
	srv, _ := startProxy(t, Config{Upstream: sink.Addr(), Auth: AuthDovecot, DovecotSocket: filepath.Join(t.TempDir(), "none"), AuthPlaintext: true})
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if m := srv.dovecotMechs(context.Background(), srv.settings.Load(), testLogger(t)); m != nil {
		t.Errorf("mechanisms %v after shutdown, want none", m)
	}
	srv.mechs.mu.Lock()
	defer srv.mechs.mu.Unlock()
	if srv.mechs.fetching != nil {
		t.Error("a fetch is marked under way that nothing runs")
	}
}

// dovecotHello is the handshake of a fake Dovecot auth process that
// offers PLAIN.
const dovecotHello = "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nDONE\n"

// fakeAuthSocket listens on a unix socket where a test plays a Dovecot
// auth process that misbehaves as the real one cannot be made to; it is
// closed when the test ends.
func fakeAuthSocket(t *testing.T) (string, net.Listener) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "auth-client")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return sock, ln
}
