package journal

import (
	"context"
	"testing"

	"github.com/mailward/mailward/policy"
)

// TestDiff: a rule turned into a monitor-mode reject counts as the
// reject it would give; removed rules no longer match; each change has
// an example naming the rules and values that decided it.
func TestDiff(t *testing.T) {
	lines := readAll(t, "testdata/v1.jsonl")
	clean, err := Parse([]byte(`{"v":1,"time":"2026-11-20T12:00:00Z","front":"milter","ip":"192.0.2.1","helo":"ok.example","mail_from":"a@ok.example","rcpts":[{"rcpt":"ann@example.com","action":"accept"}],"headers":[{"name":"Subject","value":"hi"}],"checks":{"spf":{"result":"pass"}},"reached":"eom","verdict":{"action":"accept","stage":"eom"}}`))
	if err != nil {
		t.Fatal(err)
	}
	d := &Differ{Settings: policy.Settings{Hostname: "mx.test"}, Old: loadRules(t, "testdata/rules.yaml"), New: loadRules(t, "testdata/new-rules.yaml"), Examples: 1, Log: quiet()}
	for _, l := range []*Line{lines[0], clean, lines[0]} {
		if err := d.Add(context.Background(), l); err != nil {
			t.Fatal(err)
		}
	}
	res := d.Result()
	if res.Transactions != 3 || res.Changed != 2 || len(res.Verdicts) != 1 || len(res.Omitted) != 0 || res.TextRules == nil || len(res.TextRules) != 0 {
		t.Fatalf("got %+v", res)
	}
	vc := res.Verdicts[0]
	if vc.From != "quarantine" || vc.To != "reject" || vc.Count != 2 || len(vc.Examples) != 1 {
		t.Fatalf("verdict change %+v", vc)
	}
	ex := vc.Examples[0]
	if ex.At != "testdata/v1.jsonl:1" || ex.New.Rule != "listed-client" || ex.New.Stage != "connect" || ex.Old.Rule != "invoice-lure" {
		t.Errorf("example %+v old %+v new %+v", ex, ex.Old, ex.New)
	}
	if len(ex.New.Decided) != 1 || ex.New.Decided[0].Rule != "listed-client" || len(ex.New.Decided[0].Vars) == 0 || ex.New.Decided[0].Vars[0].Name != "dnsbl" {
		t.Errorf("new side decided by %+v", ex.New.Decided)
	}
	if len(ex.Old.Decided) != 1 || ex.Old.Decided[0].Rule != "invoice-lure" {
		t.Errorf("old side decided by %+v", ex.Old.Decided)
	}
	byRule := map[string]*RuleChange{}
	for _, rc := range res.Rules {
		byRule[rc.Rule] = rc
	}
	// no-such-user too: the new set refuses at connect, before any recipient.
	for _, gone := range []string{"invoice-lure", "dmarc-fail", "night-owl", "no-such-user"} {
		if rc := byRule[gone]; rc == nil || rc.NoLonger != 2 || rc.Newly != 0 || len(rc.NoLongerExamples) != 1 {
			t.Errorf("rule %s: %+v", gone, rc)
		}
	}
	if byRule["listed-client"] != nil {
		t.Errorf("a rule matching under both sets reported as changed: %+v", byRule["listed-client"])
	}
}
