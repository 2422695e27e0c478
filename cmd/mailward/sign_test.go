package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/internal/testenv"
)

const eightBitSigned = "From: Alice <alice@sender.example>\r\n" +
	"To: bob@rcpt.example,\r\n carol@rcpt.example\r\n" +
	"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= in a subject\r\n\tfolded once\r\n" +
	"Date: Thu, 03 Dec 2026 08:30:00 +0000\r\nMessage-ID: <%s@sender.example>\r\n" +
	"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n" +
	"\r\nGrüße, 8-bit text,   spaced\t \r\n\r\nœuvre — fin.\r\n\r\n"

// sendSigned sends a message over the SMTP proxy with BODY=8BITMIME.
func sendSigned(t *testing.T, addr, id string) {
	t.Helper()
	testenv.Send8BitMIME(t, addr, "alice@sender.example", "bob@rcpt.example", fmt.Sprintf(eightBitSigned, id))
}

// verifyAll checks msg with mailward's verifier, dkimpy and opendkim-testmsg.
func verifyAll(t *testing.T, msg []byte, records map[string]string, want int) {
	t.Helper()
	dns := testenv.StartDNS(t, testenv.DKIMZone(records))
	res, err := resolver.New(resolver.Config{Servers: []string{dns.Addr()}, Timeout: time.Second, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	pass := 0
	for _, r := range dkim.New(res, dkim.Options{}).Verify(context.Background(), msg) {
		if r.Result == "pass" {
			pass++
		} else {
			t.Logf("mailward's verifier: s=%s %s %s", r.Selector, r.Result, r.Reason)
		}
	}
	if pass != want {
		t.Errorf("mailward's verifier passed %d signatures, want %d:\n%s", pass, want, msg)
	}
	testenv.VerifyIndependent(t, msg, records, want)
}

// TestServeSMTPProxySigns runs the binary as an inline SMTP proxy in front
// of Postfix with keys made by `mailward dkim keygen`: an RSA and an
// Ed25519 signature on 8-bit mail; a new key after SIGHUP; and a key file
// made unreadable before a SIGHUP keeps the old key.
func TestServeSMTPProxySigns(t *testing.T) {
	testenv.Require(t, "postfix")
	dir := t.TempDir()
	rsaKey, rsaRec := keygen(t, dir, "sender.example", "rsa1", false)
	edKey, edRec := keygen(t, dir, "sender.example", "ed1", true)
	records := map[string]string{"rsa1._domainkey.sender.example": rsaRec, "ed1._domainkey.sender.example": edRec}

	sink := testenv.StartSink(t)
	upstream := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	master := testenv.ReadMasterCf(t, "../../examples/postfix/master.cf.proxy")
	master[0] = strings.Replace(master[0], "127.0.0.1:10025", upstream, 1)
	testenv.StartPostfix(t, testenv.PostfixConfig{RelayTo: sink.Addr(), Master: master})
	milterAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	proxyAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	base := baseConfig(t, milterAddr) + "admin:\n  listen: " + adminAddr + "\n" +
		"smtp:\n  listen: " + proxyAddr + "\n  upstream: " + upstream + "\n  upstream_tls: \"off\"\n"
	withKeys := func(keys ...string) string {
		s := base + "signing:\n  keys:\n"
		for _, k := range keys {
			s += "    - " + k + "\n"
		}
		return s
	}
	cfg := writeFile(t, dir, "mailward.yaml", withKeys(
		"{domain: sender.example, selector: rsa1, key_file: "+filepath.Base(rsaKey)+"}",
		"{domain: sender.example, selector: ed1, key_file: "+edKey+"}"))
	p := startProc(t, cfg, proxyAddr)

	sendSigned(t, proxyAddr, "first")
	msgs, err := sink.Wait(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(msgs[0].Data), "Grüße, 8-bit text") {
		t.Fatalf("the 8-bit body did not arrive as sent:\n%s", msgs[0].Data)
	}
	verifyAll(t, msgs[0].Data, records, 2)

	// Rollover: a new selector in the config, applied by SIGHUP.
	newKey, newRec := keygen(t, dir, "sender.example", "rsa2", false)
	records["rsa2._domainkey.sender.example"] = newRec
	writeFile(t, dir, "mailward.yaml", withKeys("{domain: sender.example, selector: rsa2, key_file: "+newKey+"}"))
	hup(t, p, 1)
	sendSigned(t, proxyAddr, "second")
	msgs, err = sink.Wait(2, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if h := msgs[1].Header(); !strings.Contains(h, "s=rsa2;") || strings.Contains(h, "s=rsa1;") || strings.Contains(h, "s=ed1;") {
		t.Fatalf("after the rollover want only s=rsa2:\n%s", h)
	}
	verifyAll(t, msgs[1].Data, records, 1)

	// A key file that cannot be read at reload: the key loaded before stays.
	if err := os.WriteFile(newKey, []byte("half-written"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup(t, p, 2)
	if !strings.Contains(p.out.String(), "keeping the key loaded before") {
		t.Errorf("the unreadable key file was not logged:\n%s", p.out.String())
	}
	sendSigned(t, proxyAddr, "third")
	msgs, err = sink.Wait(3, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	verifyAll(t, msgs[2].Data, records, 1)
	_, metrics := httpDo(t, "GET", "http://"+adminAddr+"/metrics")
	if !strings.Contains(metrics, `mailward_dkim_sign_total{outcome="signed"} 3`) {
		t.Errorf("metrics do not count three signed messages:\n%s", grepLines(metrics, "mailward_dkim"))
	}
}

// hup sends SIGHUP and waits for the n-th reload to be logged.
func hup(t *testing.T, p *proc, n int) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(p.out.String(), "msg=reloaded") < n {
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged after SIGHUP:\n%s", p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
