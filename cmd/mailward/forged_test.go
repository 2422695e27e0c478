package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/testenv"
)

// forgedResults claims our authserv-id for a bank the sender is not.
const forgedResults = "Authentication-Results: mw.test.example; dkim=pass header.d=bank.test; dmarc=pass header.from=bank.test"

// TestEarlyAcceptRemovesForgedResults runs the binary with the example
// allowlist (partner-domain and authenticated-user accept at MAIL, before
// the message) as a milter behind Postfix and as the inline proxy in
// front of it. Each message carries an Authentication-Results forged with
// our authserv-id: none may arrive with it, and each gets ours.
func TestEarlyAcceptRemovesForgedResults(t *testing.T) {
	testenv.Require(t, "postfix")
	testenv.Require(t, "swaks")
	dir := t.TempDir()
	allowlist, err := filepath.Abs("../../examples/rules/00-allowlist.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dns := testenv.StartDNS(t, fixtureZone+`partner.example. IN TXT "v=spf1 ip4:127.0.0.0/8 -all"`+"\n")
	sink := testenv.StartSink(t)
	milterAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	proxyAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	upstream := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))

	main := testenv.ReadMainCf(t, "../../examples/postfix/main.cf.milter")
	main["smtpd_milters"] = "inet:" + milterAddr
	// swaks tells Postfix a SASL login with XCLIENT, as a submission
	// front end would: the milter sees it as {auth_authen}.
	main["smtpd_authorized_xclient_hosts"] = "127.0.0.0/8"
	master := testenv.ReadMasterCf(t, "../../examples/postfix/master.cf.proxy")
	// The example's listener turns the milter off: mail through the proxy
	// is filtered once.
	master[0] = strings.Replace(master[0], "127.0.0.1:10025", upstream, 1)
	pf := testenv.StartPostfix(t, testenv.PostfixConfig{RelayTo: sink.Addr(), Main: main, Master: master})

	cfg := writeFile(t, dir, "mailward.yaml", "hostname: mw.test.example\n"+
		"milter:\n  listen: inet:"+milterAddr+"\n"+
		"dns:\n  servers: [\""+dns.Addr()+"\"]\n"+
		"admin:\n  listen: \"\"\n"+
		"rules:\n  files: [\""+allowlist+"\"]\n"+
		"smtp:\n  listen: "+proxyAddr+"\n  upstream: "+upstream+"\n  upstream_tls: \"off\"\n  trusted_networks: [127.0.0.0/8]\n")
	p := startProc(t, cfg, proxyAddr)

	cases := []struct {
		name, addr, from, rule string
		args                   []string
	}{
		{"milter partner-domain", pf.SMTPAddr(), "billing@partner.example", "partner-domain", nil},
		{"milter authenticated-user", pf.SMTPAddr(), "alice@good.example", "authenticated-user", []string{"--xclient-login", "alice"}},
		{"proxy partner-domain", proxyAddr, "billing@partner.example", "partner-domain", nil},
		{"proxy authenticated-user", proxyAddr, "alice@good.example", "authenticated-user", []string{"--xclient-login", "alice"}},
	}
	for i, c := range cases {
		subject := fmt.Sprintf("early accept %d", i)
		args := append([]string{"--from", c.from, "--to", "bob@rcpt.example",
			"--header", "Subject: " + subject, "--add-header", forgedResults}, c.args...)
		if out, err := testenv.Swaks(t, c.addr, args...); err != nil {
			t.Fatalf("%s: swaks: %v\n%s", c.name, err, out)
		}
		msgs, err := sink.Wait(i+1, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var h string
		for _, m := range msgs {
			if strings.Contains(m.Header(), "Subject: "+subject) {
				h = m.Header()
			}
		}
		if h == "" {
			t.Fatalf("%s: message not delivered", c.name)
		}
		if strings.Contains(h, "header.d=bank.test") {
			t.Errorf("%s: the forged Authentication-Results arrived:\n%s", c.name, h)
		}
		if !strings.Contains(h, "Authentication-Results: mw.test.example;") {
			t.Errorf("%s: no Authentication-Results of ours:\n%s", c.name, h)
		}
	}
	// Each message was accepted by its allowlist rule, before its content:
	// the path under test, not the usual end-of-message one.
	lines := strings.Split(p.out.String(), "\n")
	for _, c := range cases {
		front := strings.Fields(c.name)[0]
		if front == "proxy" {
			front = "smtp"
		}
		found := false
		for _, l := range lines {
			found = found || strings.Contains(l, "front="+front) && strings.Contains(l, "stage=mail") && strings.Contains(l, c.rule+":accept")
		}
		if !found {
			t.Errorf("%s: no transaction accepted at MAIL by rule %s on the %s front", c.name, c.rule, front)
		}
	}
}

// check answers an early accept as the fronts do: with the forged
// Authentication-Results removed and ours added.
func TestCheckEarlyAcceptShowsEdits(t *testing.T) {
	dir := t.TempDir()
	allowlist, err := filepath.Abs("../../examples/rules/00-allowlist.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dns := testenv.StartDNS(t, fixtureZone+`partner.example. IN TXT "v=spf1 ip4:127.0.0.0/8 -all"`+"\n")
	cfg := writeFile(t, dir, "mailward.yaml", "hostname: mw.test.example\nrules:\n  files: [\""+allowlist+"\"]\n")
	eml := writeFile(t, dir, "m.eml", forgedResults+"\r\nFrom: <ceo@bank.test>\r\nSubject: pay\r\n\r\nPay.\r\n")
	var out, errb bytes.Buffer
	code := run([]string{"check", "--config", cfg, "--dns", dns.Addr(), "--ip", "127.0.0.1", "--helo", "client.test.example",
		"--from", "billing@partner.example", "--rcpt", "bob@rcpt.example", "--json", eml}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rep struct {
		Action, Stage string
		Added         []struct{ Name, Value string } `json:"headers_added"`
		Removed       []struct {
			Name  string
			Index int
		} `json:"headers_removed"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out.String())
	}
	if rep.Action != "accept" || rep.Stage != "mail" {
		t.Fatalf("action %s at %s; want the allowlist's accept at mail:\n%s", rep.Action, rep.Stage, out.String())
	}
	if len(rep.Removed) != 1 || rep.Removed[0].Name != "Authentication-Results" || rep.Removed[0].Index != 1 {
		t.Errorf("headers_removed %+v; want the forged Authentication-Results", rep.Removed)
	}
	if len(rep.Added) == 0 || rep.Added[0].Name != "Authentication-Results" || !strings.HasPrefix(rep.Added[0].Value, "mw.test.example;") {
		t.Errorf("headers_added %+v; want ours", rep.Added)
	}
}
