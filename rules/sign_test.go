package rules

import (
	"context"
	"testing"

	"github.com/mailward/mailward/policy"
)

func TestSignActions(t *testing.T) {
	s, err := loadWith(t, memCache(t), `
rules:
  - name: sign-alice
    when: mail_from == "alice@example.org"
    action: sign
  - name: no-sign-example-org
    when: mail_from endsWith "@example.org"
    action: no_sign
  - name: reject-bounces
    when: mail_from == "bounce@example.org"
    action: reject
`)
	if err != nil {
		t.Fatal(err)
	}
	f := fullFacts()
	var ms []policy.Match
	v := s.Eval(context.Background(), policy.StageMail, f, &ms)
	if v.Action != policy.Continue || v.Sign != policy.SignYes || len(ms) != 2 || ms[0].Action != "sign" || ms[1].Action != "no_sign" {
		t.Fatalf("sign match: %+v %+v", v, ms)
	}
	// Both matched; the first holds.
	f.MailFrom = "bounce@example.org"
	// A later terminal rule still decides.
	v = s.Eval(context.Background(), policy.StageMail, f, nil)
	if v.Sign != policy.SignNo || v.Action != policy.Reject {
		t.Fatalf("no_sign then reject: %+v", v)
	}
	f.MailFrom = "carol@example.org"
	if v := s.Eval(context.Background(), policy.StageMail, f, nil); v.Sign != policy.SignNo || v.Action != policy.Continue {
		t.Fatalf("no_sign: %+v", v)
	}
	if _, err := loadWith(t, memCache(t), "rules:\n  - {name: x, when: 'true', action: sign, message: hi}\n"); err != nil {
		t.Fatalf("a message on sign is a warning, not an error: %v", err)
	}
}
