package rules

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/mailward/mailward/policy"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// FuzzLoadRuleFile: any bytes as a rule file give a set or problems,
// never a panic, and a set that loaded evaluates without one.
func FuzzLoadRuleFile(f *testing.F) {
	f.Add([]byte(testedRules))
	f.Add([]byte(goodRules))
	f.Add([]byte(brokenRules))
	f.Add([]byte("rules:\n  - {name: a, when: 'in_cidr(ip, \"10.0.0.0/8\")', action: reject, message: '{{ip}}'}\n"))
	f.Add([]byte("rules: [{name: x, when: \"header('a') == subject\", action: add_header, header: {name: X, value: '{{ score }}'}}]"))
	f.Add([]byte("rules:\n  - name: a\n    when: >\n      spf == \"fail\"\n    action: score\n    score: -1.5\n    stage: eom\n"))
	f.Add([]byte("\xff\xfe: [\n"))
	f.Add([]byte("rules: {}"))
	if files, _ := filepath.Glob("../examples/rules/*.yaml"); len(files) > 0 {
		for _, file := range files {
			if data, err := os.ReadFile(file); err == nil {
				f.Add(data)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64*1024 {
			return
		}
		var p problems
		// Lists would be read from disk; the fuzzer must not pick files.
		if strings.Contains(string(data), "lists") {
			return
		}
		b := build(buildInput{files: []string{"fuzz.yaml"}, data: map[string][]byte{"fuzz.yaml": data}}, Options{Logger: quietLog()}, &p)
		if b.set == nil {
			t.Fatal("no set")
		}
		for _, q := range p.list {
			if q.Pos.File == "" || q.Msg == "" {
				t.Fatalf("problem without place or text: %+v", q)
			}
		}
		for _, fc := range factVariants() {
			var ms []policy.Match
			for _, st := range policy.Stages {
				b.set.Eval(context.Background(), st, fc, &ms)
			}
		}
	})
}

// FuzzExpr: any condition compiles or gives a positioned problem, and a
// condition that compiled to native code answers as the VM does.
func FuzzExpr(f *testing.F) {
	for _, c := range append(append([]string{}, nativeCases...), vmCases...) {
		f.Add(c)
	}
	for _, c := range []string{"", "(", `helo matches "("`, `in_cidr(ip, "300.1.1.1")`, `in_cidr(ip)`, `"a" in ["a", 1]`,
		`repeat("x", 1000000) == ""`, `$env.ip == ""`, `header(header("a")) == ""`, `any(attachments, #.name == .name)`} {
		f.Add(c)
	}
	var lp problems
	senders := parseList("senders", listAddress, "s.txt", []byte("@bad.example\n"), &lp)
	f.Fuzz(func(t *testing.T, cond string) {
		if len(cond) > 4096 {
			return
		}
		var p problems
		c := newCompiler(Options{}, map[string]*list{"senders": senders}, false, &p)
		src := newSource("fuzz.yaml", nil)
		scalar := func(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: v, Line: 1, Column: 1} }
		n := &yaml.Node{Kind: yaml.MappingNode, Line: 1, Column: 1, Content: []*yaml.Node{
			scalar("name"), scalar("r"), scalar("when"), scalar(cond), scalar("stage"), scalar("eom"), scalar("action"), scalar("reject"),
		}}
		r := c.compileRule(src, n)
		if r == nil {
			if len(p.list) == 0 {
				t.Fatal("rule refused without a problem")
			}
			return
		}
		s := &Set{rules: []*rule{r}, lists: c.lists, log: quietLog()}
		s.pool.New = func() any { return newState() }
		s.stages[policy.StageEOM] = []*rule{r}
		s.need[policy.StageEOM] = r.reads
		s.box[policy.StageEOM] = r.vmReads
		for i, fc := range factVariants() {
			got := s.Eval(context.Background(), policy.StageEOM, fc, nil).Action == policy.Reject
			if r.native == nil {
				continue
			}
			if want := evalVM(t, s, r, fc); got != want {
				t.Fatalf("facts %d: native says %v, VM says %v for %q", i, got, want, cond)
			}
		}
	})
}
