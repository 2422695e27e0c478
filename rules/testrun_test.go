package rules

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
)

const testedRules = `
lists:
  partners: {file: partners.txt, type: domain}
rules:
  - name: partner
    when: in_list("partners", mail_from_domain) && spf == "pass"
    action: accept
  - name: no-rdns-dyn-helo
    when: '!fcrdns && helo matches "(?i)dyn|pool"'
    action: reject
    code: "550 5.7.1"
    message: "dynamic client {{ip}}"
  - name: dmarc-reject
    when: dmarc.result == "fail" && dmarc.policy == "reject"
    action: reject
    message: "DMARC policy of {{dmarc.domain}} says reject"
  - name: spamtrap
    when: rcpt == "trap@example.net"
    action: reject
  - name: exe
    when: any(attachments, lower(.name) endsWith ".exe")
    action: reject
  - name: listed
    when: '"zen.example" in dnsbl'
    stage: mail
    action: score
    score: 4
  - name: caps
    when: subject != "" && subject == upper(subject)
    action: score
    score: 2
  - name: tag
    when: score >= 2
    action: add_header
    header: {name: X-Spam-Score, value: "{{score}}"}
tests:
  - name: partner passes
    mail_from: bob@partner.example
    spf: pass
    helo: mail.partner.example
    dnsbl: {zen.example: [127.0.0.2]}
    expect: {action: accept, stage: mail, rules: [partner], not_rules: [listed]}
  - name: dynamic client refused
    helo: dyn-1.pool.example
    ptr: ""
    expect: {action: reject, stage: helo, code: "550 5.7.1", message: "dynamic client 192.0.2.1"}
  - name: dmarc
    mail_from: x@bank.example
    headers: {From: x@bank.example, Subject: hello}
    dmarc: {result: fail, policy: reject, domain: bank.example}
    expect: {action: reject, stage: eom, message: "DMARC policy of bank.example says reject"}
  - name: this one fails
    mail_from: x@example.org
    spf: softfail
    expect: {action: reject, rules: [caps], score: 3}
`

func TestRunTests(t *testing.T) {
	dir := testenv.WriteFiles(t, map[string]string{
		"rules.yaml":   testedRules,
		"partners.txt": "partner.example\n",
		"rules_test.yaml": `
tests:
  - name: one recipient is a trap
    rcpt: [a@example.net, trap@example.net]
    expect: {action: accept, rules: [spamtrap]}
  - name: only the trap
    rcpt: trap@example.net
    expect: {action: reject, stage: rcpt}
  - name: executable
    eml: mail/exe.eml
    expect: {action: reject, stage: eom, rules: [exe]}
  - name: scored
    dnsbl: {zen.example: [127.0.0.2]}
    headers:
      - "Subject: BUY NOW"
    expect: {action: accept, score: 6, rules: [listed, caps, tag], headers: {X-Spam-Score: "6"}}
`,
		"mail/exe.eml": "From: a@example.org\nSubject: invoice\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nsee attached\n--b\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename=\"Invoice.EXE\"\n\nMZ\n--b--\n",
	})
	results, err := RunTests(context.Background(), []string{filepath.Join(dir, "rules.yaml")}, TestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]TestResult{}
	var names []string
	for _, r := range results {
		byName[r.Name] = r
		names = append(names, r.Name)
	}
	if len(results) != 8 {
		t.Fatalf("ran %v", names)
	}
	for name, r := range byName {
		if name == "this one fails" {
			continue
		}
		if !r.Passed {
			t.Errorf("%s failed: %v (got %s at %s, matched %v)", name, r.Diffs, r.Action, r.Stage, r.Matched)
		}
	}
	fail := byName["this one fails"]
	want := []string{
		"action: got accept at eom, want reject",
		"rule caps did not match (matched: none)",
		"score: got 0, want 3 (matched: none)",
	}
	if fail.Passed || !slices.Equal(fail.Diffs, want) {
		t.Errorf("failing test: passed=%v diffs=%q", fail.Passed, fail.Diffs)
	}
	if fail.Pos.Line != 52 || fail.Pos.Col != 11 {
		t.Errorf("failing test position %v", fail.Pos)
	}
}

func TestRunTestsUsesEngineSettings(t *testing.T) {
	dir := testenv.WriteFiles(t, map[string]string{"r.yaml": `
rules:
  - name: bad-helo
    when: helo == "bad"
    stage: mail
    action: score
    score: 6
tests:
  - name: over the line
    helo: bad
    expect: {action: reject, stage: eom, score: 6}
  - name: dmarc enforced by the engine
    dmarc: {result: fail, policy: quarantine, domain: x.example}
    expect: {action: quarantine}
`})
	settings := policy.Settings{Thresholds: policy.Thresholds{Reject: 5}, DMARCEnforce: true}
	results, err := RunTests(context.Background(), []string{dir}, TestOptions{Settings: settings})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if !r.Passed {
			t.Errorf("%s: %v", r.Name, r.Diffs)
		}
	}
	// Without the thresholds, the same tests fail: settings matter.
	results, _ = RunTests(context.Background(), []string{dir}, TestOptions{})
	for _, r := range results {
		if r.Passed {
			t.Errorf("%s passed without the engine settings", r.Name)
		}
	}
}

func TestRunTestsBadInput(t *testing.T) {
	dir := testenv.WriteFiles(t, map[string]string{"r.yaml": `
rules:
  - {name: a, when: 'helo == "x"', action: reject}
tests:
  - name: typo
    hleo: x
    expect: {action: reject}
  - name: bad values
    ip: not-an-ip
    spf: maybe
    tls: perhaps
    expect: {action: refuse, stage: later, rules: [b], score: lots}
  - name: nothing expected
    helo: x
`})
	_, err := RunTests(context.Background(), []string{dir}, TestOptions{})
	if err == nil {
		t.Fatal("bad tests ran")
	}
	for _, want := range []string{
		`r.yaml:6:5: unknown test key "hleo" (did you mean "helo"?)`,
		`r.yaml:9:9: ip "not-an-ip" is not an address`,
		`r.yaml:10:10: spf "maybe": want one of`,
		`r.yaml:11:10: tls must be true or false`,
		`r.yaml:12:22: action "refuse"`,
		`r.yaml:12:37: unknown stage "later"`,
		`r.yaml:12:52: rules: no rule is named "b"`,
		`r.yaml:12:63: score "lots" is not a number`,
		`r.yaml:13:5: test nothing expected has no expect:`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestReadMessage(t *testing.T) {
	hs, body, err := readMessage([]byte("Subject: a\r\n b\r\nFrom: x@y\r\n\r\nline1\nline2\n"))
	if err != nil {
		t.Fatal(err)
	}
	// Raw, as a front hands them over: the engine unfolds for rules.
	if len(hs) != 2 || hs[0].Value != " a\r\n b" || hs[1] != (policy.Header{Name: "From", Value: " x@y"}) {
		t.Errorf("headers %+v", hs)
	}
	if string(body) != "line1\nline2\n" {
		t.Errorf("body %q", body)
	}
}
