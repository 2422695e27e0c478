package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/proxy/milter"
)

// samePathRules decide on a folded header and on the body's end: what
// `rules test`, `check` and a front answer must agree on.
const samePathRules = `rules:
  - name: tagged
    when: '"alpha beta" in headers["x-tag"]'
    action: reject
    code: "550 5.7.1"
    message: tagged
  - name: long-subject
    when: 'subject == "one two three"'
    action: tempfail
    code: "451 4.7.1"
tests:
  - name: folded tag
    eml: tagged.eml
    expect: {action: reject, stage: data, code: "550 5.7.1", rules: [tagged]}
  - name: folded tag, CRLF copy
    eml: tagged-crlf.eml
    expect: {action: reject, stage: data, code: "550 5.7.1", rules: [tagged]}
  - name: folded subject
    eml: subject.eml
    expect: {action: tempfail, stage: data, code: "451 4.7.1", rules: [long-subject]}
  - name: plain
    eml: plain.eml
    expect: {action: accept, stage: eom, not_rules: [tagged, long-subject]}
`

var samePathMessages = map[string]string{
	"tagged.eml":  "From: a@shop.example\nX-Tag: alpha\n beta\nSubject: hi\n\nbody\n",
	"subject.eml": "From: a@shop.example\nSubject: one\n two\n three\n\nbody\n",
	"plain.eml":   "From: a@shop.example\nX-Tag: alpha\nSubject: hi\n\nbody\n",
}

// TestSameVerdictEverywhere runs the same messages through `rules test`,
// `mailward check` and the milter front, and compares what they decide.
func TestSameVerdictEverywhere(t *testing.T) {
	dns := testenv.StartDNS(t, ". 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300\n")
	dir := t.TempDir()
	writeFile(t, dir, "r.yaml", samePathRules)
	msgs := map[string]string{"tagged-crlf.eml": strings.ReplaceAll(samePathMessages["tagged.eml"], "\n", "\r\n")}
	for name, m := range samePathMessages {
		msgs[name] = m
	}
	for name, m := range msgs {
		writeFile(t, dir, name, m)
	}
	cfgPath := writeFile(t, dir, "mailward.yaml", "hostname: mw.test\ndns:\n  servers: ["+dns.Addr()+"]\nrules:\n  files: [r.yaml]\n")

	var out, errb bytes.Buffer
	if code := run([]string{"rules", "test", "--config", cfgPath}, &out, &errb); code != 0 {
		t.Fatalf("rules test: exit %d\n%s%s", code, out.String(), errb.String())
	}

	cfg, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c := cache.NewMemory(cache.DefaultConfig(), cache.Options{Logger: log})
	defer c.Close()
	p, err := buildParts(context.Background(), cfg, c, log)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	engine := policy.NewEngine(cfg.settings(), p.checker, p.ruleSet(), log)
	srv := milter.New(engine, 0, log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	client := gomilter.NewClientWithOptions("tcp", ln.Addr().String(), gomilter.ClientOptions{
		Dialer: &net.Dialer{Timeout: 5 * time.Second}, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		ActionMask: gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptQuarantine, ProtocolMask: 0x1fffff,
	})

	want := map[string]string{
		"tagged.eml": "reject 550", "tagged-crlf.eml": "reject 550", "subject.eml": "tempfail 451", "plain.eml": "accept",
	}
	for name, m := range msgs {
		out.Reset()
		errb.Reset()
		if code := run([]string{"check", "--config", cfgPath, "--ip", "192.0.2.10", "--helo", "mail.shop.example",
			"--from", "a@shop.example", "--rcpt", "b@rcpt.example", "--json", dir + "/" + name}, &out, &errb); code != 0 {
			t.Fatalf("check %s: exit %d: %s", name, code, errb.String())
		}
		var rep struct {
			Action   string `json:"action"`
			SMTPCode int    `json:"smtp_code"`
		}
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatal(err)
		}
		checkSaid := strings.TrimSuffix(rep.Action+" "+itoa(rep.SMTPCode), " 0")
		milterSaid := milterVerdict(t, client, m)
		if checkSaid != want[name] || milterSaid != want[name] {
			t.Errorf("%s: check says %q, milter says %q, rules test and want %q", name, checkSaid, milterSaid, want[name])
		}
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// milterVerdict sends m as Postfix would (header values after the colon,
// folds as LF and white space) and returns "action code".
func milterVerdict(t *testing.T, client *gomilter.Client, m string) string {
	t.Helper()
	s, err := client.Session()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	final := func(a *gomilter.Action, err error) (string, bool) {
		if err != nil {
			t.Fatal(err)
		}
		switch a.Code {
		case gomilter.ActContinue:
			return "", false
		case gomilter.ActReplyCode:
			if a.SMTPCode/100 == 4 {
				return "tempfail " + itoa(a.SMTPCode), true
			}
			return "reject " + itoa(a.SMTPCode), true
		case gomilter.ActAccept:
			return "accept", true
		}
		return string(rune(a.Code)), true
	}
	if v, done := final(s.Conn("mail.shop.example", gomilter.FamilyInet, 25, netip.MustParseAddr("192.0.2.10").String())); done {
		return v
	}
	if v, done := final(s.Helo("mail.shop.example")); done {
		return v
	}
	if v, done := final(s.Mail("<a@shop.example>", nil)); done {
		return v
	}
	if v, done := final(s.Rcpt("<b@rcpt.example>", nil)); done {
		return v
	}
	br := bufio.NewReader(strings.NewReader(m))
	hs, err := policy.ReadHeader(br)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		v := strings.ReplaceAll(h.Value, "\r\n", "\n")
		if !s.ProtocolOption(gomilter.OptHeaderLeadingSpace) {
			v = strings.TrimPrefix(v, " ")
		}
		if v, done := final(s.HeaderField(h.Name, v)); done {
			return v
		}
	}
	if v, done := final(s.HeaderEnd()); done {
		return v
	}
	body, _ := io.ReadAll(br)
	if v, done := final(s.BodyChunk(bytes.ReplaceAll(bytes.ReplaceAll(body, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n")))); done {
		return v
	}
	_, a, err := s.End()
	v, _ := final(a, err)
	return v
}
