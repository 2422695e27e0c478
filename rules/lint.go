package rules

import (
	"fmt"
	"slices"
	"strings"

	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"

	"github.com/mailward/mailward/policy"
)

// LintOptions say what lint knows besides the files.
type LintOptions struct {
	// Lists are the lists the config declares.
	Lists map[string]ListConfig
	// Config says the lists above are all there is: a list a rule names
	// but nothing declares is an error, a declared list no rule uses a
	// warning. Without it, undeclared lists are only warnings.
	Config bool
	Options
}

// Lint checks rule files and the tests beside them (paths are files,
// directories or globs) and returns every error and warning: what Load
// would reject, plus rules that can never match, lists nobody uses and
// rules that read values before they mean anything.
func Lint(paths []string, lo LintOptions) Problems {
	var p problems
	ruleFiles, testFiles := expandPaths(paths, &p)
	b := build(buildInput{files: ruleFiles, lists: lo.Lists, listBase: lo.BaseDir, listsOpen: !lo.Config}, lo.Options, &p)
	loadTests(b, testFiles, &p)
	lintUnreachable(b.set.rules, &p)
	lintOrder(b.set, &p)
	lintUnknown(b.set.rules, &p)
	if lo.Config {
		var names []string
		for n := range b.declared {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			if !b.used[n] {
				p.warnf(b.declared[n].pos, "list %q is declared but no rule uses it", n)
			}
		}
	}
	return p.list
}

// alwaysTrue reports whether a condition matches every message.
func alwaysTrue(r *rule) bool {
	if r.prog == nil {
		return false
	}
	b, ok := r.prog.Node().(*ast.BoolNode)
	return ok && b.Value
}

// canonical is a condition with spacing and parentheses normalized, to
// spot two rules with the same condition.
func canonical(when string) string {
	tree, err := parser.Parse(when)
	if err != nil {
		return when
	}
	return tree.Node.String()
}

// lintUnreachable finds rules an earlier enforced terminal rule always
// cuts off: one whose condition is always true, at the same or an earlier
// stage, or one with the same condition at the same stage.
func lintUnreachable(rules []*rule, p *problems) {
	canon := make([]string, len(rules))
	for i, r := range rules {
		canon[i] = canonical(r.when)
	}
	for i, later := range rules {
		for j, e := range rules[:i] {
			if e.monitor || !e.kind.terminal() {
				continue
			}
			var why string
			switch {
			case alwaysTrue(e) && e.stage == later.stage:
				why = "always matches at the same stage"
			case alwaysTrue(e) && e.stage < later.stage && e.kind != kindQuarantine:
				why = fmt.Sprintf("always matches at stage %s and ends filtering first", e.stage)
			case canon[j] == canon[i] && e.stage == later.stage:
				why = "has the same condition and comes first"
			default:
				continue
			}
			p.warnf(later.pos, "rule %s can never match: rule %s (%s) %s", later.name, e.name, e.pos, why)
			break
		}
	}
}

// lintOrder warns about rules that read values the stage order makes
// useless: rcpt after the rcpt stage, score before score rules of the
// same stage have added to it.
func lintOrder(s *Set, p *problems) {
	for st, rs := range s.stages {
		for i, r := range rs {
			if r.reads&(1<<vRcpt) != 0 && policy.Stage(st) > policy.StageRcpt {
				p.warnf(r.whenPos, "rule %s runs at stage %s, where rcpt is empty: use rcpts", r.name, policy.Stage(st))
			}
			if r.reads&(1<<vScore) == 0 {
				continue
			}
			var later []string
			for _, o := range rs[i+1:] {
				if o.kind == kindScore && !o.monitor {
					later = append(later, o.name)
				}
			}
			if len(later) > 0 {
				p.warnf(r.whenPos, "rule %s reads score before rules %s add to it at stage %s: move it after them",
					r.name, strings.Join(later, ", "), policy.Stage(st))
			}
		}
	}
}

// lintUnknown warns about reject and discard rules that cannot tell a missing fact
// from one a temporary DNS error left unknown: the engine answers those
// with on_error (4xx), which is safe but seldom what the rule means.
func lintUnknown(rules []*rule, p *problems) {
	for _, r := range rules {
		if (r.kind != kindReject && r.kind != kindDiscard) || r.monitor {
			continue
		}
		for _, id := range []int{vFCrDNS, vPTR} {
			if r.reads&(1<<id) != 0 && r.reads&(1<<vIPRev) == 0 {
				p.warnf(r.whenPos, "rule %s %ss on %s, which says the same when the client has no reverse DNS and when DNS failed; "+
					"say which you mean with iprev (e.g. iprev in [\"fail\", \"permerror\"]): as written, a DNS failure answers with on_error", r.name, r.kind, variables[id].name)
				break
			}
		}
		for _, v := range [][2]int{{vDNSBL, vDNSBLErrors}, {vURIBL, vURIBLErrors}} {
			name, errs := variables[v[0]].name, variables[v[1]].name
			if r.reads&(1<<v[0]) != 0 && r.reads&(1<<v[1]) == 0 && r.prog != nil && negates(r.prog.Node(), name) {
				p.warnf(r.whenPos, "rule %s %ss when a zone is not in %s, which is also the case when that list's look-up failed; "+
					"test %s too: as written, a failed look-up answers with on_error", r.name, r.kind, name, errs)
			}
		}
	}
}

// negates reports whether n reads the variable name under a negation.
func negates(n ast.Node, name string) bool {
	v := &negationFinder{name: name}
	ast.Walk(&n, v)
	return v.found
}

type negationFinder struct {
	name  string
	found bool
}

func (v *negationFinder) Visit(node *ast.Node) {
	u, ok := (*node).(*ast.UnaryNode)
	if !ok || (u.Operator != "!" && u.Operator != "not") {
		return
	}
	r := &readFinder{name: v.name}
	ast.Walk(&u.Node, r)
	v.found = v.found || r.found
}

type readFinder struct {
	name  string
	found bool
}

func (v *readFinder) Visit(node *ast.Node) {
	if id, ok := (*node).(*ast.IdentifierNode); ok && id.Value == v.name {
		v.found = true
	}
}
