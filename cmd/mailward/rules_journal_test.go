package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestSpreadFlags(t *testing.T) {
	got := spreadFlags([]string{"--journal", "a", "b", "--json", "--rules", "r1", "r2", "--journal=c", "-old", "o"}, "journal", "rules", "old")
	want := []string{"--journal", "a", "--journal", "b", "--json", "--rules", "r1", "--rules", "r2", "--journal=c", "-old", "o"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

const testJournal = "../../journal/testdata/v1.jsonl"

// TestRulesReplay: replay prints one line per transaction with its
// verdict, and --json the documented fields.
func TestRulesReplay(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"rules", "replay", "--journal", testJournal, testJournal, "--rules", "../../journal/testdata/rules.yaml"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "quarantine at eom by invoice-lure") || strings.Contains(lines[0], "[journal:") {
		t.Errorf("output %q", out.String())
	}
	if !strings.Contains(errb.String(), "1 transaction replayed") || !strings.Contains(errb.String(), "0 verdicts differ") {
		t.Errorf("summary %q", errb.String())
	}
	out.Reset()
	errb.Reset()
	code = run([]string{"rules", "replay", "--json", "--journal", testJournal, "--rules", "../../journal/testdata/new-rules.yaml"}, &out, &errb)
	var r map[string]any
	if code != 0 || json.Unmarshal(out.Bytes(), &r) != nil {
		t.Fatalf("exit %d %q %s", code, out.String(), errb.String())
	}
	for _, k := range []string{"at", "time", "queue_id", "ip", "mail_from", "rcpts", "verdict", "score", "matches", "recorded", "changed"} {
		if _, ok := r[k]; !ok {
			t.Errorf("--json lacks %q: %s", k, out.String())
		}
	}
	if r["changed"] != true {
		t.Errorf("the new rules reject at connect, the journal says quarantine: %s", out.String())
	}
}

// TestRulesDiff: the table, the examples and the exit status that gates
// a rules repository's CI.
func TestRulesDiff(t *testing.T) {
	args := []string{"rules", "diff", "--journal", testJournal, "--old", "../../journal/testdata/rules.yaml", "--new", "../../journal/testdata/new-rules.yaml"}
	var out, errb bytes.Buffer
	if code := run(args, &out, &errb); code != 0 {
		t.Fatalf("exit %d without --max-changes\n%s%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"1 transactions", "quarantine → reject", "no longer matching", "listed-client (monitor mode, counted as enforced) at connect: dnsbl="} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run(append(args, "--max-changes", "0"), &out, &errb); code != 1 {
		t.Errorf("--max-changes 0 with a change: exit %d, want 1", code)
	}
	out.Reset()
	if code := run(append(args, "--max-changes", "1", "--json"), &out, &errb); code != 0 {
		t.Errorf("--max-changes 1 with one change: exit %d, want 0", code)
	}
	var d struct {
		Changed  int `json:"changed"`
		Verdicts []struct {
			To       string `json:"to"`
			Examples []struct {
				New struct {
					Decided []struct {
						Rule string `json:"rule"`
					} `json:"decided"`
				} `json:"new"`
			} `json:"examples"`
		} `json:"verdict_changes"`
	}
	if err := json.Unmarshal(out.Bytes(), &d); err != nil || d.Changed != 1 || len(d.Verdicts) != 1 || d.Verdicts[0].To != "reject" ||
		d.Verdicts[0].Examples[0].New.Decided[0].Rule != "listed-client" {
		t.Fatalf("--json: %v %+v\n%s", err, d, out.String())
	}
}

// TestRulesDiffOldFromConfig: without --old the running config's rules
// are the old ones.
func TestRulesDiffOldFromConfig(t *testing.T) {
	dir := t.TempDir()
	rulesFile, _ := filepath.Abs("../../journal/testdata/rules.yaml")
	cfg := writeFile(t, dir, "mailward.yaml", "rules:\n  files: ["+rulesFile+"]\n")
	var out, errb bytes.Buffer
	code := run([]string{"rules", "diff", "--config", cfg, "--journal", testJournal, "--new", rulesFile, "--max-changes", "0"}, &out, &errb)
	if code != 0 || !strings.Contains(out.String(), "0 with another verdict") {
		t.Fatalf("the same rules as old and new: exit %d\n%s%s", code, out.String(), errb.String())
	}
	if code := run([]string{"rules", "diff", "--journal", testJournal, "--new", rulesFile}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "--old") {
		t.Errorf("no --old and no --config: exit %d %s", code, errb.String())
	}
}

// TestRulesTestCoverage: --coverage names the rules no test matched and,
// with --journal, those no journaled transaction matched.
func TestRulesTestCoverage(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "r.yaml", `rules:
  - name: tested
    when: helo == "bad.example"
    action: reject
  - name: untested
    when: helo == "worse.example"
    action: reject
  - name: listed-client
    when: '"zen.test" in dnsbl'
    action: score
    score: 3
tests:
  - name: bad helo
    helo: bad.example
    expect: {action: reject, rules: [tested]}
`)
	var out, errb bytes.Buffer
	code := run([]string{"rules", "test", "--coverage", "--journal", testJournal, filepath.Join(dir, "r.yaml")}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"coverage: 1 of 3 rules matched in a test", "no test matches untested", "no test matches listed-client",
		"journal: 1 of 3 rules matched in 1 transaction", "no transaction matches tested", "no transaction matches untested"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "no transaction matches listed-client") {
		t.Errorf("listed-client matched the journal:\n%s", out.String())
	}
}

// TestJournalExample: the diff in examples/journal/README.md is what its
// command prints, and the journal replays to the verdicts it recorded.
// After a change to examples/rules, run the README's command again and
// put its output in the README.
func TestJournalExample(t *testing.T) {
	readme, err := os.ReadFile("../../examples/journal/README.md")
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run([]string{"rules", "diff", "--journal", "../../examples/journal/journal.jsonl", "--old", "../../examples/rules",
		"--new", "../../examples/rules", "../../examples/journal/50-spf-fail.yaml", "--examples", "1", "--max-changes", "0"}, &out, &errb)
	if code != 1 {
		t.Errorf("--max-changes 0: exit %d, want 1\n%s", code, errb.String())
	}
	// The README shows the output up to the first example, with the
	// journal's path as it is given from the repository's top.
	got := strings.Join(strings.Split(strings.ReplaceAll(out.String(), "../../examples/", "examples/"), "\n\n")[:4], "\n\n")
	if !strings.Contains(string(readme), got) {
		t.Errorf("examples/journal/README.md does not show what its command prints:\n%s", got)
	}
	if !cfgLoads(t, "../../examples/journal/bench.yaml") {
		return
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"rules", "replay", "--journal", "../../examples/journal/journal.jsonl", "--rules", "../../examples/rules", "--changed"}, &out, &errb); code != 0 || out.Len() > 0 {
		t.Errorf("the example journal does not replay to its own verdicts (exit %d):\n%s%s", code, out.String(), errb.String())
	}
}

func cfgLoads(t *testing.T, file string) bool {
	t.Helper()
	if _, err := loadConfig(file); err != nil {
		t.Errorf("%s: %v", file, err)
		return false
	}
	return true
}
