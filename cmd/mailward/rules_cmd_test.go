package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mailward/mailward/internal/testenv"
)

func runRules(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = runRulesCommand(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

const cmdRules = `
lists:
  partners: {file: partners.txt, type: domain}
rules:
  - name: partner
    when: in_list("partners", mail_from_domain)
    action: accept
  - name: bad-helo
    when: helo endsWith ".invalid"
    stage: mail
    action: score
    score: 6
tests:
  - name: partner accepted
    mail_from: a@partner.example
    expect: {action: accept, stage: mail, rules: [partner]}
`

func TestRulesLint(t *testing.T) {
	dir := testenv.WriteFiles(t, map[string]string{
		"good/r.yaml":       cmdRules,
		"good/partners.txt": "partner.example\n",
		"bad/r.yaml":        "rules:\n  - name: a\n    when: helo == 1\n    action: reject\n  - name: b\n    when: 'true'\n    action: reject\n  - name: c\n    when: ip == \"x\"\n    action: reject\n",
	})
	code, out, errOut := runRules("lint", filepath.Join(dir, "good"))
	if code != 0 || out != "SUCCESS: no errors, no warnings\n" {
		t.Errorf("good rules: exit %d, out %q, err %q", code, out, errOut)
	}

	code, out, errOut = runRules("lint", filepath.Join(dir, "bad", "*.yaml"))
	if code != 1 {
		t.Errorf("bad rules: exit %d", code)
	}
	// Every line is file:line:col: message, for editors.
	line := regexp.MustCompile(`^\S+/bad/r\.yaml:\d+:\d+: `)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, l := range lines {
		if !line.MatchString(l) {
			t.Errorf("not an editor line: %q", l)
		}
	}
	if len(lines) != 2 || !strings.Contains(lines[0], "r.yaml:3:16: invalid operation: == (mismatched types string and int)") ||
		!strings.Contains(lines[1], "r.yaml:8:11: warning: rule c can never match: rule b") {
		t.Errorf("lint output:\n%s", out)
	}
	if errOut != "1 error, 1 warning\n" {
		t.Errorf("summary %q", errOut)
	}

	// Warnings alone exit 0.
	dir2 := testenv.WriteFiles(t, map[string]string{"r.yaml": "rules:\n  - {name: a, when: 'true', action: accept}\n  - {name: b, when: 'true', action: reject}\n"})
	if code, out, _ := runRules("lint", filepath.Join(dir2, "r.yaml")); code != 0 || !strings.Contains(out, "warning: rule b can never match") || !strings.HasSuffix(out, "SUCCESS: no errors, 1 warning\n") {
		t.Errorf("warnings: exit %d, out %q", code, out)
	}
}

func TestRulesLintWithConfig(t *testing.T) {
	dir := testenv.WriteFiles(t, map[string]string{
		"rules/r.yaml":  "rules:\n  - {name: a, when: 'in_list(\"vip\", rcpt)', action: accept}\n",
		"vip.txt":       "boss@example.net\n",
		"unused.txt":    "x.example\n",
		"mailward.yaml": "rules:\n  files: [rules/*.yaml]\nlists:\n  vip: {file: vip.txt, type: address}\n  unused: {file: unused.txt, type: domain}\n",
	})
	code, out, _ := runRules("lint", "--config", filepath.Join(dir, "mailward.yaml"))
	if code != 0 || !strings.Contains(out, `unused.txt: warning: list "unused" is declared but no rule uses it`) || strings.Contains(out, "vip") {
		t.Errorf("exit %d, out:\n%s", code, out)
	}
	os.WriteFile(filepath.Join(dir, "mailward.yaml"), []byte("rules:\n  files: [rules/*.yaml]\n"), 0o644)
	code, out, _ = runRules("lint", "--config", filepath.Join(dir, "mailward.yaml"))
	if code != 1 || !strings.Contains(out, `r.yaml:2:30: unknown list "vip"`) {
		t.Errorf("undeclared list with config: exit %d, out:\n%s", code, out)
	}
	code, _, errOut := runRules("lint", "--config", filepath.Join(dir, "missing.yaml"))
	if code != 1 || !strings.Contains(errOut, "missing.yaml") {
		t.Errorf("missing config: exit %d, %q", code, errOut)
	}
}

func TestRulesTest(t *testing.T) {
	dir := testenv.WriteFiles(t, map[string]string{
		"rules/r.yaml":       cmdRules,
		"rules/partners.txt": "partner.example\n",
		"rules/r_test.yaml": `
tests:
  - name: bad helo scores
    helo: x.invalid
    expect: {action: reject, score: 6}
`,
		"mailward.yaml": "thresholds:\n  reject: 5\nrules:\n  files: [rules/r.yaml]\n",
	})
	// Without the config's thresholds, the score test fails.
	code, out, _ := runRules("test", filepath.Join(dir, "rules"))
	if code != 1 {
		t.Errorf("exit %d", code)
	}
	for _, want := range []string{
		"PASS  " + filepath.Join(dir, "rules/r.yaml") + ":14:11  partner accepted\n",
		"FAIL  " + filepath.Join(dir, "rules/r_test.yaml") + ":3:11  bad helo scores\n      action: got accept at eom, want reject\n      got accept at eom, score 6, matched: bad-helo\n",
		"1 passed, 1 failed\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// With it, the engine rejects over the threshold, as in production.
	code, out, _ = runRules("test", "--config", filepath.Join(dir, "mailward.yaml"), "-v")
	if code != 0 || !strings.Contains(out, "2 passed, 0 failed") || !strings.Contains(out, "got reject at eom, score 6, matched: bad-helo") {
		t.Errorf("with config: exit %d\n%s", code, out)
	}
	// Rules that do not load: exit 1 with positions.
	os.WriteFile(filepath.Join(dir, "rules/r.yaml"), []byte("rules:\n  - {name: x, when: 'helo ==', action: reject}\n"), 0o644)
	code, out, _ = runRules("test", filepath.Join(dir, "rules"))
	if code != 1 || !strings.Contains(out, "r.yaml:2:") {
		t.Errorf("broken rules: exit %d\n%s", code, out)
	}
}

func TestRulesRateLimit(t *testing.T) {
	dir := testenv.WriteFiles(t, map[string]string{"r.yaml": `
rules:
  - name: burst
    when: ratelimit("from:" + mail_from, 1, "1h")
    action: tempfail
  - name: bad-window
    when: ratelimit("x", 1, "soon")
    action: tempfail
`})
	code, out, _ := runRules("lint", filepath.Join(dir, "r.yaml"))
	if code != 1 || strings.Contains(out, "unknown name ratelimit") || !strings.Contains(out, `r.yaml:7:29: ratelimit window`) {
		t.Errorf("lint knows ratelimit and checks its window: exit %d\n%s", code, out)
	}
}

// TestRulesTestsStartFresh: each test counts its rate limits alone, and
// expects an added header as read, not RFC 2047-encoded.
func TestRulesTestsStartFresh(t *testing.T) {
	dir := testenv.WriteFiles(t, map[string]string{"r.yaml": `
rules:
  - name: burst
    when: ratelimit("from:" + mail_from, 1, "1h")
    action: tempfail
  - name: note
    when: subject != ""
    action: add_header
    header: {name: X-Note, value: "Grüße: {{ subject }}"}
tests:
  - name: first message
    mail_from: a@shop.example
    expect: {action: accept}
  - name: the same sender, in a test of its own
    mail_from: a@shop.example
    expect: {action: accept}
  - name: a header with umlauts
    mail_from: b@shop.example
    headers: {Subject: Größe}
    expect: {action: accept, headers: {X-Note: "Grüße: Größe"}}
`})
	code, out, _ := runRules("test", filepath.Join(dir, "r.yaml"))
	if code != 0 || !strings.Contains(out, "3 passed, 0 failed") {
		t.Errorf("exit %d\n%s", code, out)
	}
}

func TestRulesUsage(t *testing.T) {
	if code, _, errOut := runRules(); code != 2 || !strings.Contains(errOut, "Usage: mailward rules") {
		t.Errorf("no args: %d %q", code, errOut)
	}
	if code, out, _ := runRules("--help"); code != 0 || !strings.Contains(out, "lint PATH") {
		t.Errorf("--help: %d %q", code, out)
	}
	if code, _, errOut := runRules("lint", "--help"); code != 0 || !strings.Contains(errOut, "Usage: mailward rules lint") {
		t.Errorf("lint --help: %d %q", code, errOut)
	}
	if code, _, errOut := runRules("test"); code != 2 || !strings.Contains(errOut, "name rule files") {
		t.Errorf("test without paths: %d %q", code, errOut)
	}
	if code, _, _ := runRules("frobnicate"); code != 2 {
		t.Errorf("unknown command: %d", code)
	}
	if code, _, _ := runRules("lint", "--nope", "x"); code != 2 {
		t.Errorf("unknown flag: %d", code)
	}
}
