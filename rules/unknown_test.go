package rules

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
)

// Rules that read what a temporary error left unknown never answer 5xx;
// rules that say what they mean for the error case, and known facts, do
// as they say.
const unknownRules = `
rules:
  - name: no-rdns
    when: '!fcrdns && helo matches "dyn"'
    action: reject
  - name: said-what-it-means
    when: 'iprev in ["fail", "permerror"] && helo matches "pool"'
    action: reject
  - name: not-on-allow-list
    when: 'not ("wl.example" in dnsbl) && helo == "strange.example"'
    action: reject
  - name: named
    when: '"sbl" in dnsbl_names["zen.example"]'
    action: reject
    code: "550 5.7.1"
  - name: list-down
    when: '"zen.example" in dnsbl_errors && helo == "note.example"'
    action: tempfail
  - name: spf-not-pass
    when: 'spf != "pass" && mail_from_domain == "bank.example"'
    action: score
    score: 6
  - name: spf-none
    when: 'spf == "none"'
    action: score
    score: 1
  - name: too-much
    when: score >= 5
    action: reject
  - name: listed
    when: '"bl.example" in dnsbl && helo == "listed.example"'
    action: reject
  - name: drop-unnamed
    when: 'ptr == "" && helo == "drop.example"'
    action: discard
tests:
  - name: a list that failed does not weaken a rule on another list
    helo: listed.example
    dnsbl: {bl.example: [127.0.0.2]}
    dnsbl_errors: {other.example: timed out}
    expect: {action: reject, stage: helo, code: 550, rules: [listed]}
  - name: nor is a message dropped on a fact a DNS failure hid
    helo: drop.example
    iprev: temperror
    expect: {action: tempfail, stage: helo, rules: [drop-unnamed]}
  - name: reverse DNS failed, the reject becomes a tempfail
    helo: dyn-1.example
    iprev: temperror
    expect: {action: tempfail, stage: helo, code: "451 4.7.1", rules: [no-rdns]}
  - name: no reverse DNS at all is refused
    helo: dyn-1.example
    iprev: permerror
    expect: {action: reject, stage: helo, code: "550 5.7.1"}
  - name: the rule that tests iprev does not match on temperror
    helo: pool-1.example
    iprev: temperror
    expect: {action: accept, not_rules: [said-what-it-means]}
  - name: an allow list that failed to answer
    helo: strange.example
    dnsbl_errors: {wl.example: timed out}
    expect: {action: tempfail, stage: helo, rules: [not-on-allow-list]}
  - name: codes by name
    dnsbl: {zen.example: [127.0.0.2]}
    dnsbl_names: {zen.example: [sbl]}
    expect: {action: reject, stage: connect, code: "550 5.7.1", rules: [named]}
  - name: rules see which list failed
    helo: note.example
    dnsbl_errors: {zen.example: SERVFAIL}
    expect: {action: tempfail, stage: helo, rules: [list-down]}
  - name: points from an SPF temperror do not bounce
    mail_from: ceo@bank.example
    spf: temperror
    expect: {action: tempfail, rules: [spf-not-pass, too-much]}
  - name: points from known facts do
    mail_from: ceo@bank.example
    spf: none
    expect: {action: reject, code: 550, rules: [spf-not-pass, spf-none, too-much]}
`

func TestUnknownFactsNeverBounce(t *testing.T) {
	dir := testenv.WriteFiles(t, map[string]string{"rules.yaml": unknownRules})
	results, err := RunTests(context.Background(), []string{filepath.Join(dir, "rules.yaml")}, TestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 10 {
		t.Fatalf("ran %d tests", len(results))
	}
	for _, r := range results {
		if !r.Passed {
			t.Errorf("%s: %v", r.Name, r.Diffs)
		}
	}
}

// The threshold of the config is the engine's: it too answers on_error
// when the score only reaches it through rules that read unknown facts.
func TestUnknownFactsThreshold(t *testing.T) {
	dir := testenv.WriteFiles(t, map[string]string{"rules.yaml": `
rules:
  - name: spf-not-pass
    when: 'spf != "pass"'
    action: score
    score: 6
tests:
  - name: temperror
    spf: temperror
    expect: {action: tempfail, stage: eom}
  - name: fail
    spf: fail
    expect: {action: reject, stage: eom}
`})
	for _, onError := range []policy.Action{policy.Tempfail, policy.Accept} {
		results, err := RunTests(context.Background(), []string{filepath.Join(dir, "rules.yaml")}, TestOptions{
			Settings: policy.Settings{OnError: onError, Thresholds: policy.Thresholds{Reject: 5}},
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range results {
			want := policy.Reject
			if r.Name == "temperror" {
				want = onError
			}
			if r.Action != want {
				t.Errorf("on_error %s, %s: got %s at %s, want %s", onError, r.Name, r.Action, r.Stage, want)
			}
		}
	}
}

func TestLintUnknownFacts(t *testing.T) {
	ps := lintOf(t, map[string]string{"r.yaml": `
rules:
  - name: a
    when: '!fcrdns'
    action: reject
  - name: b
    when: 'not ("list.example" in dnsbl) && helo == "x"'
    action: reject
  - name: c
    when: '"list.example" in dnsbl && ptr == ""'
    action: tempfail
  - name: d
    when: 'iprev == "fail" && !fcrdns'
    action: reject
  - name: e
    when: '!fcrdns && tls'
    action: reject
    mode: monitor
  - name: f
    when: 'not ("multi.example" in uribl) && size > 100'
    action: reject
  - name: g
    when: '"multi.example" in uribl'
    action: reject
`}, LintOptions{}, "r.yaml")
	if !hasProblem(ps, "r.yaml:4:11", true, "rule a rejects on fcrdns") {
		t.Errorf("no warning for a: %v", ps)
	}
	if !hasProblem(ps, "r.yaml:7:11", true, "rule b rejects when a zone is not in dnsbl") {
		t.Errorf("no warning for b: %v", ps)
	}
	if !hasProblem(ps, "r.yaml:20:11", true, "rule f rejects when a zone is not in uribl, which is also the case when that list's look-up failed; test uribl_errors too") {
		t.Errorf("no warning for f: %v", ps)
	}
	if len(ps) != 3 {
		t.Errorf("want 3 warnings, got %v", ps)
	}
}
