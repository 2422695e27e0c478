package policyd

import (
	"strconv"
	"strings"

	"github.com/mailward/mailward/policy"
)

// deferAnswer is the answer to a request mailward cannot use: Postfix
// defers the mail unless something else rejects it, so nothing is
// accepted unchecked.
const deferAnswer = "DEFER_IF_PERMIT Service temporarily unavailable"

// action turns a verdict into an access(5) action. prepend is a header
// ("Name: value") to add when the verdict lets the message go on, "" for
// none; Postfix takes one action per answer, so a header replaces DUNNO.
// It reports whether prepend was used.
func action(v policy.Verdict, prepend string) (string, bool) {
	switch v.Action {
	case policy.Continue:
		if prepend != "" {
			return "PREPEND " + prepend, true
		}
		return "DUNNO", false
	case policy.Accept:
		// Only at DATA, where permit and DUNNO end alike, may an accept
		// carry a header instead.
		if prepend != "" {
			return "PREPEND " + prepend, true
		}
		return "OK", false
	case policy.Reject, policy.Tempfail:
		// access(5): a 4xx or 5xx code with an RFC 3463 status and text.
		v = v.WithDefaults()
		return strconv.Itoa(v.Code) + " " + v.Enhanced + " " + text(v.Text, "Access denied"), false
	case policy.Discard:
		return "DISCARD " + text(firstOf(v.Text, v.Reason, rule(v)), "Discarded by policy"), false
	case policy.Quarantine:
		return "HOLD " + text(firstOf(v.Reason, v.Text, rule(v)), "Quarantined by policy"), false
	}
	// An action this front does not know must not pass as an accept.
	return deferAnswer, false
}

// header renders one edit as PREPEND wants it, or "" if it cannot be one.
func header(h policy.HeaderEdit) string {
	if h.Name == "" || strings.IndexFunc(h.Name, func(r rune) bool { return r <= ' ' || r >= 0x7f || r == ':' }) >= 0 {
		return ""
	}
	return h.Name + ": " + strings.TrimSpace(oneLine(unfold(h.Value)))
}

// unfold joins a folded header value onto one line.
func unfold(s string) string {
	s = strings.ReplaceAll(s, "\r\n\t", " ")
	return strings.ReplaceAll(s, "\r\n ", " ")
}

func rule(v policy.Verdict) string {
	if v.Rule == "" {
		return ""
	}
	return "rule " + v.Rule
}

func firstOf(s ...string) string {
	for _, x := range s {
		if strings.TrimSpace(x) != "" {
			return x
		}
	}
	return ""
}

// text makes a reply text fit one attribute line.
func text(s, def string) string {
	s = strings.TrimSpace(oneLine(s))
	if s == "" {
		return def
	}
	return s
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return ' '
		}
		return r
	}, s)
}
