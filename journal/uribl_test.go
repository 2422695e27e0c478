package journal

import (
	"strings"
	"testing"

	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/policy"
)

// TestReplayKeepsURILists: the URI lists' answers go into the line, and
// a replay reads them back instead of asking DNS, to the same verdict:
// a reject on a listing, a tempfail when a zone the rule reads failed.
func TestReplayKeepsURILists(t *testing.T) {
	set := rulesOf(t, `rules:
  - name: listed-link
    when: '"black" in (uribl["multi.test"] ?? []) || "dbl.test" in uribl'
    action: reject
`)
	settings := policy.Settings{Hostname: "mx.test", OnError: policy.Tempfail}
	for _, tc := range []struct {
		name  string
		uribl []dnsbl.Result
		want  policy.Action
	}{
		{"listed", []dnsbl.Result{{Zone: "multi.test", Query: "spam.example", Codes: []string{"127.0.0.2"}, Names: []string{"black"}}}, policy.Reject},
		{"listed while a list failed", []dnsbl.Result{
			{Zone: "multi.test", Query: "spam.example", Codes: []string{"127.0.0.2"}, Names: []string{"black"}},
			{Zone: "dbl.test", Query: "a.example", Error: "timed out"}}, policy.Tempfail},
		{"not listed", nil, policy.Accept},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := results()
			res.res.URIBL = tc.uribl
			live, raw, out := journalOne(t, settings, res, set, [2]string{"Subject", "links"}, "http://www.spam.example/\r\n")
			if live.Action != tc.want {
				t.Fatalf("live: %+v, want %s", live, tc.want)
			}
			if len(tc.uribl) > 0 && !strings.Contains(raw, `"uribl":[{"zone":"multi.test","query":"spam.example","codes":["127.0.0.2"],"names":["black"]}`) {
				t.Errorf("line lacks the URI list answers:\n%s", raw)
			}
			if out.Verdict.Action != live.Action || out.Verdict.Unknown != live.Unknown || len(out.Facts.URIBL) != len(tc.uribl) {
				t.Errorf("replayed %+v (uribl %+v), live %+v", out.Verdict, out.Facts.URIBL, live)
			}
		})
	}
}
