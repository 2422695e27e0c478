package rules

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/expr-lang/expr/vm"
	"gopkg.in/yaml.v3"

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
	// lists are the DNS list zones the rule names; listsAny: it also reads
	// the lists without naming a zone, so any failed list concerns it.
	lists    []string
	listsAny bool

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
	enhancedRE = regexp.MustCompile(`^[245]\.[0-9]{1,3}\.[0-9]{1,3}$`)
)

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
	e := &ruleEntry{c: c, src: src, n: n, fields: fields, r: &rule{pos: src.pos(n)}, ok: ok}
	e.name()
	e.r.desc, _ = e.str("description")
	if !e.action() {
		// Without an action the other fields cannot be judged.
		c.checkWhenOnly(src, fields)
		return nil
	}
	e.mode()
	e.tags()
	e.code()
	e.score()
	// Templates read variables too, so they count for the stage.
	e.templates()
	e.when()
	e.stage()
	if !e.ok {
		return nil
	}
	return e.r
}

// ruleEntry is one rule entry as it is read, field by field. ok turns
// false at the first problem, but reading goes on so that one run
// reports every problem of the entry.
type ruleEntry struct {
	c      *compiler
	src    *source
	n      *yaml.Node
	fields map[string]*yaml.Node
	r      *rule
	ok     bool
}

func (e *ruleEntry) errorf(at Pos, format string, args ...any) {
	e.c.p.errorf(at, format, args...)
	e.ok = false
}

// str returns a field that must be a scalar, and its node; nil when the
// field is absent or not a scalar.
func (e *ruleEntry) str(key string) (string, *yaml.Node) {
	v := e.fields[key]
	if v == nil {
		return "", nil
	}
	if v.Kind != yaml.ScalarNode {
		e.errorf(e.src.pos(v), "%s must be a single value", key)
		return "", nil
	}
	return v.Value, v
}

func (e *ruleEntry) name() {
	name, nameNode := e.str("name")
	switch {
	case nameNode == nil && e.fields["name"] == nil:
		e.errorf(e.src.pos(e.n), "rule has no name")
	case nameNode != nil && !ruleNameRE.MatchString(name):
		e.errorf(e.src.pos(nameNode), "rule name %q: use letters, digits, '_', '-' and '.'", name)
	case nameNode != nil:
		e.r.name = name
		e.r.pos = e.src.pos(nameNode)
	}
}

// action reads what the rule does. It returns false when the entry is
// too broken for the other fields to be judged.
func (e *ruleEntry) action() bool {
	actName, actNode := e.str("action")
	if actNode == nil && e.fields["action"] == nil {
		e.errorf(e.src.pos(e.n), "rule %s has no action", e.r.name)
	} else if actNode != nil {
		k, known := parseKind(actName)
		if !known {
			e.errorf(e.src.pos(actNode), "unknown action %q (want accept, reject, tempfail, discard, quarantine, add_header, score, greylist, sign or no_sign)", actName)
		}
		e.r.kind = k
	}
	return e.ok || actNode != nil
}

func (e *ruleEntry) mode() {
	mode, modeNode := e.str("mode")
	if modeNode == nil {
		return
	}
	switch mode {
	case "enforce":
	case "monitor":
		e.r.monitor = true
	default:
		e.errorf(e.src.pos(modeNode), "unknown mode %q (want enforce or monitor)", mode)
	}
}

func (e *ruleEntry) tags() {
	tags := e.fields["tags"]
	if tags == nil {
		return
	}
	switch tags.Kind {
	case yaml.ScalarNode:
		e.r.tags = []string{tags.Value}
	case yaml.SequenceNode:
		for _, t := range tags.Content {
			if t.Kind != yaml.ScalarNode {
				e.errorf(e.src.pos(t), "tags are a list of words")
				continue
			}
			e.r.tags = append(e.r.tags, t.Value)
		}
	default:
		e.errorf(e.src.pos(tags), "tags are a list of words")
	}
}

func (e *ruleEntry) code() {
	if code, codeNode := e.str("code"); codeNode != nil {
		if err := e.r.parseCode(code); err != nil {
			e.errorf(e.src.pos(codeNode), "code: %v", err)
		}
	}
}

func (e *ruleEntry) score() {
	r := e.r
	s, scoreNode := e.str("score")
	if scoreNode == nil {
		if r.kind == kindScore && e.fields["score"] == nil {
			e.errorf(r.pos, "rule %s has action score but no score", r.name)
		}
		return
	}
	f, err := strconv.ParseFloat(s, 64)
	switch {
	case r.kind != kindScore:
		e.errorf(e.src.pos(scoreNode), "score applies to action score only")
	case err != nil:
		e.errorf(e.src.pos(scoreNode), "score %q is not a number", s)
	default:
		r.score = f
	}
}

// templates compiles the message and the added header's value.
func (e *ruleEntry) templates() {
	r, c, src := e.r, e.c, e.src
	var hdrNode *yaml.Node
	if h := e.fields["header"]; h != nil {
		if r.kind != kindAddHeader {
			e.errorf(src.pos(h), "header applies to action add_header only")
		} else if hdrNode = c.headerField(src, h, r); hdrNode == nil {
			e.ok = false
		}
	} else if r.kind == kindAddHeader {
		e.errorf(r.pos, "rule %s has action add_header but no header: {name: ..., value: ...}", r.name)
	}

	msgNode := e.fields["message"]
	if msgNode != nil && msgNode.Kind != yaml.ScalarNode {
		e.errorf(src.pos(msgNode), "message must be a single value")
		msgNode = nil
	}
	if msgNode != nil && (r.kind == kindAddHeader || r.kind == kindScore || r.kind == kindGreylist || r.kind == kindSign || r.kind == kindNoSign) {
		c.p.warnf(src.pos(msgNode), "message has no effect on action %s", r.kind)
		msgNode = nil
	}

	if msgNode != nil {
		if r.message = c.compileTemplate(src, msgNode, r); r.message == nil {
			e.ok = false
		}
	}
	if hdrNode != nil {
		if r.hdrValue = c.compileTemplate(src, hdrNode, r); r.hdrValue == nil {
			e.ok = false
		}
	}
}

// when compiles the condition, natively where it has a common shape.
func (e *ruleEntry) when() {
	r, src := e.r, e.src
	when := e.fields["when"]
	switch {
	case when == nil:
		e.errorf(src.pos(e.n), "rule %s has no when (use when: true to match everything)", r.name)
		return
	case when.Kind != yaml.ScalarNode:
		e.errorf(src.pos(when), "when must be an expression (quote it or use a | block)")
		return
	case strings.TrimSpace(when.Value) == "":
		e.errorf(src.pos(when), "when is empty")
		return
	}
	r.when = when.Value
	r.whenPos = src.pos(when)
	prog, a := e.c.compileExpr(when.Value, src.scalar(when), 0, true)
	if prog == nil {
		e.ok = false
	}
	r.prog = prog
	r.reads |= a.reads
	r.addLists(a)
	r.rate = a.rate
	if a.stage > r.stage {
		r.stage, r.stageWhy = a.stage, a.why
	}
	if prog != nil {
		r.native = e.c.native(prog.Node())
	}
	if r.native == nil {
		r.vmReads |= a.reads
	}
}

// stage sets the stage the rule runs at: the first where all it reads is
// known, or a later one the file names.
func (e *ruleEntry) stage() {
	r := e.r
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
	stageName, stageNode := e.str("stage")
	if stageNode == nil {
		return
	}
	st, err := policy.ParseStage(stageName)
	switch {
	case err != nil:
		e.errorf(e.src.pos(stageNode), "%v", err)
	case st < need:
		e.errorf(e.src.pos(stageNode), "stage %s is too early: the rule uses %s, known from stage %s", st, why, need)
	default:
		r.stage, r.explicit = st, true
	}
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
