package journal

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/rules"
)

// TestReplayKeepsURILists: the URI lists' answers go into the line, and
// a replay reads them back instead of asking DNS, to the same verdict:
// a reject on a listing, a tempfail when a zone the rule reads failed.
func TestReplayKeepsURILists(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "links.yaml")
	os.WriteFile(file, []byte(`rules:
  - name: listed-link
    when: '"black" in (uribl["multi.test"] ?? []) || "dbl.test" in uribl'
    action: reject
`), 0o644)
	set, err := rules.Load(rules.Config{Files: []string{file}}, rules.Options{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
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
			cfg := testConfig(t)
			w, err := Open(cfg, quiet())
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			res := results()
			res.res.URIBL = tc.uribl
			e := policy.NewEngine(settings, newRecorded(res), set, quiet())
			e.SetRecorder(w)
			c, _ := e.Connect(ctx, policy.ConnInfo{IP: netip.MustParseAddr("192.0.2.7"), Front: "milter"})
			c.Helo(ctx, "mx.example.org")
			c.Mail(ctx, "alice@example.org", policy.MailInfo{})
			c.Rcpt(ctx, "bob@example.net")
			c.Header("Subject", "links")
			c.EndOfHeaders(ctx)
			c.Body([]byte("http://www.spam.example/\r\n"))
			live := c.EndOfMessage(ctx)
			c.Close()
			w.Close()
			if live.Action != tc.want {
				t.Fatalf("live: %+v, want %s", live, tc.want)
			}
			raw, _ := os.ReadFile(cfg.Path)
			if len(tc.uribl) > 0 && !strings.Contains(string(raw), `"uribl":[{"zone":"multi.test","query":"spam.example","codes":["127.0.0.2"],"names":["black"]}`) {
				t.Errorf("line lacks the URI list answers:\n%s", raw)
			}
			lines := readAll(t, cfg.Path)
			rp := &Replayer{Settings: settings, Rules: set, Log: quiet()}
			out, err := rp.Replay(ctx, lines[0])
			if err != nil {
				t.Fatal(err)
			}
			if out.Verdict.Action != live.Action || out.Verdict.Unknown != live.Unknown || len(out.Facts.URIBL) != len(tc.uribl) {
				t.Errorf("replayed %+v (uribl %+v), live %+v", out.Verdict, out.Facts.URIBL, live)
			}
		})
	}
}
