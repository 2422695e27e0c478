package rules

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/dmarc"
	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/checks/iprev"
	"github.com/mailward/mailward/checks/spf"
	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
)

// loadRules loads one rule file with the given content (and other files
// beside it) and fails the test on any error.
func loadRules(t testing.TB, content string, others ...string) *Set {
	t.Helper()
	files := map[string]string{"rules.yaml": content}
	for i := 0; i+1 < len(others); i += 2 {
		files[others[i]] = others[i+1]
	}
	dir := testenv.WriteFiles(t, files)
	s, err := Load(Config{Files: []string{"rules.yaml"}}, Options{BaseDir: dir})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return s
}

// loadProblems loads content expecting it to fail and returns the problems.
func loadProblems(t testing.TB, content string) Problems {
	t.Helper()
	dir := testenv.WriteFiles(t, map[string]string{"rules.yaml": content})
	_, err := Load(Config{Files: []string{"rules.yaml"}}, Options{BaseDir: dir})
	if err == nil {
		t.Fatalf("load of\n%s\nsucceeded; want an error", content)
	}
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("error %T is not Problems: %v", err, err)
	}
	for i := range ps {
		ps[i].Pos.File = filepath.Base(ps[i].Pos.File)
	}
	return ps
}

// wantProblem checks that ps has a problem at line:col whose message contains msg.
func wantProblem(t testing.TB, ps Problems, line, col int, msg string) {
	t.Helper()
	for _, p := range ps {
		if p.Pos.Line == line && p.Pos.Col == col && strings.Contains(p.Msg, msg) {
			return
		}
	}
	t.Errorf("no problem at %d:%d containing %q; got:\n%v", line, col, msg, ps)
}

// fullFacts is a message with every fact known.
func fullFacts() *policy.Facts {
	return &policy.Facts{
		Results: policy.Results{
			IPRev:   &iprev.Result{Result: "pass", PTR: "mail.example.org", FCrDNS: true},
			DNSBL:   []dnsbl.Result{{Zone: "zen.example", Codes: []string{"127.0.0.2"}, Query: "192.0.2.7"}},
			SPFHelo: &spf.Result{Result: "pass"},
			SPF:     &spf.Result{Result: "pass"},
			DKIM:    []dkim.Result{{Domain: "example.org", Selector: "s1", Algorithm: "rsa-sha256", Result: "pass"}},
			DMARC:   &dmarc.Result{Result: "pass", Policy: "reject", Domain: "example.org"},
		},
		IP:       netip.MustParseAddr("192.0.2.7"),
		Time:     time.Date(2025, 3, 4, 10, 0, 0, 0, time.UTC),
		Helo:     "mail.example.org",
		MailFrom: "alice@example.org",
		TLS:      true,
		Rcpts:    []string{"bob@example.net"},
		Headers: []policy.Header{
			{Name: "From", Value: `"Alice" <alice@Example.org>`},
			{Name: "To", Value: "bob@example.net"},
			{Name: "Subject", Value: "=?UTF-8?Q?Gr=C3=BC=C3=9Fe?= from Alice"},
			{Name: "Message-ID", Value: " <1@example.org> "},
			{Name: "Received", Value: "from a"},
			{Name: "Received", Value: "from b"},
		},
		Size:        2048,
		Attachments: []policy.Attachment{{Name: "report.PDF", ContentType: "application/PDF", Size: 1000}},
		QueueID:     "ABC123",
	}
}

// evalAll runs every stage in order as the engine would, returning the
// first final verdict (or the eom one) and the matches.
func evalAll(s *Set, f *policy.Facts) (policy.Verdict, []policy.Match) {
	var ms []policy.Match
	var v policy.Verdict
	for _, st := range policy.Stages {
		if st == policy.StageRcpt && f.Rcpt == "" && len(f.Rcpts) > 0 {
			g := *f
			g.Rcpt, g.Rcpts = f.Rcpts[0], nil
			v = s.Eval(context.Background(), st, &g, &ms)
			f.Score = g.Score
		} else {
			v = s.Eval(context.Background(), st, f, &ms)
		}
		if v.Action.Final() {
			return v, ms
		}
	}
	return v, ms
}

func matchNames(ms []policy.Match) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Rule)
	}
	return out
}
