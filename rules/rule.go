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
