package rules

import (
	"reflect"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/expr-lang/expr/ast"
)

// The common shapes of conditions (comparisons of variables with
// constants, string tests, list look-ups, any() over attachments) are
// also compiled to Go closures that read the env directly: they give the
// same answers as the expr program, a few times faster, which keeps a
// thousand rules within budget. Anything else runs in expr's VM. The
// checked, optimized expr tree is the input, so typing and constant
// folding are expr's; differential tests hold the two to the same answers.

type (
	boolFn func(*state) bool
	strFn  func(*state) string
	numFn  func(*state) float64
)

// nativeCtx says what # and .field mean while compiling a predicate.
type nativeCtx struct {
	elem string // "", "attachment", "dkim" or "string"
}

// native compiles a condition, or returns nil when it has a shape only
// the VM runs.
func (c *compiler) native(n ast.Node) boolFn {
	return c.nBool(n, nativeCtx{})
}

func isKind(n ast.Node, k reflect.Kind) bool {
	t := n.Type()
	return t != nil && t.Kind() == k
}

func isNum(n ast.Node) bool {
	t := n.Type()
	if t == nil {
		return false
	}
	switch t.Kind() {
	case reflect.Int, reflect.Float64:
		return true
	}
	return false
}

func (c *compiler) nBool(n ast.Node, nc nativeCtx) boolFn {
	switch x := n.(type) {
	case *ast.BoolNode:
		v := x.Value
		return func(*state) bool { return v }
	case *ast.IdentifierNode:
		switch x.Value {
		case "fcrdns":
			return func(st *state) bool { return st.env.FCrDNS }
		case "tls":
			return func(st *state) bool { return st.env.TLS }
		}
	case *ast.MemberNode:
		if id, ok := x.Node.(*ast.IdentifierNode); ok && id.Value == "dmarc" && propName(x) == "testing" && !x.Optional {
			return func(st *state) bool { return st.env.DMARC.Testing }
		}
	case *ast.UnaryNode:
		if x.Operator == "!" || x.Operator == "not" {
			if f := c.nBool(x.Node, nc); f != nil {
				return func(st *state) bool { return !f(st) }
			}
		}
	case *ast.BinaryNode:
		return c.nBinary(x, nc)
	case *ast.CallNode:
		return c.nCallBool(x, nc)
	case *ast.BuiltinNode:
		return c.nPredicate(x, nc)
	}
	return nil
}

func (c *compiler) nBinary(x *ast.BinaryNode, nc nativeCtx) boolFn {
	switch x.Operator {
	case "&&", "and", "||", "or":
		l, r := c.nBool(x.Left, nc), c.nBool(x.Right, nc)
		if l == nil || r == nil {
			return nil
		}
		if x.Operator == "&&" || x.Operator == "and" {
			return func(st *state) bool { return l(st) && r(st) }
		}
		return func(st *state) bool { return l(st) || r(st) }
	case "==", "!=":
		eq := c.nEqual(x.Left, x.Right, nc)
		if eq == nil {
			return nil
		}
		if x.Operator == "!=" {
			return func(st *state) bool { return !eq(st) }
		}
		return eq
	case "<", ">", "<=", ">=":
		if !isNum(x.Left) || !isNum(x.Right) {
			return nil
		}
		l, r := c.nNum(x.Left, nc), c.nNum(x.Right, nc)
		if l == nil || r == nil {
			return nil
		}
		switch x.Operator {
		case "<":
			return func(st *state) bool { return l(st) < r(st) }
		case ">":
			return func(st *state) bool { return l(st) > r(st) }
		case "<=":
			return func(st *state) bool { return l(st) <= r(st) }
		default:
			return func(st *state) bool { return l(st) >= r(st) }
		}
	case "contains", "startsWith", "endsWith":
		if !isKind(x.Left, reflect.String) || !isKind(x.Right, reflect.String) {
			return nil
		}
		l, r := c.nStr(x.Left, nc), c.nStr(x.Right, nc)
		if l == nil || r == nil {
			return nil
		}
		switch x.Operator {
		case "contains":
			return func(st *state) bool { return strings.Contains(l(st), r(st)) }
		case "startsWith":
			return func(st *state) bool { return strings.HasPrefix(l(st), r(st)) }
		default:
			return func(st *state) bool { return strings.HasSuffix(l(st), r(st)) }
		}
	case "matches":
		pat, ok := x.Right.(*ast.StringNode)
		if !ok || !isKind(x.Left, reflect.String) {
			return nil
		}
		re, err := regexp.Compile(pat.Value)
		l := c.nStr(x.Left, nc)
		if err != nil || l == nil {
			return nil
		}
		return func(st *state) bool { return re.MatchString(l(st)) }
	case "in":
		return c.nIn(x, nc)
	}
	return nil
}

func (c *compiler) nEqual(a, b ast.Node, nc nativeCtx) boolFn {
	switch {
	case isKind(a, reflect.String) && isKind(b, reflect.String):
		l, r := c.nStr(a, nc), c.nStr(b, nc)
		if l == nil || r == nil {
			return nil
		}
		return func(st *state) bool { return l(st) == r(st) }
	case isNum(a) && isNum(b):
		l, r := c.nNum(a, nc), c.nNum(b, nc)
		if l == nil || r == nil {
			return nil
		}
		return func(st *state) bool { return l(st) == r(st) }
	case isKind(a, reflect.Bool) && isKind(b, reflect.Bool):
		l, r := c.nBool(a, nc), c.nBool(b, nc)
		if l == nil || r == nil {
			return nil
		}
		return func(st *state) bool { return l(st) == r(st) }
	}
	return nil
}

func (c *compiler) nIn(x *ast.BinaryNode, nc nativeCtx) boolFn {
	if !isKind(x.Left, reflect.String) {
		return nil
	}
	key := c.nStr(x.Left, nc)
	if key == nil {
		return nil
	}
	switch r := x.Right.(type) {
	case *ast.ConstantNode:
		// The optimizer turns a constant array of strings into a set.
		if set, ok := r.Value.(map[string]struct{}); ok {
			return func(st *state) bool { _, ok := set[key(st)]; return ok }
		}
	case *ast.IdentifierNode:
		switch r.Value {
		case "dnsbl":
			return func(st *state) bool { _, ok := st.env.DNSBL[key(st)]; return ok }
		case "headers":
			return func(st *state) bool { _, ok := st.env.Headers[key(st)]; return ok }
		case "rcpts":
			return func(st *state) bool {
				k := key(st)
				for _, s := range st.env.Rcpts {
					if s == k {
						return true
					}
				}
				return false
			}
		}
	}
	return nil
}

func (c *compiler) nCallBool(x *ast.CallNode, nc nativeCtx) boolFn {
	id, ok := x.Callee.(*ast.IdentifierNode)
	if !ok || len(x.Arguments) != 2 {
		return nil
	}
	var name ast.Node
	var value ast.Node
	switch id.Value {
	case "in_list":
		name, value = x.Arguments[0], x.Arguments[1]
	case "in_cidr":
		name, value = x.Arguments[1], x.Arguments[0]
	default:
		return nil
	}
	s, ok := name.(*ast.StringNode)
	if !ok {
		return nil
	}
	l := c.lists[s.Value]
	if l == nil || (id.Value == "in_cidr" && l.kind != listIP) {
		return nil // the VM reports the error at run time
	}
	v := c.nStr(value, nc)
	if v == nil {
		return nil
	}
	return func(st *state) bool { return l.contains(v(st)) }
}

// nPredicate compiles any/all/none/one over attachments, dkim or rcpts.
func (c *compiler) nPredicate(x *ast.BuiltinNode, nc nativeCtx) boolFn {
	if nc.elem != "" || len(x.Arguments) != 2 {
		return nil // nested predicates run in the VM
	}
	switch x.Name {
	case "any", "all", "none", "one":
	default:
		return nil
	}
	coll, ok := x.Arguments[0].(*ast.IdentifierNode)
	pred, ok2 := x.Arguments[1].(*ast.PredicateNode)
	if !ok || !ok2 {
		return nil
	}
	var elem string
	switch coll.Value {
	case "attachments":
		elem = "attachment"
	case "dkim":
		elem = "dkim"
	case "rcpts":
		elem = "string"
	default:
		return nil
	}
	p := c.nBool(pred.Node, nativeCtx{elem: elem})
	if p == nil {
		return nil
	}
	var count func(st *state, stopAt int) int
	switch elem {
	case "attachment":
		count = func(st *state, stopAt int) int {
			n := 0
			for i := range st.env.Attachments {
				st.curAttachment = &st.env.Attachments[i]
				if p(st) {
					if n++; n >= stopAt {
						break
					}
				}
			}
			st.curAttachment = nil
			return n
		}
	case "dkim":
		count = func(st *state, stopAt int) int {
			n := 0
			for i := range st.env.DKIM {
				st.curDKIM = &st.env.DKIM[i]
				if p(st) {
					if n++; n >= stopAt {
						break
					}
				}
			}
			st.curDKIM = nil
			return n
		}
	default:
		count = func(st *state, stopAt int) int {
			n := 0
			for _, s := range st.env.Rcpts {
				st.curString = s
				if p(st) {
					if n++; n >= stopAt {
						break
					}
				}
			}
			st.curString = ""
			return n
		}
	}
	length := func(st *state) int {
		switch elem {
		case "attachment":
			return len(st.env.Attachments)
		case "dkim":
			return len(st.env.DKIM)
		}
		return len(st.env.Rcpts)
	}
	switch x.Name {
	case "any":
		return func(st *state) bool { return count(st, 1) == 1 }
	case "none":
		return func(st *state) bool { return count(st, 1) == 0 }
	case "one":
		return func(st *state) bool { return count(st, 2) == 1 }
	default: // all
		return func(st *state) bool { return count(st, int(^uint(0)>>1)) == length(st) }
	}
}

func propName(m *ast.MemberNode) string {
	if s, ok := m.Property.(*ast.StringNode); ok {
		return s.Value
	}
	return ""
}

func (c *compiler) nStr(n ast.Node, nc nativeCtx) strFn {
	switch x := n.(type) {
	case *ast.StringNode:
		v := x.Value
		return func(*state) string { return v }
	case *ast.IdentifierNode:
		return strVar(x.Value)
	case *ast.PointerNode:
		if nc.elem == "string" && x.Name == "" {
			return func(st *state) string { return st.curString }
		}
	case *ast.MemberNode:
		if x.Optional {
			return nil
		}
		prop := propName(x)
		switch node := x.Node.(type) {
		case *ast.IdentifierNode:
			if node.Value == "dmarc" {
				return dmarcField(prop)
			}
		case *ast.PointerNode:
			if node.Name != "" {
				return nil
			}
			switch nc.elem {
			case "attachment":
				switch prop {
				case "name":
					return func(st *state) string { return st.curAttachment.Name }
				case "content_type":
					return func(st *state) string { return st.curAttachment.ContentType }
				}
			case "dkim":
				return dkimField(prop)
			}
		}
	case *ast.CallNode:
		id, ok := x.Callee.(*ast.IdentifierNode)
		if !ok {
			return nil
		}
		switch {
		case id.Value == "header" && len(x.Arguments) == 1:
			a := c.nStr(x.Arguments[0], nc)
			if a == nil {
				return nil
			}
			return func(st *state) string { return st.headerValue(a(st)) }
		case id.Value == "domain_of" && len(x.Arguments) == 1:
			a := c.nStr(x.Arguments[0], nc)
			if a == nil {
				return nil
			}
			return func(st *state) string { s, _ := domainOf(a(st)); return s.(string) }
		case id.Value == "org_domain" && len(x.Arguments) == 2:
			a := c.nStr(x.Arguments[1], nc)
			if a == nil {
				return nil
			}
			fs := c.funcs
			return func(st *state) string { s, _ := fs.orgDomain(st.env.Ctx, a(st)); return s.(string) }
		}
	case *ast.BuiltinNode:
		if len(x.Arguments) != 1 || !isKind(x.Arguments[0], reflect.String) {
			return nil
		}
		a := c.nStr(x.Arguments[0], nc)
		if a == nil {
			return nil
		}
		switch x.Name {
		case "lower":
			return func(st *state) string { return strings.ToLower(a(st)) }
		case "upper":
			return func(st *state) string { return strings.ToUpper(a(st)) }
		}
	}
	return nil
}

func strVar(name string) strFn {
	switch name {
	case "ip":
		return func(st *state) string { return st.env.IP }
	case "ptr":
		return func(st *state) string { return st.env.PTR }
	case "iprev":
		return func(st *state) string { return st.env.IPRev }
	case "queue_id":
		return func(st *state) string { return st.env.QueueID }
	case "helo":
		return func(st *state) string { return st.env.Helo }
	case "spf_helo":
		return func(st *state) string { return st.env.SPFHelo }
	case "mail_from":
		return func(st *state) string { return st.env.MailFrom }
	case "mail_from_domain":
		return func(st *state) string { return st.env.MailFromDomain }
	case "auth_user":
		return func(st *state) string { return st.env.AuthUser }
	case "spf":
		return func(st *state) string { return st.env.SPF }
	case "rcpt":
		return func(st *state) string { return st.env.Rcpt }
	case "subject":
		return func(st *state) string { return st.env.Subject }
	case "body_text":
		return func(st *state) string { return st.env.BodyText }
	case "header_from":
		return func(st *state) string { return st.env.HeaderFrom }
	case "header_from_domain":
		return func(st *state) string { return st.env.HeaderFromDomain }
	case "message_id":
		return func(st *state) string { return st.env.MessageID }
	}
	return nil
}

func dmarcField(prop string) strFn {
	switch prop {
	case "result":
		return func(st *state) string { return st.env.DMARC.Result }
	case "policy":
		return func(st *state) string { return st.env.DMARC.Policy }
	case "domain":
		return func(st *state) string { return st.env.DMARC.Domain }
	case "policy_domain":
		return func(st *state) string { return st.env.DMARC.PolicyDomain }
	case "org_domain":
		return func(st *state) string { return st.env.DMARC.OrgDomain }
	case "reason":
		return func(st *state) string { return st.env.DMARC.Reason }
	}
	return nil
}

func dkimField(prop string) strFn {
	switch prop {
	case "domain":
		return func(st *state) string { return st.curDKIM.Domain }
	case "selector":
		return func(st *state) string { return st.curDKIM.Selector }
	case "algorithm":
		return func(st *state) string { return st.curDKIM.Algorithm }
	case "result":
		return func(st *state) string { return st.curDKIM.Result }
	case "reason":
		return func(st *state) string { return st.curDKIM.Reason }
	}
	return nil
}

func (c *compiler) nNum(n ast.Node, nc nativeCtx) numFn {
	switch x := n.(type) {
	case *ast.IntegerNode:
		v := float64(x.Value)
		return func(*state) float64 { return v }
	case *ast.FloatNode:
		v := x.Value
		return func(*state) float64 { return v }
	case *ast.IdentifierNode:
		switch x.Value {
		case "ip_version":
			return func(st *state) float64 { return float64(st.env.IPVersion) }
		case "rcpt_count":
			return func(st *state) float64 { return float64(st.env.RcptCount) }
		case "size":
			return func(st *state) float64 { return float64(st.env.Size) }
		case "score":
			return func(st *state) float64 { return st.env.Score }
		}
	case *ast.MemberNode:
		if p, ok := x.Node.(*ast.PointerNode); ok && p.Name == "" && nc.elem == "attachment" && propName(x) == "size" && !x.Optional {
			return func(st *state) float64 { return float64(st.curAttachment.Size) }
		}
	case *ast.BuiltinNode:
		if x.Name != "len" || len(x.Arguments) != 1 {
			return nil
		}
		switch a := x.Arguments[0].(type) {
		case *ast.IdentifierNode:
			switch a.Value {
			case "rcpts":
				return func(st *state) float64 { return float64(len(st.env.Rcpts)) }
			case "attachments":
				return func(st *state) float64 { return float64(len(st.env.Attachments)) }
			case "dkim":
				return func(st *state) float64 { return float64(len(st.env.DKIM)) }
			case "dnsbl":
				return func(st *state) float64 { return float64(len(st.env.DNSBL)) }
			case "headers":
				return func(st *state) float64 { return float64(len(st.env.Headers)) }
			}
		}
		if isKind(x.Arguments[0], reflect.String) {
			if s := c.nStr(x.Arguments[0], nc); s != nil {
				return func(st *state) float64 { return float64(utf8.RuneCountInString(s(st))) }
			}
		}
	}
	return nil
}
