package rules

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
)

func TestErrorPositions(t *testing.T) {
	cases := []struct {
		name      string
		yaml      string
		line, col int
		msg       string
	}{
		{"unknown variable, plain", `
rules:
  - name: a
    when: ip == "x" && mail_frm == ""
    action: reject
`, 4, 24, "unknown name mail_frm (did you mean mail_from?)"},
		{"unknown variable, letters swapped", `
rules:
  - name: a
    when: sfp == "fail"
    action: reject
`, 4, 11, "unknown name sfp (did you mean spf?)"},
		{"syntax error, literal block", `
rules:
  - name: a
    when: |
      spf == "fail" &&
        helo ==== "x"
    action: reject
`, 6, 16, "unexpected token"},
		{"type error, double quoted with escapes", `
rules:
  - name: a
    when: "helo == \"a\\\"b\" && size > \"big\""
    action: reject
`, 4, 39, "mismatched types int and string"},
		{"bad regexp, folded block", `
rules:
  - name: a
    when: >
      helo != "" and
      helo matches "^(dyn"
    action: reject
`, 6, 12, "error parsing regexp"},
		{"bad regexp, single quoted over two lines", `
rules:
  - name: a
    when: 'helo != ''x'' and
      helo matches "[z-a]"'
    action: reject
`, 5, 12, "error parsing regexp"},
		{"bad CIDR", `
rules:
  - name: a
    when: in_cidr(ip, "10.0.0.0/8", "10.1.2.300/32")
    action: reject
`, 4, 37, `"10.1.2.300/32" is not an address or CIDR`},
		{"in_cidr with a variable", `
rules:
  - name: a
    when: in_cidr(ip, helo)
    action: reject
`, 4, 23, "in_cidr takes addresses and CIDRs in quotes"},
		{"unknown list", `
rules:
  - name: a
    when: in_list("partners", mail_from)
    action: accept
`, 4, 19, `unknown list "partners" (no lists are declared)`},
		{"not a bool", `
rules:
  - name: a
    when: helo
    action: reject
`, 4, 11, "expected bool"},
		{"wrong argument type", `
rules:
  - name: a
    when: header(5) == ""
    action: reject
`, 4, 18, "cannot use int as argument"},
		{"stage too early", `
rules:
  - name: a
    when: subject contains "x"
    stage: mail
    action: reject
`, 5, 12, "stage mail is too early: the rule uses subject, known from stage data"},
		{"template error", `
rules:
  - name: a
    when: "true"
    action: reject
    message: "go away {{ mail_fro }}"
`, 6, 26, "unknown name mail_fro"},
		{"unclosed template", `
rules:
  - name: a
    when: "true"
    action: reject
    message: "go away {{ mail_from"
`, 6, 23, "unclosed {{"},
		{"unknown action", `
rules:
  - name: a
    when: "true"
    action: rejetc
`, 5, 13, `unknown action "rejetc"`},
		{"unknown key", `
rules:
  - name: a
    when: "true"
    actoin: reject
`, 5, 5, `unknown rule key "actoin" (did you mean "action"?)`},
		{"code for the wrong action", `
rules:
  - name: a
    when: "true"
    action: tempfail
    code: "550 5.7.1"
`, 6, 11, "550 does not fit tempfail"},
		{"bad enhanced code", `
rules:
  - name: a
    when: "true"
    action: reject
    code: "550 4.7.1"
`, 6, 11, "not an enhanced status code"},
		{"score without number", `
rules:
  - name: a
    when: "true"
    action: score
    score: lots
`, 6, 12, `score "lots" is not a number`},
		{"bad header name", `
rules:
  - name: a
    when: "true"
    action: add_header
    header: {name: "X Bad", value: "1"}
`, 6, 20, "header name"},
		{"yaml syntax", `
rules:
  - name: a
    when: [unclosed
    action: reject
`, 3, 0, "did not find expected"},
		{"bad rule name", `
rules:
  - name: "two words"
    when: "true"
    action: reject
`, 3, 11, "rule name"},
		{"non-ASCII before the error", `
rules:
  - name: a
    when: subject == "Grüße" && bogus
    action: reject
`, 4, 33, "unknown name bogus"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ps := loadProblems(t, c.yaml)
			wantProblem(t, ps, c.line, c.col, c.msg)
			for _, p := range ps {
				if p.Pos.File != "rules.yaml" {
					t.Errorf("problem without the file name: %v", p)
				}
			}
		})
	}
}

func TestAllProblemsReported(t *testing.T) {
	ps := loadProblems(t, `
rules:
  - name: one
    when: foo
    action: reject
  - name: two
    when: "true"
    action: nope
  - name: one
    when: "true"
    action: accept
  - when: "true"
    action: accept
`)
	wantProblem(t, ps, 4, 11, "unknown name foo")
	wantProblem(t, ps, 8, 13, "unknown action")
	wantProblem(t, ps, 12, 5, "rule has no name")
	if len(ps.Errors()) < 3 {
		t.Errorf("want every problem at once, got %v", ps)
	}
	out := ps.Error()
	if !strings.Contains(out, "rules.yaml:4:11: unknown name foo") {
		t.Errorf("error text is not file:line:col: message lines:\n%s", out)
	}
}

func TestDuplicateNamesAcrossFiles(t *testing.T) {
	dir := testenv.WriteFiles(t, map[string]string{
		"a.yaml": "rules:\n  - {name: same, when: 'true', action: accept}\n",
		"b.yaml": "rules:\n  - name: other\n    when: 'true'\n    action: accept\n  - name: same\n    when: 'true'\n    action: reject\n",
	})
	_, err := Load(Config{Files: []string{"*.yaml"}}, Options{BaseDir: dir})
	if err == nil || !strings.Contains(err.Error(), `b.yaml:5:11: duplicate rule name "same" (first defined at `) ||
		!strings.Contains(err.Error(), "a.yaml:2:12") {
		t.Errorf("got %v", err)
	}
}

func TestConstantRegexpCompiledOnce(t *testing.T) {
	s := loadRules(t, "rules:\n  - {name: dyn, when: 'helo matches \"^dyn-[0-9]+\\\\.\"', action: reject}\n")
	dis := s.rules[0].prog.Disassemble()
	if !strings.Contains(dis, "OpMatchesConst") {
		t.Errorf("constant pattern not compiled at load:\n%s", dis)
	}
	f := fullFacts()
	f.Helo = "dyn-12.example"
	if v := s.Eval(context.Background(), policy.StageHelo, f, nil); v.Action != policy.Reject {
		t.Errorf("got %v", v.Action)
	}
}

func TestExplicitLaterStage(t *testing.T) {
	s := loadRules(t, "rules:\n  - {name: late, when: 'ip == \"192.0.2.7\"', stage: eom, action: reject}\n")
	if ri := s.Rules()[0]; ri.Stage != policy.StageEOM {
		t.Errorf("stage %s", ri.Stage)
	}
	if v := s.Eval(context.Background(), policy.StageConnect, fullFacts(), nil); v.Action != policy.Continue {
		t.Errorf("ran early")
	}
	if v := s.Eval(context.Background(), policy.StageEOM, fullFacts(), nil); v.Action != policy.Reject {
		t.Errorf("did not run at eom")
	}
}

func TestMissingFiles(t *testing.T) {
	dir := testenv.WriteFiles(t, map[string]string{"a.yaml": "rules: []\n"})
	if _, err := Load(Config{Files: []string{"missing.yaml"}}, Options{BaseDir: dir}); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("a named file that is missing: %v", err)
	}
	if _, err := Load(Config{Files: []string{"rules.d/*.yaml", "a.yaml"}}, Options{BaseDir: dir}); err == nil || !strings.Contains(err.Error(), "directory "+filepath.Join(dir, "rules.d")+" does not exist") {
		t.Errorf("a glob in a missing directory: %v", err)
	}
	os.Mkdir(filepath.Join(dir, "rules.d"), 0o755)
	s, err := Load(Config{Files: []string{"rules.d/*.yaml", "a.yaml"}}, Options{BaseDir: dir})
	if err != nil || s.Len() != 0 {
		t.Fatalf("a glob may match nothing: %v", err)
	}
	if w := s.Warnings(); len(w) != 1 || !strings.Contains(w[0].String(), "rules.d/*.yaml") || !strings.Contains(w[0].String(), "no rule files match") {
		t.Errorf("a glob that matches nothing must warn: %v", w)
	}
}

func TestYAMLAnchorsAndDocuments(t *testing.T) {
	s := loadRules(t, `
x-defaults:
  refuse: &refuse
    action: reject
    code: "550 5.7.1"
rules:
  - <<: *refuse
    name: a
    when: helo == "a.example"
  - <<: *refuse
    name: b
    when: helo == "b.example"
    code: 554
`)
	for helo, want := range map[string]string{"a.example": "550 5.7.1", "b.example": "554 "} {
		v := s.Eval(context.Background(), policy.StageHelo, &policy.Facts{Helo: helo}, nil)
		if v.Action != policy.Reject || fmt.Sprintf("%d %s", v.Code, v.Enhanced) != want {
			t.Errorf("%s: %+v, want %s", helo, v, want)
		}
	}
	ps := loadProblems(t, "rules:\n  - {name: a, when: 'true', action: accept}\n---\nrules:\n  - {name: b, when: 'true', action: accept}\n")
	wantProblem(t, ps, 3, 0, "a file holds one YAML document")
	ps = loadProblems(t, "x-d: &d {acton: reject}\nrules:\n  - {<<: *d, name: a, when: 'true'}\n")
	wantProblem(t, ps, 1, 10, `unknown rule key "acton"`)
	// A mapping that merges itself must end in an error, not a crash.
	dir := testenv.WriteFiles(t, map[string]string{"r.yaml": "x-a: &a\n  name: a\n  <<: *a\nrules:\n  - *a\n"})
	Load(Config{Files: []string{"r.yaml"}}, Options{BaseDir: dir})
}
