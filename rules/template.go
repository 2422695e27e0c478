package rules

import (
	"fmt"
	"mime"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/expr-lang/expr/vm"
	"gopkg.in/yaml.v3"

	"github.com/mailward/mailward/policy"
)

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
			r.addLists(a)
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

// Run-time limits of the text rules produce.
const (
	maxReplyText   = 400 // an SMTP reply line is at most 512 octets
	maxHeaderValue = 900 // a header line is at most 998 octets
)

// render fills in a template. A part that fails renders empty; the
// failure counts as the rule's error.
func (t *template) render(st *state, s *Set, r *rule, stage policy.Stage, h *hooks) string {
	if len(t.parts) == 0 {
		return t.tail
	}
	var b strings.Builder
	for _, p := range t.parts {
		b.WriteString(p.lit)
		out, err := st.vm.Run(p.prog, st.vals)
		if err != nil {
			if h == nil || !h.dry {
				s.evalError(r, stage, st.facts, fmt.Errorf("template: %w", err))
			}
			continue
		}
		b.WriteString(format(out))
	}
	b.WriteString(t.tail)
	return b.String()
}

func format(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case []string:
		return strings.Join(x, ", ")
	case time.Time:
		return x.Format(time.RFC3339)
	}
	return fmt.Sprint(v)
}

// replyText makes text safe for an SMTP reply: one line of printable
// ASCII, so nothing a sender controls can add reply lines.
func replyText(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < ' ' || r == 0x7f:
			b.WriteByte(' ')
		case r > 0x7e:
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
		if b.Len() >= maxReplyText {
			break
		}
	}
	return strings.TrimSpace(b.String())
}

// headerText makes text safe for a header value: one line, non-ASCII
// encoded as RFC 2047 words.
func headerText(s string) string {
	var b strings.Builder
	ascii := true
	for _, r := range s {
		switch {
		case r < ' ' || r == 0x7f || r == utf8.RuneError:
			b.WriteByte(' ')
		default:
			if r > 0x7e {
				ascii = false
			}
			b.WriteRune(r)
		}
		if b.Len() >= maxHeaderValue {
			break
		}
	}
	out := strings.TrimSpace(b.String())
	if !ascii {
		out = mime.QEncoding.Encode("utf-8", out)
	}
	return out
}
