package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailward/mailward/internal/testenv"
)

func signedMessage(t *testing.T, key ed25519.PrivateKey, from string) string {
	t.Helper()
	msg := "From: Alice <" + from + ">\r\nTo: bob@rcpt.example\r\nSubject: hello\r\nMessage-ID: <1@shop.example>\r\n\r\nHello Bob.\r\n"
	return testenv.SignDKIM(t, msg, "shop.example", "s1", key)
}

func TestCheckJSON(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	zone := `
. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300
10.2.0.192.in-addr.arpa. IN PTR mail.shop.example.
mail.shop.example. IN A 192.0.2.10
shop.example. IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
s1._domainkey.shop.example. IN TXT "v=DKIM1; k=ed25519; p=` + base64.StdEncoding.EncodeToString(pub) + `"
_dmarc.shop.example. IN TXT "v=DMARC1; p=reject"
`
	dns := testenv.StartDNS(t, zone)
	dir := t.TempDir()
	writeFile(t, dir, "r.yaml", "rules:\n  - name: no-abuse\n    when: rcpt == \"abuse@rcpt.example\"\n    action: reject\n    code: \"550 5.1.1\"\n")
	cfg := writeFile(t, dir, "mailward.yaml", "hostname: mw.test\nrules:\n  files: [r.yaml]\ndmarc:\n  enforce: true\n")
	eml := writeFile(t, dir, "m.eml", signedMessage(t, key, "alice@shop.example"))

	var out, errb bytes.Buffer
	code := run([]string{"check", "--config", cfg, "--dns", dns.Addr(), "--ip", "192.0.2.10", "--helo", "mail.shop.example",
		"--from", "alice@shop.example", "--rcpt", "bob@rcpt.example", "--rcpt", "abuse@rcpt.example", "--json", eml}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rep map[string]any
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out.String())
	}
	get := func(path ...string) any {
		var v any = rep
		for _, p := range path {
			switch x := v.(type) {
			case map[string]any:
				v = x[p]
			case []any:
				v = x[0].(map[string]any)[p]
			}
		}
		return v
	}
	for _, c := range []struct {
		path []string
		want any
	}{
		{[]string{"action"}, "accept"},
		{[]string{"stage"}, "eom"},
		{[]string{"spf", "result"}, "pass"},
		{[]string{"spf", "domain"}, "shop.example"},
		{[]string{"spf_helo", "result"}, "none"},
		{[]string{"dkim", "result"}, "pass"},
		{[]string{"dkim", "domain"}, "shop.example"},
		{[]string{"dkim", "selector"}, "s1"},
		{[]string{"dmarc", "result"}, "pass"},
		{[]string{"dmarc", "policy"}, "reject"},
		{[]string{"dmarc", "domain"}, "shop.example"},
		{[]string{"iprev", "result"}, "pass"},
		{[]string{"iprev", "ptr"}, "mail.shop.example"},
		{[]string{"rules"}, []any{"no-abuse"}},
		{[]string{"headers_added", "name"}, "Authentication-Results"},
	} {
		got, _ := json.Marshal(get(c.path...))
		want, _ := json.Marshal(c.want)
		if string(got) != string(want) {
			t.Errorf("%s = %s, want %s", strings.Join(c.path, "."), got, want)
		}
	}
	rcpts, _ := json.Marshal(rep["rcpts"])
	if !strings.Contains(string(rcpts), `{"action":"reject","code":550,"rcpt":"abuse@rcpt.example"}`) {
		t.Errorf("abuse@ not refused: %s", rcpts)
	}

	// The same message from an unaligned sender with the signature broken:
	// DMARC fails under p=reject and enforcement rejects it.
	out.Reset()
	forged := strings.Replace(signedMessage(t, key, "alice@shop.example"), "Hello Bob.", "Pay me.", 1)
	writeFile(t, dir, "forged.eml", forged)
	code = run([]string{"check", "--config", cfg, "--dns", dns.Addr(), "--ip", "198.51.100.7", "--from", "x@elsewhere.example", "--json", dir + "/forged.eml"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	json.Unmarshal(out.Bytes(), &rep)
	if rep["action"] != "reject" || rep["smtp_code"] != 550.0 || rep["enhanced_code"] != "5.7.1" || get("dmarc", "result") != "fail" {
		t.Errorf("forged message: %s", out.String())
	}
}

func TestCheckBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"check", "--ip", "not-an-ip", "x.eml"},
		{"check", "--ip", "192.0.2.1", "/nonexistent/m.eml"},
		{"check", "--bogus"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 || errb.Len() == 0 {
			t.Errorf("%v: exit %d, stderr %q; want 2 and a message", args, code, errb.String())
		}
	}
}

// A signature with "simple" header canonicalization over fields written
// without the space after the colon, or with two, verifies: the fields
// reach the verifier as written.
func TestCheckDKIMSimpleHeaders(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	dns := testenv.StartDNS(t, `
. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300
s1._domainkey.shop.example. IN TXT "v=DKIM1; k=ed25519; p=`+base64.StdEncoding.EncodeToString(pub)+`"
`)
	msg := "From:Alice <alice@shop.example>\r\nSubject:  two spaces\r\nMessage-ID: <2@shop.example>\r\n\r\nHello.\r\n"
	var signed bytes.Buffer
	if err := dkim.Sign(&signed, strings.NewReader(msg), &dkim.SignOptions{
		Domain: "shop.example", Selector: "s1", Signer: key,
		HeaderKeys:             []string{"From", "Subject", "Message-ID"},
		HeaderCanonicalization: dkim.CanonicalizationSimple,
		BodyCanonicalization:   dkim.CanonicalizationSimple,
	}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := writeFile(t, dir, "mailward.yaml", "hostname: mw.test\n")
	eml := writeFile(t, dir, "m.eml", signed.String())
	var out, errb bytes.Buffer
	if code := run([]string{"check", "--config", cfg, "--dns", dns.Addr(), "--ip", "192.0.2.10", "--from", "alice@shop.example", "--json", eml}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rep struct {
		DKIM []struct{ Result, Selector string } `json:"dkim"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || len(rep.DKIM) != 1 || rep.DKIM[0].Result != "pass" {
		t.Fatalf("want dkim pass for a simple/simple signature (%v):\n%s", err, out.String())
	}
}

// A saved message verifies the same with LF and with CRLF line ends, and
// with a body longer than one read.
func TestCheckCRLFMessage(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	dns := testenv.StartDNS(t, `
. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300
s1._domainkey.shop.example. IN TXT "v=DKIM1; k=ed25519; p=`+base64.StdEncoding.EncodeToString(pub)+`"
`)
	body := strings.Repeat("A line of the body, long enough to matter.\r\n", 2000) + "\r\n\r\n"
	dir := t.TempDir()
	cfg := writeFile(t, dir, "mailward.yaml", "hostname: mw.test\n")
	for _, canon := range []dkim.Canonicalization{dkim.CanonicalizationSimple, dkim.CanonicalizationRelaxed} {
		msg := "From: Alice <alice@shop.example>\r\nSubject: a subject\r\n folded\r\nMessage-ID: <3@shop.example>\r\n\r\n" + body
		var signed bytes.Buffer
		if err := dkim.Sign(&signed, strings.NewReader(msg), &dkim.SignOptions{
			Domain: "shop.example", Selector: "s1", Signer: key,
			HeaderKeys:             []string{"From", "Subject", "Message-ID"},
			HeaderCanonicalization: canon, BodyCanonicalization: canon,
		}); err != nil {
			t.Fatal(err)
		}
		lf := strings.ReplaceAll(signed.String(), "\r\n", "\n")
		for name, m := range map[string]string{"lf": lf, "crlf": strings.ReplaceAll(lf, "\n", "\r\n")} {
			eml := writeFile(t, dir, name+".eml", m)
			var out, errb bytes.Buffer
			if code := run([]string{"check", "--config", cfg, "--dns", dns.Addr(), "--ip", "192.0.2.10", "--from", "alice@shop.example", "--json", eml}, &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			var rep struct {
				DKIM []struct{ Result, Reason string } `json:"dkim"`
			}
			if err := json.Unmarshal(out.Bytes(), &rep); err != nil || len(rep.DKIM) != 1 || rep.DKIM[0].Result != "pass" {
				t.Errorf("%s, %s: want dkim pass (%v): %+v", canon, name, err, rep.DKIM)
			}
		}
	}
}

// With DNS down, reverse DNS is a temperror: neither the shipped rules
// nor a rule written with !fcrdns may bounce the client with a 5xx.
func TestCheckDNSDownNeverBounces(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "old.yaml", "rules:\n  - name: dynamic-client\n    when: '!fcrdns && helo matches \"pool\"'\n    action: reject\n    code: \"550 5.7.1\"\n")
	eml := writeFile(t, dir, "m.eml", "From: a@shop.example\nSubject: hi\n\nbody\n")
	for _, rules := range []string{"[../../examples/rules/*.yaml]", "[" + dir + "/old.yaml]"} {
		wd, _ := os.Getwd()
		cfg := writeFile(t, dir, "mailward.yaml", "hostname: mw.test\nrules:\n  files: "+strings.ReplaceAll(rules, "../..", filepath.Join(wd, "../.."))+"\n")
		var out, errb bytes.Buffer
		// Port 1 on loopback: nothing listens, every query fails at once.
		if code := run([]string{"check", "--config", cfg, "--dns", "127.0.0.1:1", "--ip", "203.0.113.5", "--helo", "dyn-1.pool.example", "--json", eml}, &out, &errb); code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		var rep struct {
			Action   string `json:"action"`
			SMTPCode int    `json:"smtp_code"`
			IPRev    struct{ Result string }
		}
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatal(err)
		}
		if rep.IPRev.Result != "temperror" || rep.SMTPCode/100 == 5 {
			t.Errorf("rules %s: iprev %s, %s %d; want no 5xx", rules, rep.IPRev.Result, rep.Action, rep.SMTPCode)
		}
		if strings.Contains(rules, "old.yaml") && (rep.Action != "tempfail" || rep.SMTPCode != 451) {
			t.Errorf("!fcrdns rule on temperror: %s %d, want tempfail 451", rep.Action, rep.SMTPCode)
		}
	}
}

// --explain tells a rule cut off by an earlier one of its stage from a
// rule whose stage filtering never reached.
func TestCheckExplainCutOff(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "r.yaml", `rules:
  - name: first
    when: helo == "x.example"
    action: reject
  - name: second
    when: helo != ""
    action: reject
  - name: later
    when: mail_from == "a@b.example"
    action: reject
`)
	cfg := writeFile(t, dir, "mailward.yaml", "hostname: mw.test\nrules:\n  files: [r.yaml]\n")
	eml := writeFile(t, dir, "m.eml", "Subject: hi\n\nbody\n")
	var out, errb bytes.Buffer
	if code := run([]string{"check", "--config", cfg, "--dns", "127.0.0.1:1", "--ip", "192.0.2.1", "--helo", "x.example", "--explain", eml}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"not run: rule first decided the stage first", "later                    mail  reject     not reached"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("explanation lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "second                   helo  reject     not reached") {
		t.Errorf("second called not reached:\n%s", out.String())
	}
}

// A rule on a domain list sees the sender's domain listed (it runs at
// mail, when that answer is in), and rules read the names the config
// gives a list's codes.
func TestCheckDNSLists(t *testing.T) {
	dns := testenv.StartDNS(t, `
. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300
spam.example.dbl.test. IN A 127.0.1.2
99.2.0.192.zen.test. IN A 127.0.0.2
`)
	dir := t.TempDir()
	writeFile(t, dir, "r.yaml", `rules:
  - name: sbl
    when: '"sbl" in dnsbl_names["zen.test"]'
    action: reject
    code: "554 5.7.1"
  - name: domain-listed
    when: '"dbl.test" in dnsbl'
    action: reject
`)
	cfg := writeFile(t, dir, "mailward.yaml", `hostname: mw.test
rules:
  files: [r.yaml]
dnsbl:
  zones: [{zone: zen.test, codes: {127.0.0.2: sbl}}]
  domain_zones: [{zone: dbl.test}]
`)
	eml := writeFile(t, dir, "m.eml", "Subject: hi\n\nbody\n")
	for _, c := range []struct{ ip, from, want string }{
		{"192.0.2.10", "x@spam.example", "reject mail domain-listed"},
		{"192.0.2.99", "x@ok.example", "reject connect sbl"},
		{"192.0.2.10", "x@ok.example", "accept eom "},
	} {
		var out, errb bytes.Buffer
		if code := run([]string{"check", "--config", cfg, "--dns", dns.Addr(), "--ip", c.ip, "--helo", "mail.example", "--from", c.from, "--json", eml}, &out, &errb); code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		var rep struct {
			Action, Stage string
			Rules         []string
		}
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatal(err)
		}
		if got := rep.Action + " " + rep.Stage + " " + strings.Join(rep.Rules, ","); got != c.want {
			t.Errorf("%s from %s: %s, want %s", c.ip, c.from, got, c.want)
		}
	}
}

// TestCheckFlagsMessagesAndExitCode: flags may follow the messages;
// several messages are checked in one run; --auth-user, --tls and
// --client-name reach the rules; --exit-code tells verdicts apart.
func TestCheckFlagsMessagesAndExitCode(t *testing.T) {
	dns := testenv.StartDNS(t, ". 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300\n")
	dir := t.TempDir()
	writeFile(t, dir, "r.yaml", `rules:
  - name: authenticated-over-tls
    when: auth_user == "alice" && tls
    action: accept
  - name: greylist-me
    when: subject == "later"
    action: tempfail
  - name: no-spam
    when: subject == "spam"
    action: reject
`)
	cfg := writeFile(t, dir, "mailward.yaml", "hostname: mw.test\nrules:\n  files: [r.yaml]\n")
	spam := writeFile(t, dir, "spam.eml", "From alice@shop.example Thu Dec  3 07:00:00 2026\nFrom: a@shop.example\nSubject: spam\n\nbuy\n")
	later := writeFile(t, dir, "later.eml", "From: a@shop.example\nSubject: later\n\nhi\n")
	check := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(append([]string{"check", "--config", cfg, "--dns", dns.Addr(), "--ip", "192.0.2.10"}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}
	// A flag after the file is a flag, not a second message.
	code, out, errb := check(spam, "--json")
	var rep checkVerdict
	if err := json.Unmarshal([]byte(out), &rep); code != 0 || err != nil || rep.Action != "reject" {
		t.Fatalf("check FILE --json: exit %d, %v\n%s%s", code, err, out, errb)
	}
	if code, _, _ := check(spam, "--exit-code"); code != 5 {
		t.Errorf("reject with --exit-code: exit %d, want 5", code)
	}
	if code, _, _ := check("--exit-code", later); code != 4 {
		t.Errorf("tempfail with --exit-code: exit %d, want 4", code)
	}
	if code, out, _ := check(spam, "--exit-code", "--auth-user", "alice", "--tls", "--client-name", "mail.shop.example"); code != 0 || !strings.Contains(out, "authenticated-over-tls") {
		t.Errorf("--auth-user and --tls: exit %d\n%s", code, out)
	}
	if code, _, _ := check(spam, "--exit-code", "--auth-user", "alice"); code != 5 {
		t.Errorf("--auth-user without --tls: exit %d, want 5", code)
	}
	// Several messages, each reported; the exit status is the highest.
	code, out, _ = check("--json", "--exit-code", later, spam)
	dec := json.NewDecoder(strings.NewReader(out))
	var files []string
	for dec.More() {
		var r checkVerdict
		if err := dec.Decode(&r); err != nil {
			t.Fatal(err)
		}
		files = append(files, r.File+"="+r.Action)
	}
	if want := later + "=tempfail " + spam + "=reject"; strings.Join(files, " ") != want || code != 5 {
		t.Errorf("two messages: exit %d, %v; want 5, %s", code, files, want)
	}
	if _, out, _ := check(later, spam); !strings.Contains(out, "==> "+spam+" <==") {
		t.Errorf("text output of two messages names neither:\n%s", out)
	}
}

// checkVerdict is the part of check --json a script reads first.
type checkVerdict struct {
	File   string `json:"file"`
	Action string `json:"action"`
}

// TestCheckGivesUpOnASilentDNSServer: a DNS server that never answers
// costs one query's timeout, not one per stage.
func TestCheckGivesUpOnASilentDNSServer(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close() // it reads nothing and answers nothing
	dir := t.TempDir()
	cfg := writeFile(t, dir, "mailward.yaml", "hostname: mw.test\ndns:\n  timeout: 500ms\n  retries: -1\n")
	eml := writeFile(t, dir, "m.eml", "From: a@shop.example\nSubject: hi\n\nbody\n")
	var out, errb bytes.Buffer
	begin := time.Now()
	code := run([]string{"check", "--config", cfg, "--dns", pc.LocalAddr().String(), "--ip", "192.0.2.10", "--helo", "mail.shop.example",
		"--from", "a@shop.example", "--json", eml}, &out, &errb)
	took := time.Since(begin)
	var rep checkVerdict
	if err := json.Unmarshal(out.Bytes(), &rep); code != 0 || err != nil || rep.Action != "tempfail" {
		t.Fatalf("exit %d, %v: %s%s", code, err, out.String(), errb.String())
	}
	// Asked at every stage, the server would cost 500ms four times over.
	if took > 1500*time.Millisecond {
		t.Errorf("check took %v with a silent DNS server and a 500ms timeout", took)
	}
}
