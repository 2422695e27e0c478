package smtp

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"hash"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailward/mailward/internal/testenv"
)

// rig is client → mailward proxy → private Postfix → sink.
type rig struct {
	pf   *testenv.Postfix
	sink *testenv.Sink
	srv  *Server
	addr string
	cert *testenv.TestCert
}

// startRig starts the chain. Postfix trusts the proxy's XCLIENT, offers
// STARTTLS, and refuses bad@rcpt.example itself.
func startRig(t *testing.T, main map[string]string, cfg Config) *rig {
	t.Helper()
	testenv.Require(t, "postfix")
	sink := testenv.StartSink(t)
	cert := testenv.SelfSignedCert(t, "proxy.test.example", "mx.test.example")
	dir, err := os.MkdirTemp("", "mailward-maps-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	access := filepath.Join(dir, "rcpt_access")
	if err := os.WriteFile(access, []byte("bad@rcpt.example REJECT no such mailbox upstream\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pfMain := map[string]string{
		"smtpd_authorized_xclient_hosts": "127.0.0.0/8",
		"smtpd_recipient_restrictions":   "check_recipient_access texthash:" + access + ", permit_mynetworks, reject",
		"message_size_limit":             "120000000",
		"smtpd_tls_cert_file":            cert.CertFile,
		"smtpd_tls_key_file":             cert.KeyFile,
		"smtpd_tls_security_level":       "may",
		"smtpd_tls_loglevel":             "1",
	}
	maps.Copy(pfMain, main)
	pf := testenv.StartPostfix(t, testenv.PostfixConfig{RelayTo: sink.Addr(), Main: pfMain})
	cfg.Upstream = pf.SMTPAddr()
	if cfg.TLSCert == "" {
		cfg.TLSCert, cfg.TLSKey = cert.CertFile, cert.KeyFile
	}
	srv, addr := startProxy(t, cfg)
	return &rig{pf: pf, sink: sink, srv: srv, addr: addr, cert: cert}
}

func TestPostfixAcceptedCarriesHeadersAndClientIP(t *testing.T) {
	r := startRig(t, nil, Config{})
	c := dialClient(t, "127.0.0.9", r.addr)
	body := message("accepted",
		"Authentication-Results: "+authservID+"; dkim=pass header.d=bank.example",
		"Authentication-Results: other.example; spf=pass smtp.mailfrom=sender.example")
	if err := send(t, c, "alice@sender.example", []string{"bob@rcpt.example"}, body); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	msgs, err := r.sink.Wait(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h := msgs[0].Header()
	// Postfix took the client's identity by XCLIENT: its own Received
	// header names the real client, and the proxy adds none.
	if !strings.Contains(h, "Received: from client.test.example (unknown [127.0.0.9])\r\n\tby mx.test.example (Postfix) with ESMTPS") {
		t.Errorf("Postfix's Received header does not show the real client over TLS:\n%s", h)
	}
	if strings.Contains(h, "(mailward)") {
		t.Errorf("a Received header of ours despite XCLIENT:\n%s", h)
	}
	if strings.Contains(h, "header.d=bank.example") {
		t.Errorf("forged Authentication-Results reached Postfix:\n%s", h)
	}
	for _, want := range []string{
		"Authentication-Results: " + authservID,
		"Authentication-Results: other.example; spf=pass",
		"X-Mailward-Test: client=127.0.0.9 helo=client.test.example rcpts=bob@rcpt.example",
	} {
		if !strings.Contains(h, want) {
			t.Errorf("header block lacks %q:\n%s", want, h)
		}
	}
	if err := r.pf.WaitLog("client=unknown[127.0.0.9]", 10*time.Second); err != nil {
		t.Error(err)
	}
}

func TestPostfixRejectedAtRcptNeverReachesPostfix(t *testing.T) {
	r := startRig(t, nil, Config{})
	out, err := testenv.Swaks(t, r.addr, "--from", "alice@sender.example", "--to", "refused@rcpt.example,bob@rcpt.example", "--data", message("one refused"))
	if !strings.Contains(out, "550 5.1.1 No such user here") {
		t.Fatalf("want the rule's reply for refused@; swaks err=%v:\n%s", err, out)
	}
	msgs, err := r.sink.Wait(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(msgs[0].To, ","); got != "bob@rcpt.example" {
		t.Fatalf("sink recipients %s", got)
	}
	if err := r.pf.WaitLog("to=<bob@rcpt.example>", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(r.pf.Log(), "refused@rcpt.example") {
		t.Fatalf("the refused recipient reached Postfix:\n%s", r.pf.Log())
	}
	// Refused at MAIL: Postfix never hears of the sender.
	out, err = testenv.Swaks(t, r.addr, "--from", "spammer@bad.example", "--to", "bob@rcpt.example")
	if err == nil || !strings.Contains(out, "550 5.7.1 Sender spammer@bad.example refused") {
		t.Fatalf("refused sender: err=%v\n%s", err, out)
	}
	if strings.Contains(r.pf.Log(), "spammer@bad.example") {
		t.Fatal("the refused sender reached Postfix")
	}
}

func TestPostfixRejectionReachesClientUnchanged(t *testing.T) {
	r := startRig(t, nil, Config{})
	c := dialClient(t, "127.0.0.9", r.addr)
	defer c.Close()
	if err := c.Mail("alice@sender.example", nil); err != nil {
		t.Fatal(err)
	}
	err := c.Rcpt("bad@rcpt.example", nil)
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) || se.Code != 554 {
		t.Fatalf("upstream's rejection: %v; want Postfix's 554", err)
	}
	if err := r.pf.WaitLog("NOQUEUE: reject: RCPT from unknown[127.0.0.9]", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
	if !strings.Contains(r.pf.Log(), ": "+want+";") {
		t.Fatalf("client got %q, which is not Postfix's reply as logged:\n%s", want, r.pf.Log())
	}
	if err := c.Rcpt("bob@rcpt.example", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(message("one bad")))
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatal(err)
	}
	// Postfix's 250 carries its queue id, passed through as is.
	if !strings.Contains(resp.StatusText, "Ok: queued as ") {
		t.Fatalf("final reply %q is not Postfix's", resp.StatusText)
	}
	f := strings.Fields(resp.StatusText)
	qid := f[len(f)-1]
	if err := r.pf.WaitLog(qid+": to=<bob@rcpt.example>", 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestPostfixDownNothingAcknowledged(t *testing.T) {
	r := startRig(t, nil, Config{})
	r.pf.Stop()
	// Postfix's children may accept on the inherited socket for a moment
	// after the master has gone; "down" is when the port refuses.
	waitFor(t, func() bool {
		c, err := net.Dial("tcp", r.pf.SMTPAddr())
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	out, err := testenv.Swaks(t, r.addr, "--from", "alice@sender.example", "--to", "bob@rcpt.example")
	if err == nil || !strings.Contains(out, "451 4.4.1") {
		t.Fatalf("upstream down: want 451 4.4.1 at MAIL, got err=%v:\n%s", err, out)
	}
	if strings.Contains(out, "<-  250 2.0.0") {
		t.Fatalf("a message was acknowledged:\n%s", out)
	}
	if n := len(r.sink.Messages()); n != 0 {
		t.Fatalf("%d messages reached the sink", n)
	}
}

func TestPostfixLostMidTransaction(t *testing.T) {
	testenv.Require(t, "postfix")
	r := startRig(t, nil, Config{})
	cab := startCable(t, r.pf.SMTPAddr())
	cfg := Config{Upstream: cab.addr(), Hostname: "proxy.test.example"}
	_, addr := startProxy(t, cfg)
	c := dialClient(t, "127.0.0.9", addr)
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
	w.Write([]byte(message("cut")))
	cab.cut()
	if err := w.Close(); smtpCode(err) != 451 {
		t.Fatalf("upstream lost: client got %v; want 451", err)
	}
	if err := r.pf.WaitLog("lost connection after RCPT from unknown[127.0.0.9]", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if n := len(r.sink.Messages()); n != 0 {
		t.Fatalf("%d messages reached the sink", n)
	}
}

func TestPostfixPipelining(t *testing.T) {
	r := startRig(t, nil, Config{})
	out, err := testenv.Swaks(t, r.addr, "--pipeline", "--from", "alice@sender.example",
		"--to", "one@rcpt.example,refused@rcpt.example,two@rcpt.example", "--data", message("pipelined"))
	if !strings.Contains(out, "550 5.1.1 No such user here") || !strings.Contains(out, "PIPELINING") {
		t.Fatalf("swaks err=%v:\n%s", err, out)
	}
	msgs, err := r.sink.Wait(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(msgs[0].To, ","); got != "one@rcpt.example,two@rcpt.example" {
		t.Fatalf("sink recipients %s", got)
	}
}

func TestPostfixSTARTTLSBothSides(t *testing.T) {
	cert := testenv.SelfSignedCert(t, "proxy.test.example", "mx.test.example")
	r := startRig(t, map[string]string{"smtpd_tls_cert_file": cert.CertFile, "smtpd_tls_key_file": cert.KeyFile},
		Config{TLSCert: cert.CertFile, TLSKey: cert.KeyFile, UpstreamTLS: "required", UpstreamTLSCA: cert.CertFile, UpstreamTLSServerName: "mx.test.example"})
	c, err := gosmtp.NewClientStartTLS(dialFrom(t, "127.0.0.9", r.addr), &tls.Config{RootCAs: cert.Pool, ServerName: "proxy.test.example"})
	if err != nil {
		t.Fatal(err)
	}
	if err := send(t, c, "alice@sender.example", []string{"bob@rcpt.example"}, message("tls both ways")); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	msgs, err := r.sink.Wait(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h := msgs[0].Header()
	if !strings.Contains(h, "tls=TLSv1.3") {
		t.Errorf("the engine did not see the client's TLS:\n%s", h)
	}
	if !strings.Contains(h, "(unknown [127.0.0.9])\r\n\tby mx.test.example (Postfix) with ESMTPS") {
		t.Errorf("Postfix did not receive over TLS:\n%s", h)
	}
	if err := r.pf.WaitLog("TLS connection established from localhost[127.0.0.1]", 10*time.Second); err != nil {
		t.Error(err)
	}

	// With TLS required and an upstream that offers none, nothing is relayed.
	plain := startRig(t, map[string]string{"smtpd_tls_security_level": "none"}, Config{UpstreamTLS: "required"})
	c2 := dialClient(t, "127.0.0.9", plain.addr)
	defer c2.Close()
	if err := c2.Mail("alice@sender.example", nil); smtpCode(err) != 451 {
		t.Fatalf("TLS required, upstream without it: %v; want 451", err)
	}
}

func TestPostfixProxyProtocolAndUntrustedXCLIENT(t *testing.T) {
	r := startRig(t, nil, Config{TrustedNetworks: []string{"127.0.0.5/32"}, ProxyProtocol: true})

	spoof := newRawClient(t, dialFrom(t, "127.0.0.1", r.addr))
	spoof.send("PROXY TCP4 127.0.0.81 127.0.0.1 4000 25\r\n")
	spoof.expect(220)
	spoof.expect(550)
	xc := newRawClient(t, dialFrom(t, "127.0.0.1", r.addr))
	xc.expect(220)
	xc.send("XCLIENT ADDR=127.0.0.82\r\n")
	xc.expect(550)

	lb := newRawClient(t, dialFrom(t, "127.0.0.5", r.addr))
	lb.send("PROXY TCP4 127.0.0.78 127.0.0.1 40001 25\r\n")
	lb.expect(220)
	relay(t, lb, "through a load balancer")
	msgs, err := r.sink.Wait(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if h := msgs[0].Header(); !strings.Contains(h, "(unknown [127.0.0.78])\r\n\tby mx.test.example (Postfix)") {
		t.Errorf("Postfix did not see the client behind the PROXY header:\n%s", h)
	}
	if err := r.pf.WaitLog("client=unknown[127.0.0.78]", 10*time.Second); err != nil {
		t.Error(err)
	}
	for _, forged := range []string{"127.0.0.81", "127.0.0.82"} {
		if strings.Contains(r.pf.Log(), forged) {
			t.Errorf("an untrusted client's claimed address %s reached Postfix", forged)
		}
	}
}

// bodyGen generates a large message body line by line, hashing it.
type bodyGen struct {
	lines int
	n     int
	cur   []byte
	h     hash.Hash
}

func (g *bodyGen) Read(p []byte) (int, error) {
	if len(g.cur) == 0 {
		if g.n == g.lines {
			return 0, io.EOF
		}
		g.n++
		g.cur = fmt.Appendf(g.cur[:0], "%08d %s\r\n", g.n, strings.Repeat("m", 989))
		g.h.Write(g.cur)
	}
	n := copy(p, g.cur)
	g.cur = g.cur[n:]
	return n, nil
}

func TestPostfix50MBMessageBoundedMemory(t *testing.T) {
	// Postfix keeps the message queued until the memory measurement is
	// over; then the sink, which holds messages in memory, receives it.
	r := startRig(t, map[string]string{"defer_transports": "smtp relay"}, Config{MaxMessageSize: 64 << 20})
	c := dialClient(t, "127.0.0.9", r.addr)
	defer c.Close()
	if err := c.Mail("alice@sender.example", &gosmtp.MailOptions{Size: 50 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("bob@rcpt.example", nil); err != nil {
		t.Fatal(err)
	}
	gen := &bodyGen{lines: (50<<20)/1000 + 1, h: sha256.New()}

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	stop := make(chan struct{})
	peakc := make(chan uint64)
	go func() {
		var peak uint64
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				peakc <- peak
				return
			case <-tick.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
			}
		}
	}()
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, io.MultiReader(strings.NewReader("From: alice@sender.example\r\nSubject: big\r\n\r\n"), gen)); err != nil {
		t.Fatal(err)
	}
	err = w.Close()
	close(stop)
	peak := <-peakc
	if err != nil {
		t.Fatal(err)
	}
	grew := int64(peak) - int64(base)
	t.Logf("heap in use: %d MB before, peak %d MB while relaying %d MB", base>>20, peak>>20, gen.lines*1000>>20)
	if grew > 16<<20 {
		t.Fatalf("heap grew by %d MB while relaying a 50 MB message; the message is being held in memory", grew>>20)
	}

	if err := r.pf.WaitLog("status=deferred (deferred transport)", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testenv.Require(t, "postqueue"), "-c", filepath.Join(r.pf.Dir(), "etc"), "-f")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("flushing the Postfix queue: %v\n%s", err, out)
	}
	msgs, err := r.sink.Wait(1, 120*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	data := msgs[0].Data
	i := bytes.Index(data, []byte("\r\n\r\n"))
	if i < 0 {
		t.Fatal("no header block")
	}
	if got := sha256.Sum256(data[i+4:]); !bytes.Equal(got[:], gen.h.Sum(nil)) {
		t.Fatalf("body of %d bytes differs from the %d bytes sent", len(data)-i-4, gen.lines*1000)
	}
	if !strings.Contains(msgs[0].Header(), "Authentication-Results: "+authservID) {
		t.Errorf("no Authentication-Results on the large message:\n%s", msgs[0].Header())
	}
}
