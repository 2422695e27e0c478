package rules

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailward/mailward/internal/testenv"
)

func lintOf(t *testing.T, files map[string]string, lo LintOptions, paths ...string) Problems {
	t.Helper()
	dir := testenv.WriteFiles(t, files)
	for i, p := range paths {
		paths[i] = filepath.Join(dir, p)
	}
	lo.BaseDir = dir
	ps := Lint(paths, lo)
	for i := range ps {
		ps[i].Pos.File = strings.TrimPrefix(ps[i].Pos.File, dir+"/")
		ps[i].Msg = strings.ReplaceAll(ps[i].Msg, dir+"/", "")
	}
	return ps
}

func hasProblem(ps Problems, pos string, warning bool, msg string) bool {
	for _, p := range ps {
		if p.Pos.String() == pos && p.Warning == warning && strings.Contains(p.Msg, msg) {
			return true
		}
	}
	return false
}

func TestLintUnreachable(t *testing.T) {
	cases := []struct {
		name, yaml string
		warn       []string // "line:col: message part"
		not        []string
	}{
		{"always-true accept ends filtering", `
rules:
  - name: allow-all-helo
    when: helo != "" || true
    action: accept
  - name: late
    when: subject == "x"
    action: reject
`, []string{"6:11: rule late can never match: rule allow-all-helo (r.yaml:3:11) always matches at stage helo and ends filtering first"}, nil},
		{"same condition, same stage", `
rules:
  - name: first
    when: spf ==   "fail"
    action: reject
  - name: same
    when: (spf == "fail")
    action: tempfail
  - name: different
    when: spf == "softfail"
    action: reject
`, []string{"6:11: rule same can never match: rule first (r.yaml:3:11) has the same condition"}, []string{"rule different"}},
		{"monitor rules cut nothing off", `
rules:
  - name: watch
    when: "true"
    action: reject
    mode: monitor
  - name: after-watch
    when: ip == "192.0.2.1"
    action: reject
`, nil, []string{"after-watch"}},
		{"quarantine cuts off its own stage only", `
rules:
  - name: quarantine-all
    when: "true"
    stage: mail
    action: quarantine
  - name: same-stage
    when: mail_from == "x"
    action: score
    score: 1
  - name: next-stage
    when: rcpt == "x"
    action: reject
`, []string{"7:11: rule same-stage can never match: rule quarantine-all (r.yaml:3:11) always matches at the same stage"}, []string{"next-stage"}},
		{"score rules cut nothing off", `
rules:
  - name: add
    when: "true"
    action: score
    score: 1
  - name: after
    when: "true"
    action: reject
`, nil, []string{"after can never"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ps := lintOf(t, map[string]string{"r.yaml": c.yaml}, LintOptions{}, "r.yaml")
			if len(ps.Errors()) != 0 {
				t.Fatalf("errors: %v", ps.Errors())
			}
			text := ps.Error()
			for _, w := range c.warn {
				if !strings.Contains(text, "r.yaml:"+strings.Replace(w, ": ", ": warning: ", 1)) {
					t.Errorf("no warning %q in:\n%s", w, text)
				}
			}
			for _, n := range c.not {
				if strings.Contains(text, n) {
					t.Errorf("unexpected %q in:\n%s", n, text)
				}
			}
		})
	}
}

func TestLintLists(t *testing.T) {
	files := map[string]string{
		"r.yaml": `
rules:
  - name: a
    when: in_list("partners", mail_from)
    action: accept
  - name: b
    when: in_list(helo, mail_from)
    action: accept
`,
		"partners.txt": "partner.example\n",
		"unused.txt":   "x.example\n",
	}
	// Without a config, a list nobody declares may come from the config.
	ps := lintOf(t, files, LintOptions{}, "r.yaml")
	if len(ps.Errors()) != 0 || !hasProblem(ps, "r.yaml:4:19", true, `list "partners" is not declared in these files`) {
		t.Errorf("without config:\n%v", ps)
	}
	// With a config, undeclared lists are errors and unused ones warnings.
	ps = lintOf(t, files, LintOptions{Config: true, Lists: map[string]ListConfig{"unused": {File: "unused.txt", Type: "domain"}}}, "r.yaml")
	if !hasProblem(ps, "r.yaml:4:19", false, `unknown list "partners" (declared: unused)`) {
		t.Errorf("with config, unknown list:\n%v", ps)
	}
	if !hasProblem(ps, "unused.txt", true, `list "unused" is declared but no rule uses it`) {
		t.Errorf("with config, unused list:\n%v", ps)
	}
	ps = lintOf(t, files, LintOptions{Config: true, Lists: map[string]ListConfig{"partners": {File: "partners.txt", Type: "domain"}}}, "r.yaml")
	if len(ps) != 0 {
		t.Errorf("clean set:\n%v", ps)
	}
}

func TestLintOrderWarnings(t *testing.T) {
	ps := lintOf(t, map[string]string{"r.yaml": `
rules:
  - name: too-early
    when: score > 5
    action: reject
  - name: adds
    when: spf == "fail"
    stage: eom
    action: score
    score: 3
  - name: rcpt-late
    when: rcpt == "x@example.net"
    stage: data
    action: reject
`}, LintOptions{}, "r.yaml")
	if !hasProblem(ps, "r.yaml:4:11", true, "rule too-early reads score before rules adds add to it at stage eom") {
		t.Errorf("score order:\n%v", ps)
	}
	if !hasProblem(ps, "r.yaml:12:11", true, "where rcpt is empty: use rcpts") {
		t.Errorf("rcpt after rcpt stage:\n%v", ps)
	}
}

func TestLintPathsAndTests(t *testing.T) {
	files := map[string]string{
		"d/a.yaml":      "rules:\n  - {name: a, when: 'helo == \"x\"', action: reject}\n",
		"d/a_test.yaml": "tests:\n  - name: t\n    helo: x\n    expect: {action: reject, rules: [a, nosuch]}\n",
		"d/b.yaml":      "rules:\n  - {name: b, when: 'size >', action: reject}\n",
		"d/notes.txt":   "not yaml",
	}
	ps := lintOf(t, files, LintOptions{}, "d")
	if !hasProblem(ps, "d/a_test.yaml:4:41", false, `rules: no rule is named "nosuch"`) {
		t.Errorf("tests are checked too:\n%v", ps)
	}
	if !hasProblem(ps, "d/b.yaml:2:27", false, "unexpected token EOF") {
		t.Errorf("all files in the directory:\n%v", ps)
	}
	ps = lintOf(t, files, LintOptions{}, "d/a.yaml")
	if !strings.Contains(ps.Error(), "nosuch") || strings.Contains(ps.Error(), "b.yaml") {
		t.Errorf("a file brings its _test.yaml and nothing else:\n%v", ps)
	}
	ps = lintOf(t, files, LintOptions{}, "d/*.yml")
	if !hasProblem(ps, "d/*.yml", false, "no files match") {
		t.Errorf("empty glob:\n%v", ps)
	}
}
