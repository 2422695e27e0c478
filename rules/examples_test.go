package rules

import (
	"context"
	"slices"
	"testing"
)

const examplesDir = "../examples/rules"

// TestExamples loads the starter rules as a config would, lints them and
// runs their tests; every rule must be shown to fire by some test.
func TestExamples(t *testing.T) {
	s, err := Load(Config{Files: []string{examplesDir + "/*.yaml"}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() < 15 {
		t.Errorf("only %d example rules loaded", s.Len())
	}
	if ps := Lint([]string{examplesDir}, LintOptions{}); len(ps) > 0 {
		t.Errorf("lint:\n%v", ps)
	}
	results, err := RunTests(context.Background(), []string{examplesDir}, TestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) < 20 {
		t.Errorf("only %d example tests", len(results))
	}
	for _, r := range results {
		if !r.Passed {
			t.Errorf("%s %s: %v", r.Pos, r.Name, r.Diffs)
		}
	}

	var p problems
	ruleFiles, testFiles := expandPaths([]string{examplesDir}, &p)
	b := build(buildInput{files: ruleFiles}, Options{}, &p)
	shown := map[string]bool{}
	for _, tc := range loadTests(b, testFiles, &p) {
		for _, name := range tc.expect.rules {
			shown[name] = true
		}
	}
	for _, ri := range s.Rules() {
		if !shown[ri.Name] {
			t.Errorf("rule %s (%s) has no test that expects it to match", ri.Name, ri.Pos)
		}
	}
	if !slices.Contains(s.Files(), examplesDir+"/partner-networks.txt") {
		t.Errorf("list files not among the files to watch: %v", s.Files())
	}
}
