package rules

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"

	"github.com/mailward/mailward/internal/config"
	"github.com/mailward/mailward/policy"
)

// compiler compiles the rules of one load against its lists.
type compiler struct {
	funcs     *funcs
	lists     map[string]*list
	listsOpen bool // lists may be declared in a config not at hand: warn, do not fail
	used      map[string]bool
	extra     map[string]Func
	base      []expr.Option
	p         *problems
	// domainZones are the DNS lists queried with domain names.
	domainZones map[string]bool
}

func newCompiler(opts Options, lists map[string]*list, listsOpen bool, p *problems) *compiler {
	c := &compiler{lists: lists, listsOpen: listsOpen, used: map[string]bool{}, extra: map[string]Func{}, p: p,
		domainZones: zoneSet(opts.DomainZones)}
	fs := &funcs{lists: lists, org: opts.OrgDomain}
	c.funcs = fs
	c.base = []expr.Option{
		expr.Env(envTypes()),
		expr.Function("in_list", fs.inList, new(func(string, string) bool)),
		expr.Function("in_cidr", fs.inCIDR, new(func(string, string) bool)),
		expr.Function("domain_of", domainOf, new(func(string) string)),
		expr.Function("org_domain", fs.orgDomain, new(func(context.Context, string) string)),
	}
	for _, f := range opts.Functions {
		if opt, err := c.extraFunc(f); err != nil {
			p.errorf(Pos{File: "(functions)"}, "function %q: %v", f.Name, err)
		} else {
			c.base = append(c.base, opt)
			c.extra[f.Name] = f
		}
	}
	c.base = append(c.base, expr.WithContext(ctxName))
	return c
}

// analyzer walks an expression as it compiles: it records the variables
// read and checks and rewrites the calls that need it.
type analyzer struct {
	c     *compiler
	reads uint64
	stage policy.Stage // the latest stage an extra function or a DNS list needs
	why   string       // what needs that stage
	rate  bool         // calls ratelimit
	errs  []exprProblem
	lists dnsListReads
}

type exprProblem struct {
	from int // rune offset in the expression
	msg  string
	warn bool
}

func (a *analyzer) errorf(n ast.Node, format string, args ...any) {
	a.errs = append(a.errs, exprProblem{from: n.Location().From, msg: fmt.Sprintf(format, args...)})
}

func (a *analyzer) warnf(n ast.Node, format string, args ...any) {
	a.errs = append(a.errs, exprProblem{from: n.Location().From, msg: fmt.Sprintf(format, args...), warn: true})
}

func (a *analyzer) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		if id, ok := variableID(n.Value); ok {
			a.reads |= 1 << id
			a.lists.ident(n)
		} else if n.Value == "$env" {
			a.reads = allVars
		} else if f, ok := a.c.extra[n.Value]; ok && f.Stage > a.stage {
			a.stage, a.why = f.Stage, "a function it calls"
		}
	case *ast.BinaryNode:
		a.lists.binary(n)
	case *ast.MemberNode:
		a.lists.member(n)
	case *ast.CallNode:
		id, ok := n.Callee.(*ast.IdentifierNode)
		if !ok {
			return
		}
		switch id.Value {
		case "in_list":
			if len(n.Arguments) > 0 {
				if s, ok := n.Arguments[0].(*ast.StringNode); ok {
					a.useList(s, "", "in_list")
				}
			}
		case "in_cidr":
			a.patchCIDR(node, n)
		case "body_matches":
			a.patchBodyMatches(node, n)
		case RateLimitName:
			if _, ok := a.c.extra[RateLimitName]; ok {
				a.checkRateLimit(n)
			}
			a.rate = true
		}
	}
}

// useList checks a list named by a constant.
func (a *analyzer) useList(s *ast.StringNode, want, fn string) {
	a.c.used[s.Value] = true
	l := a.c.lists[s.Value]
	switch {
	case l == nil && a.c.listsOpen:
		a.warnf(s, "list %q is not declared in these files (pass --config to check the config's lists)", s.Value)
	case l == nil:
		a.errorf(s, "unknown list %q%s", s.Value, a.c.knownLists())
	case want != "" && l.kind != want:
		a.errorf(s, "%s needs an %s list; %q is a %s list", fn, want, s.Value, l.kind)
	}
}

func (c *compiler) knownLists() string {
	var names []string
	for n := range c.lists {
		if !strings.HasPrefix(n, anonPrefix) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return " (no lists are declared)"
	}
	slices.Sort(names)
	return " (declared: " + strings.Join(names, ", ") + ")"
}

// anonPrefix names the CIDR sets written inline in rules; no list name
// can start with it.
const anonPrefix = "\x00cidr:"

// patchCIDR turns in_cidr(ip, "10.0.0.0/8", "192.0.2.1") into a look-up
// in a set built once at load, so nothing is parsed per message. A bad
// CIDR is a load error pointing at it.
func (a *analyzer) patchCIDR(node *ast.Node, n *ast.CallNode) {
	args := n.Arguments
	if len(args) < 2 {
		a.errorf(n, "in_cidr needs an address and at least one CIDR or the name of an ip list")
		return
	}
	entries := args[1:]
	if len(args) == 2 {
		switch x := args[1].(type) {
		case *ast.StringNode:
			if strings.HasPrefix(x.Value, anonPrefix) {
				return // already rewritten
			}
			if !looksLikeAddress(x.Value) {
				a.useList(x, listIP, "in_cidr")
				return
			}
		case *ast.ArrayNode:
			entries = x.Nodes
		}
	}
	var cidrs []string
	for _, e := range entries {
		s, ok := e.(*ast.StringNode)
		if !ok {
			a.errorf(e, "in_cidr takes addresses and CIDRs in quotes, or the name of an ip list")
			return
		}
		if _, err := parseRange(s.Value); err != nil {
			a.errorf(s, "in_cidr: %v", err)
			return
		}
		cidrs = append(cidrs, s.Value)
	}
	if len(cidrs) == 0 {
		a.errorf(n, "in_cidr needs at least one CIDR")
		return
	}
	name := a.c.anonList(cidrs)
	arg := &ast.StringNode{Value: name}
	arg.SetLocation(args[1].Location())
	ast.Patch(node, &ast.CallNode{Callee: n.Callee, Arguments: []ast.Node{args[0], arg}})
}

// patchBodyMatches turns body_matches(re) into body_text matches re: the
// text is decoded once per message by the content scan, and a constant
// expression is compiled once, here, its errors pointing at it.
func (a *analyzer) patchBodyMatches(node *ast.Node, n *ast.CallNode) {
	if len(n.Arguments) != 1 {
		a.errorf(n, "body_matches takes one regular expression")
		return
	}
	if s, ok := n.Arguments[0].(*ast.StringNode); ok {
		if _, err := regexp.Compile(s.Value); err != nil {
			a.errorf(s, "body_matches: %v", err)
			return
		}
	}
	a.reads |= 1 << vBodyText
	text := &ast.IdentifierNode{Value: "body_text"}
	text.SetLocation(n.Location())
	m := &ast.BinaryNode{Operator: "matches", Left: text, Right: n.Arguments[0]}
	m.SetLocation(n.Location())
	ast.Patch(node, m)
}

func looksLikeAddress(s string) bool {
	if strings.ContainsAny(s, "/:") {
		return true
	}
	_, err := netip.ParseAddr(s)
	return err == nil || (s != "" && s[0] >= '0' && s[0] <= '9')
}

// anonList returns the name of the set holding cidrs, making it once.
func (c *compiler) anonList(cidrs []string) string {
	name := anonPrefix + strings.Join(cidrs, ",")
	if _, ok := c.lists[name]; ok {
		return name
	}
	var b listBuilder
	for _, s := range cidrs {
		b.add(listIP, s) // already checked
	}
	l := &list{name: name, kind: listIP, size: len(cidrs)}
	b.build(l)
	c.lists[name] = l
	return name
}

// compileExpr compiles src, which starts at rune offset off of the scalar
// m maps, reporting problems at their place in the file. It returns a nil
// program when there were errors.
func (c *compiler) compileExpr(src string, m scalarMap, off int, asBool bool) (*vm.Program, *analyzer) {
	a := &analyzer{c: c}
	opts := append(c.base[:len(c.base):len(c.base)], expr.Patch(a))
	if asBool {
		opts = append(opts, expr.AsBool())
	}
	var prog *vm.Program
	var err error
	func() {
		// Compiling outside input must never take the process down.
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("cannot compile expression: %v", r)
			}
		}()
		prog, err = expr.Compile(src, opts...)
	}()
	failed := false
	for _, e := range a.errs {
		if e.warn {
			c.p.warnf(m.pos(off+e.from), "%s", e.msg)
		} else {
			c.p.errorf(m.pos(off+e.from), "%s", e.msg)
			failed = true
		}
	}
	if err != nil {
		if !failed {
			var fe *file.Error
			if errors.As(err, &fe) {
				c.p.errorf(m.pos(off+fe.From), "%s", exprMessage(fe.Message, c))
			} else {
				c.p.errorf(m.pos(off), "%s", err.Error())
			}
		}
		return nil, a
	}
	if failed {
		return nil, a
	}
	if st, why := a.lists.stage(c.domainZones); st > a.stage {
		a.stage, a.why = st, why
	}
	return prog, a
}

// exprMessage makes an expr error message more helpful where it can.
func exprMessage(msg string, c *compiler) string {
	if name, ok := strings.CutPrefix(msg, "unknown name "); ok {
		cands := builtinFuncs[:len(builtinFuncs):len(builtinFuncs)]
		for _, v := range variables {
			cands = append(cands, v.name)
		}
		for n := range c.extra {
			cands = append(cands, n)
		}
		if s := config.Suggest(name, cands); s != "" {
			return fmt.Sprintf("unknown name %s (did you mean %s?)", name, s)
		}
	}
	return msg
}
