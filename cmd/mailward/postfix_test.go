package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/testenv"
)

const rejectSenderRules = `rules:
  - name: bad-sender
    description: a sender we never want
    when: mail_from == "spammer@bad.example"
    action: reject
    code: "550 5.7.1"
    message: "Sender {{mail_from}} refused by policy"
`

// TestServeWithPostfix runs the real binary with a config and a rule file
// behind a private Postfix: a configured reject, an accepted message with
// our Authentication-Results, then a broken rule save that must not change
// what is served, then a good one that does.
func TestServeWithPostfix(t *testing.T) {
	testenv.Require(t, "postfix")
	testenv.Require(t, "swaks")
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	if err := os.Mkdir(filepath.Join(dir, "rules.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "rules.d/local.yaml", rejectSenderRules)
	cfg := writeFile(t, dir, "mailward.yaml", baseConfig(t, addr)+
		"admin:\n  listen: \"\"\nrules:\n  files: [\"rules.d/*.yaml\"]\n")
	p := startProc(t, cfg, addr)

	sink := testenv.StartSink(t)
	main := testenv.ReadMainCf(t, "../../examples/postfix/main.cf.milter")
	main["smtpd_milters"] = "inet:" + addr
	pf := testenv.StartPostfix(t, testenv.PostfixConfig{RelayTo: sink.Addr(), Main: main})

	send := func(from string) (string, error) {
		return testenv.Swaks(t, pf.SMTPAddr(), "--from", from, "--to", "bob@rcpt.example")
	}
	if out, err := send("spammer@bad.example"); err == nil || !strings.Contains(out, "550 5.7.1 Sender spammer@bad.example refused by policy") {
		t.Fatalf("configured reject not applied (err=%v):\n%s", err, out)
	}
	if out, err := send("friend@good.example"); err != nil {
		t.Fatalf("good sender refused: %v\n%s", err, out)
	}
	msgs, err := sink.Wait(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msgs[0].Header(), "Authentication-Results: mw.test.example") {
		t.Fatalf("no Authentication-Results:\n%s", msgs[0].Header())
	}

	// A typo saved into the rule file: the running rules stay.
	writeFile(t, dir, "rules.d/local.yaml", strings.Replace(rejectSenderRules, `mail_from ==`, `mail_frm ==`, 1))
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitOutput(t, p, "keeping the running", 10*time.Second)
	if !strings.Contains(p.out.String(), "local.yaml:4:") {
		t.Errorf("reload error does not name file and line:\n%s", p.out.String())
	}
	if out, err := send("spammer@bad.example"); err == nil || !strings.Contains(out, "550 5.7.1") {
		t.Fatalf("after a broken reload the old rules must still reject (err=%v):\n%s", err, out)
	}
	// Fixed: now refuse another sender; the file watcher picks it up.
	writeFile(t, dir, "rules.d/local.yaml", strings.Replace(rejectSenderRules, "spammer@bad.example", "friend@good.example", 1))
	waitOutput(t, p, "rules reloaded after a file change", 10*time.Second)
	if out, err := send("friend@good.example"); err == nil || !strings.Contains(out, "550 5.7.1 Sender friend@good.example refused") {
		t.Fatalf("reloaded rule not applied (err=%v):\n%s", err, out)
	}
}

func waitOutput(t *testing.T, p *proc, s string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(p.out.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("mailward never logged %q:\n%s", s, p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServeSMTPProxy runs the binary as an inline proxy in front of a
// private Postfix: a rule's refusal is answered by mailward, an accepted
// message reaches the sink through Postfix with our Authentication-Results.
func TestServeSMTPProxy(t *testing.T) {
	testenv.Require(t, "postfix")
	testenv.Require(t, "swaks")
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "rules.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "rules.d/local.yaml", rejectSenderRules)
	sink := testenv.StartSink(t)
	// Postfix's listener behind the proxy, as examples/postfix/master.cf.proxy
	// writes it, on a free port instead of 10025.
	upstream := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	master := testenv.ReadMasterCf(t, "../../examples/postfix/master.cf.proxy")
	if len(master) != 1 || !strings.HasPrefix(master[0], "127.0.0.1:10025 inet") || !strings.Contains(master[0], "smtpd_authorized_xclient_hosts=127.0.0.0/8") ||
		!strings.Contains(master[0], "-o smtpd_milters=\n") {
		t.Fatalf("examples/postfix/master.cf.proxy changed: %q", master)
	}
	master[0] = strings.Replace(master[0], "127.0.0.1:10025", upstream, 1)
	pf := testenv.StartPostfix(t, testenv.PostfixConfig{RelayTo: sink.Addr(), Master: master})
	milterAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	proxyAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg := writeFile(t, dir, "mailward.yaml", baseConfig(t, milterAddr)+"admin:\n  listen: \"\"\nrules:\n  files: [\"rules.d/*.yaml\"]\n"+
		"smtp:\n  listen: "+proxyAddr+"\n  upstream: "+upstream+"\n  upstream_tls: \"off\"\n")
	startProc(t, cfg, proxyAddr)
	send := func(from string) (string, error) {
		return testenv.Swaks(t, proxyAddr, "--from", from, "--to", "bob@rcpt.example")
	}
	if out, err := send("spammer@bad.example"); err == nil || !strings.Contains(out, "550 5.7.1 Sender spammer@bad.example refused by policy") {
		t.Fatalf("proxy did not refuse the sender (err=%v):\n%s", err, out)
	}
	if out, err := send("friend@good.example"); err != nil {
		t.Fatalf("good sender refused: %v\n%s", err, out)
	}
	msgs, err := sink.Wait(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msgs[0].Header(), "Authentication-Results: mw.test.example") {
		t.Fatalf("no Authentication-Results through the proxy:\n%s", msgs[0].Header())
	}
	if strings.Contains(pf.Log(), "spammer@bad.example") {
		t.Errorf("the refused sender reached Postfix:\n%s", pf.Log())
	}
	// XCLIENT told Postfix who the client was: Postfix logs the client's
	// HELO name rather than the proxy's.
	if !strings.Contains(pf.Log(), "helo=<client.test.example>") && !strings.Contains(msgs[0].Header(), "client.test.example") {
		t.Errorf("Postfix did not learn the real client through XCLIENT:\n%s\n%s", pf.Log(), msgs[0].Header())
	}
}

// TestKill9UnderPostfix is a fault drill: mailward killed with SIGKILL
// while Postfix sends through it. Every message must end delivered once
// or refused with a 4xx/5xx the client saw; after a restart filtering
// resumes. Nothing is accepted unchecked (milter_default_action = tempfail).
func TestKill9UnderPostfix(t *testing.T) {
	testenv.Require(t, "postfix")
	testenv.Require(t, "swaks")
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg := writeFile(t, dir, "mailward.yaml", baseConfig(t, addr)+"admin:\n  listen: \"\"\n")
	p := startProc(t, cfg, addr)
	sink := testenv.StartSink(t)
	main := testenv.ReadMainCf(t, "../../examples/postfix/main.cf.milter")
	main["smtpd_milters"] = "inet:" + addr
	pf := testenv.StartPostfix(t, testenv.PostfixConfig{RelayTo: sink.Addr(), Main: main})

	type result struct {
		n    int
		code string // "250", or the refusal code the client saw
	}
	results := make(chan result, 64)
	var wg sync.WaitGroup
	send := func(n int) {
		defer wg.Done()
		out, err := testenv.Swaks(t, pf.SMTPAddr(), "--from", "friend@good.example",
			"--to", "bob@rcpt.example", "--header", fmt.Sprintf("Subject: drill %d", n))
		switch {
		case err == nil:
			results <- result{n, "250"}
		case strings.Contains(out, "<** 4"):
			results <- result{n, "4xx"}
		case strings.Contains(out, "<** 5"):
			results <- result{n, "5xx"}
		default:
			t.Errorf("message %d: neither accepted nor refused with a code:\n%s", n, out)
		}
	}
	const total = 24
	for n := 0; n < total; n++ {
		wg.Add(1)
		go send(n)
		if n == total/3 {
			// Kill it once mail is flowing, with more in flight.
			if _, err := sink.Wait(2, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			p.cmd.Process.Signal(syscall.SIGKILL)
		}
		time.Sleep(30 * time.Millisecond)
	}
	wg.Wait()
	close(results)
	accepted, refused := map[string]bool{}, 0
	for r := range results {
		if r.code == "250" {
			accepted[fmt.Sprintf("drill %d", r.n)] = true
		} else {
			refused++
		}
	}
	if refused == 0 || len(accepted) == 0 {
		t.Fatalf("%d accepted, %d refused: the drill needs both to prove anything", len(accepted), refused)
	}
	msgs, _ := sink.Wait(len(accepted), 30*time.Second)
	time.Sleep(500 * time.Millisecond) // anything extra would arrive now
	msgs = sink.Messages()
	seen := map[string]int{}
	for _, m := range msgs {
		for _, line := range strings.Split(m.Header(), "\r\n") {
			if s, ok := strings.CutPrefix(line, "Subject: "); ok {
				seen[s]++
			}
		}
		if !strings.Contains(m.Header(), "Authentication-Results: mw.test.example") {
			t.Errorf("a message was delivered unchecked:\n%s", m.Header())
		}
	}
	for s := range accepted {
		if seen[s] != 1 {
			t.Errorf("%s was accepted with 250 but delivered %d times", s, seen[s])
		}
	}
	if len(msgs) != len(accepted) {
		t.Errorf("sink has %d messages, clients saw %d accepted", len(msgs), len(accepted))
	}
	t.Logf("sent %d: %d accepted and delivered once, %d refused with a code", total, len(accepted), refused)

	// Restarted, mailward filters again.
	startProc(t, cfg, addr)
	out, err := testenv.Swaks(t, pf.SMTPAddr(), "--from", "friend@good.example",
		"--to", "bob@rcpt.example", "--header", "Subject: after restart")
	if err != nil {
		t.Fatalf("after restart: %v\n%s", err, out)
	}
	if _, err := sink.Wait(len(msgs)+1, 20*time.Second); err != nil {
		t.Fatal(err)
	}
}
