package rules

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
	"golang.org/x/net/publicsuffix"
	"gopkg.in/yaml.v3"

	"github.com/mailward/mailward/internal/config"
	"github.com/mailward/mailward/policy"
)

// kind is what a rule does when it matches.
type kind int

const (
	kindAccept kind = iota
	kindReject
	kindTempfail
	kindDiscard
	kindQuarantine
	kindAddHeader
	kindScore
	// kindGreylist asks the engine to greylist: it does not decide the
	// stage, a later terminal match still does.
	kindGreylist
	// kindSign and kindNoSign override whether the message is DKIM
	// signed; like greylist they do not decide the stage.
	kindSign
	kindNoSign
)

var kindNames = [...]string{"accept", "reject", "tempfail", "discard", "quarantine", "add_header", "score", "greylist", "sign", "no_sign"}

func (k kind) String() string { return kindNames[k] }

// terminal kinds decide the stage: the first one that matches wins.
func (k kind) terminal() bool { return k <= kindQuarantine }

func (k kind) action() policy.Action {
	switch k {
	case kindAccept:
		return policy.Accept
	case kindReject:
		return policy.Reject
	case kindTempfail:
		return policy.Tempfail
	case kindDiscard:
		return policy.Discard
	case kindQuarantine:
		return policy.Quarantine
	}
	return policy.Continue
}

func parseKind(s string) (kind, bool) {
	for i, n := range kindNames {
		if n == s {
			return kind(i), true
		}
	}
	return 0, false
}

// rule is one compiled rule.
type rule struct {
	name     string
	desc     string
	pos      Pos // the rule's entry in its file
	kind     kind
	code     int
	enhanced string
	message  *template
	hdrName  string
	hdrValue *template
	score    float64
	stage    policy.Stage
	explicit bool   // stage written in the file rather than inferred
	stageWhy string // what sets stage when no variable's stage does
	monitor  bool
	tags     []string
	when     string
	whenPos  Pos
	prog     *vm.Program
	native   boolFn // the condition as Go code, when it has a common shape
	reads    uint64 // variables read by the condition and the templates
	vmReads  uint64 // variables the VM reads: all of reads, or the templates' when native
	rate     bool   // calls ratelimit: the verdict names the limit that tripped

	matches atomic.Uint64
	errors  atomic.Uint64
	lastLog atomic.Int64 // unix nanoseconds of the last logged error
}

// readNames lists the variables the rule reads, in table order.
func (r *rule) readNames() []string {
	var out []string
	for id := 0; id < numVars; id++ {
		if r.reads&(1<<id) != 0 {
			out = append(out, variables[id].name)
		}
	}
	return out
}

var (
	ruleNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	funcNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	enhancedRE = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3}$`)
)

// builtinFuncs are the functions every rule set has.
var builtinFuncs = []string{"in_list", "in_cidr", "domain_of", "org_domain"}

// funcs implements the built-in functions over one set's lists.
type funcs struct {
	lists map[string]*list
	org   func(ctx context.Context, domain string) string
}

func strArg(args []any, i int) string {
	if i < len(args) {
		s, _ := args[i].(string)
		return s
	}
	return ""
}

func (fs *funcs) inList(args ...any) (any, error) {
	name := strArg(args, 0)
	l := fs.lists[name]
	if l == nil {
		return false, fmt.Errorf("unknown list %q", name)
	}
	return l.contains(strArg(args, 1)), nil
}

func (fs *funcs) inCIDR(args ...any) (any, error) {
	name := strArg(args, 1)
	l := fs.lists[name]
	if l == nil || l.kind != listIP {
		return false, fmt.Errorf("%q is not an ip list", name)
	}
	return l.contains(strArg(args, 0)), nil
}

func domainOf(args ...any) (any, error) {
	a := strArg(args, 0)
	if strings.IndexByte(a, '@') < 0 {
		// A bare domain is its own domain.
		return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(a), ".")), nil
	}
	return policy.DomainOf(a), nil
}

func (fs *funcs) orgDomain(args ...any) (any, error) {
	ctx, _ := args[0].(context.Context)
	if ctx == nil {
		ctx = context.Background()
	}
	d := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(strArg(args, 1)), "."))
	if d == "" {
		return "", nil
	}
	if fs.org != nil {
		return fs.org(ctx, d), nil
	}
	if o, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return o, nil
	}
	return d, nil
}

var ctxType = reflect.TypeOf((*context.Context)(nil)).Elem()

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

// extraFunc checks an extra function and makes it callable with the
// transaction's context passed first.
func (c *compiler) extraFunc(f Func) (expr.Option, error) {
	if !funcNameRE.MatchString(f.Name) {
		return nil, fmt.Errorf("not a valid function name")
	}
	if _, ok := variableID(f.Name); ok || slices.Contains(builtinFuncs, f.Name) {
		return nil, fmt.Errorf("the name is taken by a built-in")
	}
	if _, ok := c.extra[f.Name]; ok {
		return nil, fmt.Errorf("declared twice")
	}
	if f.Fn == nil || len(f.Types) == 0 {
		return nil, fmt.Errorf("needs Fn and at least one signature in Types")
	}
	types := make([]any, len(f.Types))
	for i, t := range f.Types {
		ft := reflect.TypeOf(t)
		if ft != nil && ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft == nil || ft.Kind() != reflect.Func || ft.NumOut() != 1 {
			return nil, fmt.Errorf("signature %d is not a function type with one result", i+1)
		}
		in := []reflect.Type{ctxType}
		for j := 0; j < ft.NumIn(); j++ {
			in = append(in, ft.In(j))
		}
		types[i] = reflect.New(reflect.FuncOf(in, []reflect.Type{ft.Out(0)}, ft.IsVariadic())).Interface()
	}
	fn := f.Fn
	call := func(args ...any) (any, error) {
		ctx, _ := args[0].(context.Context)
		if ctx == nil {
			ctx = context.Background()
		}
		return fn(ctx, args[1:]...)
	}
	return expr.Function(f.Name, call, types...), nil
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

// template is a message or header value with {{ expression }} parts.
type template struct {
	parts []tplPart
	tail  string
}

type tplPart struct {
	lit  string
	prog *vm.Program
}

// compileTemplate compiles the {{ }} parts of a scalar. It returns nil
// after reporting problems.
func (c *compiler) compileTemplate(src *source, n *yaml.Node, r *rule) *template {
	m := src.scalar(n)
	v := n.Value
	t := &template{}
	ok := true
	for {
		i := strings.Index(v, "{{")
		if i < 0 {
			break
		}
		start := len(n.Value) - len(v) + i
		j := strings.Index(v[i+2:], "}}")
		if j < 0 {
			c.p.errorf(m.pos(utf8.RuneCountInString(n.Value[:start])), "unclosed {{ in template")
			return nil
		}
		inner := v[i+2 : i+2+j]
		innerOff := utf8.RuneCountInString(n.Value[:start+2])
		if strings.TrimSpace(inner) == "" {
			c.p.errorf(m.pos(innerOff-2), "empty {{ }} in template")
			ok = false
		} else {
			prog, a := c.compileExpr(inner, m, innerOff, false)
			r.reads |= a.reads
			r.vmReads |= a.reads
			if a.stage > r.stage {
				r.stage, r.stageWhy = a.stage, a.why
			}
			if prog == nil {
				ok = false
			}
			t.parts = append(t.parts, tplPart{lit: v[:i], prog: prog})
		}
		v = v[i+2+j+2:]
	}
	t.tail = v
	if !ok {
		return nil
	}
	return t
}

// ruleKeys are the keys a rule may have.
var ruleKeys = []string{"name", "description", "when", "action", "code", "message", "header", "score", "stage", "mode", "tags"}

// compileRule reads and compiles one rule entry. It returns nil after
// reporting problems.
func (c *compiler) compileRule(src *source, n *yaml.Node) *rule {
	n = resolveAlias(n)
	if n.Kind != yaml.MappingNode {
		c.p.errorf(src.pos(n), "a rule is a mapping with name, when and action")
		return nil
	}
	fields, ok := mappingFields(src, n, ruleKeys, "rule", c.p)
	r := &rule{pos: src.pos(n)}
	str := func(key string) (string, *yaml.Node) {
		v := fields[key]
		if v == nil {
			return "", nil
		}
		if v.Kind != yaml.ScalarNode {
			c.p.errorf(src.pos(v), "%s must be a single value", key)
			ok = false
			return "", nil
		}
		return v.Value, v
	}

	name, nameNode := str("name")
	switch {
	case nameNode == nil && fields["name"] == nil:
		c.p.errorf(src.pos(n), "rule has no name")
		ok = false
	case nameNode != nil && !ruleNameRE.MatchString(name):
		c.p.errorf(src.pos(nameNode), "rule name %q: use letters, digits, '_', '-' and '.'", name)
		ok = false
	case nameNode != nil:
		r.name = name
		r.pos = src.pos(nameNode)
	}
	r.desc, _ = str("description")

	actName, actNode := str("action")
	if actNode == nil && fields["action"] == nil {
		c.p.errorf(src.pos(n), "rule %s has no action", r.name)
		ok = false
	} else if actNode != nil {
		k, known := parseKind(actName)
		if !known {
			c.p.errorf(src.pos(actNode), "unknown action %q (want accept, reject, tempfail, discard, quarantine, add_header, score, greylist, sign or no_sign)", actName)
			ok = false
		}
		r.kind = k
	}
	if !ok && actNode == nil {
		// Without an action the other fields cannot be judged.
		c.checkWhenOnly(src, fields)
		return nil
	}

	if mode, modeNode := str("mode"); modeNode != nil {
		switch mode {
		case "enforce":
		case "monitor":
			r.monitor = true
		default:
			c.p.errorf(src.pos(modeNode), "unknown mode %q (want enforce or monitor)", mode)
			ok = false
		}
	}

	if tags := fields["tags"]; tags != nil {
		switch tags.Kind {
		case yaml.ScalarNode:
			r.tags = []string{tags.Value}
		case yaml.SequenceNode:
			for _, t := range tags.Content {
				if t.Kind != yaml.ScalarNode {
					c.p.errorf(src.pos(t), "tags are a list of words")
					ok = false
					continue
				}
				r.tags = append(r.tags, t.Value)
			}
		default:
			c.p.errorf(src.pos(tags), "tags are a list of words")
			ok = false
		}
	}

	if code, codeNode := str("code"); codeNode != nil {
		if err := r.parseCode(code); err != nil {
			c.p.errorf(src.pos(codeNode), "code: %v", err)
			ok = false
		}
	}

	if s, scoreNode := str("score"); scoreNode != nil {
		f, err := strconv.ParseFloat(s, 64)
		switch {
		case r.kind != kindScore:
			c.p.errorf(src.pos(scoreNode), "score applies to action score only")
			ok = false
		case err != nil:
			c.p.errorf(src.pos(scoreNode), "score %q is not a number", s)
			ok = false
		default:
			r.score = f
		}
	} else if r.kind == kindScore && fields["score"] == nil {
		c.p.errorf(r.pos, "rule %s has action score but no score", r.name)
		ok = false
	}

	var hdrNode *yaml.Node
	if h := fields["header"]; h != nil {
		if r.kind != kindAddHeader {
			c.p.errorf(src.pos(h), "header applies to action add_header only")
			ok = false
		} else if hdrNode = c.headerField(src, h, r); hdrNode == nil {
			ok = false
		}
	} else if r.kind == kindAddHeader {
		c.p.errorf(r.pos, "rule %s has action add_header but no header: {name: ..., value: ...}", r.name)
		ok = false
	}

	msgNode := fields["message"]
	if msgNode != nil && msgNode.Kind != yaml.ScalarNode {
		c.p.errorf(src.pos(msgNode), "message must be a single value")
		ok, msgNode = false, nil
	}
	if msgNode != nil && (r.kind == kindAddHeader || r.kind == kindScore || r.kind == kindGreylist || r.kind == kindSign || r.kind == kindNoSign) {
		c.p.warnf(src.pos(msgNode), "message has no effect on action %s", r.kind)
		msgNode = nil
	}

	// Templates read variables too, so they count for the stage.
	if msgNode != nil {
		if r.message = c.compileTemplate(src, msgNode, r); r.message == nil {
			ok = false
		}
	}
	if hdrNode != nil {
		if r.hdrValue = c.compileTemplate(src, hdrNode, r); r.hdrValue == nil {
			ok = false
		}
	}

	when := fields["when"]
	switch {
	case when == nil:
		c.p.errorf(src.pos(n), "rule %s has no when (use when: true to match everything)", r.name)
		ok = false
	case when.Kind != yaml.ScalarNode:
		c.p.errorf(src.pos(when), "when must be an expression (quote it or use a | block)")
		ok = false
	case strings.TrimSpace(when.Value) == "":
		c.p.errorf(src.pos(when), "when is empty")
		ok = false
	default:
		r.when = when.Value
		r.whenPos = src.pos(when)
		prog, a := c.compileExpr(when.Value, src.scalar(when), 0, true)
		if prog == nil {
			ok = false
		}
		r.prog = prog
		r.reads |= a.reads
		r.rate = a.rate
		if a.stage > r.stage {
			r.stage, r.stageWhy = a.stage, a.why
		}
		if prog != nil {
			r.native = c.native(prog.Node())
		}
		if r.native == nil {
			r.vmReads |= a.reads
		}
	}

	// The rule runs at the first stage where all it reads is known.
	need, why := r.stage, r.stageWhy
	for id := 0; id < numVars; id++ {
		if r.reads&(1<<id) != 0 && variables[id].stage >= need {
			need, why = variables[id].stage, variables[id].name
		}
	}
	if r.kind == kindGreylist && need < policy.StageRcpt {
		// Greylisting needs the client, the sender and the recipient.
		need, why = policy.StageRcpt, "the greylist action"
	}
	r.stage = need
	if stageName, stageNode := str("stage"); stageNode != nil {
		st, err := policy.ParseStage(stageName)
		switch {
		case err != nil:
			c.p.errorf(src.pos(stageNode), "%v", err)
			ok = false
		case st < need:
			c.p.errorf(src.pos(stageNode), "stage %s is too early: the rule uses %s, known from stage %s", st, why, need)
			ok = false
		default:
			r.stage, r.explicit = st, true
		}
	}
	if !ok {
		return nil
	}
	return r
}

// checkWhenOnly still compiles a rule's condition when the rest of the
// rule is too broken to use, so one run reports every problem.
func (c *compiler) checkWhenOnly(src *source, fields map[string]*yaml.Node) {
	if w := fields["when"]; w != nil && w.Kind == yaml.ScalarNode && strings.TrimSpace(w.Value) != "" {
		c.compileExpr(w.Value, src.scalar(w), 0, true)
	}
}

// headerField reads {name: ..., value: ...} and returns the value node.
func (c *compiler) headerField(src *source, h *yaml.Node, r *rule) *yaml.Node {
	if h.Kind != yaml.MappingNode {
		c.p.errorf(src.pos(h), "header is a mapping: {name: X-Example, value: ...}")
		return nil
	}
	hf, ok := mappingFields(src, h, []string{"name", "value"}, "header", c.p)
	name, value := hf["name"], hf["value"]
	if name == nil || value == nil {
		c.p.errorf(src.pos(h), "header needs both name and value")
		return nil
	}
	if name.Kind != yaml.ScalarNode || !validHeaderName(name.Value) {
		c.p.errorf(src.pos(name), "header name %q: use printable characters without spaces or ':'", name.Value)
		return nil
	}
	if value.Kind != yaml.ScalarNode {
		c.p.errorf(src.pos(value), "header value must be a single value")
		return nil
	}
	if !ok {
		return nil
	}
	r.hdrName = name.Value
	return value
}

func validHeaderName(s string) bool {
	if s == "" || len(s) > 76 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 127 || s[i] == ':' {
			return false
		}
	}
	return true
}

// parseCode reads 550 or "550 5.7.1" and checks it fits the action.
func (r *rule) parseCode(s string) error {
	if r.kind != kindReject && r.kind != kindTempfail {
		return fmt.Errorf("applies to reject and tempfail only")
	}
	f := strings.Fields(s)
	if len(f) == 0 || len(f) > 2 {
		return fmt.Errorf("%q: want a reply code such as 550 or \"550 5.7.1\" (put text in message)", s)
	}
	code, err := strconv.Atoi(f[0])
	if err != nil || len(f[0]) != 3 {
		return fmt.Errorf("%q is not a three-digit reply code", f[0])
	}
	class := "5"
	if r.kind == kindTempfail {
		class = "4"
	}
	if f[0][:1] != class {
		return fmt.Errorf("%d does not fit %s: want %sXX", code, r.kind, class)
	}
	r.code = code
	if len(f) == 2 {
		if !enhancedRE.MatchString(f[1]) || f[1][:1] != class {
			return fmt.Errorf("%q is not an enhanced status code for %s (want %s.X.Y, RFC 3463)", f[1], r.kind, class)
		}
		r.enhanced = f[1]
	}
	return nil
}

// mappingFields collects a mapping's keys, reporting duplicate and
// unknown ones. ok is false when there were problems.
func mappingFields(src *source, n *yaml.Node, known []string, what string, p *problems) (map[string]*yaml.Node, bool) {
	return mergedFields(src, n, known, what, p, 0)
}

func mergedFields(src *source, n *yaml.Node, known []string, what string, p *problems, depth int) (map[string]*yaml.Node, bool) {
	if depth > 8 {
		p.errorf(src.pos(n), "<< merges nest too deep")
		return nil, false
	}
	fields := map[string]*yaml.Node{}
	ok := true
	var merged []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolveAlias(n.Content[i+1])
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			// <<: *defaults merges a shared mapping; keys written here win.
			if v.Kind == yaml.SequenceNode {
				merged = append(merged, v.Content...)
			} else {
				merged = append(merged, v)
			}
			continue
		}
		switch {
		case k.Kind != yaml.ScalarNode:
			p.errorf(src.pos(k), "%s keys are plain words", what)
			ok = false
		case fields[k.Value] != nil:
			p.errorf(src.pos(k), "%s key %q given twice", what, k.Value)
			ok = false
		case !slices.Contains(known, k.Value):
			msg := fmt.Sprintf("unknown %s key %q", what, k.Value)
			if s := config.Suggest(k.Value, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			p.errorf(src.pos(k), "%s", msg)
			ok = false
		default:
			fields[k.Value] = v
		}
	}
	for _, m := range merged {
		m = resolveAlias(m)
		if m.Kind != yaml.MappingNode {
			p.errorf(src.pos(m), "<< merges a mapping")
			ok = false
			continue
		}
		mf, mok := mergedFields(src, m, known, what, p, depth+1)
		ok = ok && mok
		for k, v := range mf {
			if fields[k] == nil {
				fields[k] = v
			}
		}
	}
	return fields, ok
}

// resolveAlias follows *alias to its anchored node.
func resolveAlias(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < 16; i++ {
		n = n.Alias
	}
	return n
}
