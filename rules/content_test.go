package rules

import (
	"context"
	"slices"
	"testing"

	"github.com/mailward/mailward/policy"
)

// A front that never sees the message skips the rules that read it,
// rather than run them on an empty header.
func TestNoContentSkipsMessageRules(t *testing.T) {
	s := loadRules(t, `
rules:
  - name: no-message-id
    when: message_id == ""
    action: score
    score: 1
  - name: sender
    when: mail_from_domain == "example.org"
    action: score
    score: 2
  - name: signed
    when: len(dkim) == 0
    action: reject
`)
	if got := s.ContentRules(); !slices.Equal(got, []string{"no-message-id", "signed"}) {
		t.Errorf("ContentRules() = %v", got)
	}
	f := &policy.Facts{MailFrom: "a@example.org", NoContent: true}
	v, ms := evalAll(s, f)
	if names := matchNames(ms); !slices.Equal(names, []string{"sender"}) || v.Action != policy.Continue || f.Score != 2 {
		t.Errorf("matched %v, %s, score %g; want sender only", names, v.Action, f.Score)
	}
	var skipped []string
	tr := s.Traced(func(e Explanation) {
		if e.Skipped != "" {
			skipped = append(skipped, e.Rule)
		}
	})
	g := &policy.Facts{NoContent: true}
	tr.Eval(context.Background(), policy.StageData, g, nil)
	tr.Eval(context.Background(), policy.StageEOM, g, nil)
	if !slices.Equal(skipped, []string{"no-message-id", "signed"}) {
		t.Errorf("explained as skipped: %v", skipped)
	}
	f = &policy.Facts{MailFrom: "a@example.org"}
	if _, ms := evalAll(s, f); len(ms) != 3 {
		t.Errorf("with the message seen: matched %v", matchNames(ms))
	}
}
