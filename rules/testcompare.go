package rules

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/mailward/mailward/policy"
)

func describe(v policy.Verdict) string {
	s := fmt.Sprintf("%s at %s", v.Action, v.Stage)
	if v.Rule != "" {
		s += " by rule " + v.Rule
	} else if v.Reason != "" {
		s += " (" + v.Reason + ")"
	}
	return s
}

// compare lists what differs between the expectation and what happened.
func (e *expectation) compare(v policy.Verdict, res TestResult) []string {
	var diffs []string
	if e.action != nil && *e.action != v.Action {
		diffs = append(diffs, fmt.Sprintf("action: got %s, want %s", describe(v), e.action))
	}
	if e.stage != nil && *e.stage != v.Stage {
		diffs = append(diffs, fmt.Sprintf("stage: got %s, want %s", describe(v), e.stage))
	}
	matched := "none"
	if len(res.Matched) > 0 {
		matched = strings.Join(res.Matched, ", ")
	}
	for _, r := range e.rules {
		if !slices.Contains(res.Matched, r) {
			diffs = append(diffs, fmt.Sprintf("rule %s did not match (matched: %s)", r, matched))
		}
	}
	for _, r := range e.notRules {
		if slices.Contains(res.Matched, r) {
			diffs = append(diffs, fmt.Sprintf("rule %s matched and should not have", r))
		}
	}
	if e.score != nil && math.Abs(*e.score-res.Score) > 1e-9 {
		diffs = append(diffs, fmt.Sprintf("score: got %g, want %g (matched: %s)", res.Score, *e.score, matched))
	}
	if e.code != 0 && (e.code != v.Code || (e.enhanced != "" && e.enhanced != v.Enhanced)) {
		got := strings.TrimSpace(fmt.Sprintf("%d %s", v.Code, v.Enhanced))
		want := strings.TrimSpace(fmt.Sprintf("%d %s", e.code, e.enhanced))
		diffs = append(diffs, fmt.Sprintf("code: got %s, want %s", got, want))
	}
	if e.message != nil {
		got := v.Text
		if v.Action != policy.Reject && v.Action != policy.Tempfail {
			got = v.Reason
		}
		if got != *e.message {
			diffs = append(diffs, fmt.Sprintf("message: got %q, want %q", got, *e.message))
		}
	}
	for _, want := range e.headers {
		// A test states the value as read, not as RFC 2047 encodes it
		// for the wire; the encoded form matches too.
		var values []string
		found := false
		for _, h := range v.Headers {
			if strings.EqualFold(h.Name, want.Name) {
				decoded := decodeHeader(h.Value)
				values = append(values, decoded)
				found = found || h.Value == want.Value || decoded == want.Value
			}
		}
		switch {
		case len(values) == 0:
			diffs = append(diffs, fmt.Sprintf("header %s: not added", want.Name))
		case !found:
			diffs = append(diffs, fmt.Sprintf("header %s: got %q, want %q", want.Name, strings.Join(values, `", "`), want.Value))
		}
	}
	return diffs
}
