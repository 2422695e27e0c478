package journal

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/rules"
)

func loadRules(t *testing.T, files ...string) *rules.Set {
	t.Helper()
	s, err := rules.Load(rules.Config{Files: files}, rules.Options{BaseDir: ".", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func matchNames(ms []policy.Match) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Rule)
	}
	return out
}

// TestOldLineReplays: a line exactly as version 1 wrote it still reads
// and replays to the verdict it recorded, with the recorded time as now.
func TestOldLineReplays(t *testing.T) {
	set := loadRules(t, "testdata/rules.yaml")
	lines := readAll(t, "testdata/v1.jsonl")
	if len(lines) != 1 {
		t.Fatalf("%d lines", len(lines))
	}
	rp := &Replayer{Settings: policy.Settings{Hostname: "mx.test"}, Rules: set, Log: quiet()}
	out, err := rp.Replay(context.Background(), lines[0])
	if err != nil {
		t.Fatal(err)
	}
	l := lines[0]
	if out.Verdict.Action.String() != l.Verdict.Action || out.Verdict.Stage.String() != l.Verdict.Stage || out.Verdict.Rule != l.Verdict.Rule {
		t.Errorf("replayed %s at %s by %s, recorded %+v", out.Verdict.Action, out.Verdict.Stage, out.Verdict.Rule, l.Verdict)
	}
	if out.Facts.Score != l.Score {
		t.Errorf("score %g, recorded %g", out.Facts.Score, l.Score)
	}
	var recorded []string
	for _, m := range l.Matches {
		recorded = append(recorded, m.Rule)
	}
	if got := matchNames(out.Matches); !slices.Equal(got, recorded) {
		t.Errorf("matches %v, recorded %v", got, recorded)
	}
	if len(out.Rcpts) != 2 || out.Rcpts[1].Code != 550 {
		t.Errorf("rcpts %+v", out.Rcpts)
	}
}

// TestReplayMatchesLive: a transaction recorded from the engine replays
// to the same verdict, matches and score, for each way one can end.
func TestReplayMatchesLive(t *testing.T) {
	set := loadRules(t, "testdata/rules.yaml")
	cases := []struct {
		name    string
		subject string
		attach  bool
		rcpts   []string
		abort   bool
		want    policy.Action
	}{
		{name: "quarantined at data", subject: "your invoice", rcpts: []string{"a@example.com"}, want: policy.Quarantine},
		{name: "accepted", subject: "hello", rcpts: []string{"a@example.com", "nobody@example.com"}, want: policy.Accept},
		{name: "attachment", subject: "files", attach: true, rcpts: []string{"a@example.com"}, want: policy.Reject},
		{name: "every recipient refused, client left", rcpts: []string{"nobody@example.com"}, abort: true, want: policy.Reject},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			w, err := Open(cfg, quiet())
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			res := results()
			res.res.SPF.Result, res.res.DMARC.Result = "softfail", "fail"
			e := policy.NewEngine(policy.Settings{Hostname: "mx.test"}, newRecorded(res), set, quiet())
			e.SetRecorder(w)
			c, _ := e.Connect(ctx, policy.ConnInfo{IP: netip.MustParseAddr("192.0.2.7"), Front: "smtp"})
			c.Helo(ctx, "mx.example.org")
			c.Mail(ctx, "alice@example.org", policy.MailInfo{})
			for _, r := range tc.rcpts {
				c.Rcpt(ctx, r)
			}
			var live policy.Verdict
			if !tc.abort {
				c.Header("Subject", tc.subject)
				c.EndOfHeaders(ctx)
				if tc.attach {
					c.Body([]byte("--b\r\n"))
				}
				live = c.EndOfMessage(ctx)
			}
			liveMatches, liveScore := matchNames(c.Matches()), c.Facts().Score
			c.Close()
			w.Close()
			lines := readAll(t, cfg.Path)
			if len(lines) != 1 {
				t.Fatalf("%d lines", len(lines))
			}
			if tc.attach {
				// The test's body is no MIME message: give the line the
				// attachment a real one would have.
				lines[0].c.attach = []policy.Attachment{{Name: "run.exe", ContentType: "application/octet-stream", Size: 10}}
			}
			rp := &Replayer{Settings: policy.Settings{Hostname: "mx.test"}, Rules: set, Log: quiet()}
			out, err := rp.Replay(ctx, lines[0])
			if err != nil {
				t.Fatal(err)
			}
			if out.Verdict.Action != tc.want {
				t.Errorf("replayed %s at %s, want %s", out.Verdict.Action, out.Verdict.Stage, tc.want)
			}
			if !tc.abort && !tc.attach && (out.Verdict.Action != live.Action || out.Verdict.Stage != live.Stage) {
				t.Errorf("replayed %s at %s, live %s at %s", out.Verdict.Action, out.Verdict.Stage, live.Action, live.Stage)
			}
			if !tc.attach && (!slices.Equal(matchNames(out.Matches), liveMatches) || out.Facts.Score != liveScore) {
				t.Errorf("replayed matches %v score %g, live %v %g", matchNames(out.Matches), out.Facts.Score, liveMatches, liveScore)
			}
			if tc.abort && slices.ContainsFunc(out.Steps, func(s policy.Step) bool { return s.Stage >= policy.StageData }) {
				t.Errorf("replay ran past where the client left: %+v", out.Steps)
			}
		})
	}
}

// TestReplayStopsWhereTheClientLeft: rules that would now let a
// recipient through do not invent the message the client never sent.
func TestReplayStopsWhereTheClientLeft(t *testing.T) {
	l, err := Parse([]byte(`{"v":1,"time":"2026-11-20T10:00:00Z","front":"smtp","ip":"192.0.2.1","helo":"h.example","mail_from":"a@h.example","rcpts":[{"rcpt":"nobody@example.com","action":"reject","code":550}],"checks":{},"reached":"rcpt","verdict":{"action":"continue","stage":"rcpt"}}`))
	if err != nil {
		t.Fatal(err)
	}
	rp := &Replayer{Rules: policy.RulesFunc(func(context.Context, policy.Stage, *policy.Facts, *[]policy.Match) policy.Verdict {
		return policy.Verdict{Action: policy.Continue}
	}), Log: quiet()}
	out, err := rp.Replay(context.Background(), l)
	if err != nil {
		t.Fatal(err)
	}
	if out.Verdict.Action != policy.Continue || out.Steps[len(out.Steps)-1].Stage != policy.StageRcpt {
		t.Fatalf("got %s at %s after %+v", out.Verdict.Action, out.Verdict.Stage, out.Steps)
	}
}

// TestReplayAnswersLookupsFromTheRecord: org_domain() asks DNS live; a
// replay, which asks nothing, gets the answers the transaction got.
func TestReplayAnswersLookupsFromTheRecord(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "r.yaml")
	os.WriteFile(file, []byte(`rules:
  - name: other-org
    when: org_domain(header_from_domain) != org_domain(mail_from_domain)
    action: score
    score: 1
`), 0o600)
	// Live, the tree walk says each name is its own organization; the
	// public suffix list the replay would fall back to says both are example.test.
	walk := func(_ context.Context, d string) string { return d }
	live, err := rules.Load(rules.Config{Files: []string{file}}, rules.Options{Logger: quiet(), OrgDomain: walk})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	w, err := Open(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e := policy.NewEngine(policy.Settings{}, nil, live, quiet())
	e.SetRecorder(w)
	c, _ := e.Connect(ctx, policy.ConnInfo{IP: netip.MustParseAddr("192.0.2.7"), Front: "smtp"})
	c.Helo(ctx, "h.example.test")
	c.Mail(ctx, "bounce@esp.example.test", policy.MailInfo{})
	c.Rcpt(ctx, "a@example.com")
	c.Header("From", "news@shop.example.test")
	c.EndOfHeaders(ctx)
	c.EndOfMessage(ctx)
	c.Close()
	w.Close()
	lines := readAll(t, cfg.Path)
	if got := lines[0].Lookups["org_domain:shop.example.test"]; got != "shop.example.test" {
		t.Fatalf("recorded lookups %v", lines[0].Lookups)
	}
	replaySet := loadRules(t, file) // no tree walk: the public suffix list
	out, err := (&Replayer{Rules: replaySet, Log: quiet()}).Replay(ctx, lines[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := matchNames(out.Matches); !slices.Equal(got, []string{"other-org"}) {
		t.Errorf("replay matched %v, live matched other-org", got)
	}
	lines[0].Lookups = nil
	out, _ = (&Replayer{Rules: replaySet, Log: quiet()}).Replay(ctx, lines[0])
	if len(out.Matches) != 0 {
		t.Errorf("without the record the public suffix list should decide: %v", matchNames(out.Matches))
	}
}
