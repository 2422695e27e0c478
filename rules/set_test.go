package rules

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/mailward/mailward/checks/dmarc"
	"github.com/mailward/mailward/checks/spf"
	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
)

func TestEvalVerdictsAndStages(t *testing.T) {
	s := loadRules(t, `
rules:
  - name: block-net
    when: in_cidr(ip, "198.51.100.0/24", "2001:db8::/32")
    action: reject
    code: "554 5.7.1"
    message: "client {{ip}} is blocked"
  - name: spf-fail
    when: spf == "fail"
    action: reject
    code: 550
    message: "SPF says {{ mail_from_domain }} did not send this"
  - name: caps-subject
    when: subject == upper(subject) && subject != ""
    action: score
    score: 2.5
  - name: tag-external
    when: not tls
    action: add_header
    header: {name: X-External, value: "via {{helo}}"}
  - name: exe
    when: any(attachments, lower(.name) endsWith ".exe")
    action: quarantine
    message: executable from {{header_from}}
`)
	want := map[string]policy.Stage{"block-net": policy.StageConnect, "spf-fail": policy.StageMail,
		"caps-subject": policy.StageData, "tag-external": policy.StageMail, "exe": policy.StageEOM}
	for _, ri := range s.Rules() {
		if ri.Stage != want[ri.Name] {
			t.Errorf("rule %s inferred at stage %s, want %s", ri.Name, ri.Stage, want[ri.Name])
		}
	}
	if got := s.Rules()[3].Reads; !slices.Equal(got, []string{"helo", "tls"}) {
		t.Errorf("tag-external reads %v, want [helo tls] (template variables count)", got)
	}

	f := fullFacts()
	f.IP = f.IP.Next() // still outside the blocked net
	v, ms := evalAll(s, f)
	if v.Action != policy.Continue || len(ms) != 0 {
		t.Fatalf("clean message: got %v, matches %v", v, ms)
	}

	f = fullFacts()
	f.IP = mustAddr("198.51.100.9")
	v = s.Eval(context.Background(), policy.StageConnect, f, nil)
	if v.Action != policy.Reject || v.Code != 554 || v.Enhanced != "5.7.1" || v.Text != "client 198.51.100.9 is blocked" || v.Rule != "block-net" {
		t.Errorf("blocked client: got %+v", v)
	}
	f.IP = mustAddr("2001:db8::25")
	if v := s.Eval(context.Background(), policy.StageConnect, f, nil); v.Action != policy.Reject {
		t.Errorf("blocked IPv6 client: got %v", v.Action)
	}

	f = fullFacts()
	f.SPF = &spf.Result{Result: "fail"}
	f.TLS = false
	var ms2 []policy.Match
	v = s.Eval(context.Background(), policy.StageMail, f, &ms2)
	if v.Action != policy.Reject || v.Code != 550 || v.Enhanced != "" || v.Text != "SPF says example.org did not send this" {
		t.Errorf("spf fail: got %+v", v)
	}
	if len(v.Headers) != 0 || len(ms2) != 1 {
		t.Errorf("the first terminal match must end the stage: headers %v, matches %v", v.Headers, ms2)
	}

	f = fullFacts()
	f.TLS = false
	f.Headers[2].Value = "WIN NOW"
	f.Attachments = append(f.Attachments, policy.Attachment{Name: "Invoice.EXE"})
	v, ms = evalAll(s, f)
	if v.Action != policy.Quarantine || v.Reason != "executable from alice@Example.org" || v.Stage != policy.StageEOM {
		t.Errorf("exe: got %+v", v)
	}
	if f.Score != 2.5 {
		t.Errorf("score = %v, want 2.5", f.Score)
	}
	if got := matchNames(ms); !slices.Equal(got, []string{"tag-external", "caps-subject", "exe"}) {
		t.Errorf("matches %v", got)
	}
	if ms[1].Score != 2.5 || ms[0].Action != "add_header" {
		t.Errorf("match details %+v", ms)
	}
	v = s.Eval(context.Background(), policy.StageMail, f, nil)
	if len(v.Headers) != 1 || v.Headers[0] != (policy.HeaderEdit{Name: "X-External", Value: "via mail.example.org"}) {
		t.Errorf("add_header: got %+v", v.Headers)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestAcceptEndsAndFirstMatchWins(t *testing.T) {
	s := loadRules(t, `
rules:
  - name: score-first
    when: mail_from_domain == "example.org"
    action: score
    score: 1
  - name: partner
    when: mail_from_domain == "example.org"
    action: accept
  - name: never-reached
    when: true
    stage: mail
    action: reject
  - name: later-stage
    when: subject != ""
    action: reject
`)
	f := fullFacts()
	v, ms := evalAll(s, f)
	if v.Action != policy.Accept || v.Stage != policy.StageMail || v.Rule != "partner" {
		t.Fatalf("got %+v", v)
	}
	if got := matchNames(ms); !slices.Equal(got, []string{"score-first", "partner"}) {
		t.Errorf("matches %v", got)
	}
	f.MailFrom = "x@other.example"
	f.Score = 0
	v, _ = evalAll(s, f)
	if v.Rule != "never-reached" {
		t.Errorf("without the allowlist the next terminal rule decides: got %+v", v)
	}
}

func TestMonitorMode(t *testing.T) {
	var logs bytes.Buffer
	dir := testenv.WriteFiles(t, map[string]string{"r.yaml": `
rules:
  - name: watch-reject
    when: helo endsWith ".org"
    action: reject
    mode: monitor
  - name: watch-score
    when: true
    stage: helo
    action: score
    score: 5
    mode: monitor
  - name: real
    when: helo != ""
    action: add_header
    header: {name: X-Seen, value: "yes"}
`})
	s, err := Load(Config{Files: []string{"r.yaml"}}, Options{BaseDir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	f := fullFacts()
	var ms []policy.Match
	v := s.Eval(context.Background(), policy.StageHelo, f, &ms)
	if v.Action != policy.Continue || f.Score != 0 {
		t.Errorf("monitor rules changed the outcome: %+v, score %v", v, f.Score)
	}
	if len(ms) != 3 || !ms[0].Monitor || !ms[1].Monitor || ms[1].Score != 0 || ms[2].Monitor {
		t.Errorf("matches %+v", ms)
	}
	if !strings.Contains(logs.String(), "watch-reject") {
		t.Errorf("monitor match not logged: %q", logs.String())
	}
	for _, ri := range s.Rules() {
		if ri.Matches != 1 {
			t.Errorf("rule %s counted %d matches, want 1", ri.Name, ri.Matches)
		}
	}
}

// TestEnforcedCountsMonitorRules: for a diff, monitor-mode rules give the
// verdict they would give, their score counts, and nothing is counted
// in the rules' own statistics.
func TestEnforcedCountsMonitorRules(t *testing.T) {
	s := loadRules(t, `
rules:
  - name: watch-score
    when: true
    stage: helo
    action: score
    score: 5
    mode: monitor
  - name: watch-reject
    when: helo endsWith ".org"
    action: reject
    mode: monitor
`)
	f := fullFacts()
	var ms []policy.Match
	v := s.Enforced(nil).Eval(context.Background(), policy.StageHelo, f, &ms)
	if v.Action != policy.Reject || v.Rule != "watch-reject" || f.Score != 5 {
		t.Errorf("got %+v, score %v; want the monitor reject to decide after its score", v, f.Score)
	}
	if len(ms) != 2 || !ms[0].Monitor || ms[0].Score != 5 || !ms[1].Monitor {
		t.Errorf("matches %+v", ms)
	}
	for _, ri := range s.Rules() {
		if ri.Matches != 0 {
			t.Errorf("rule %s counted %d matches in a dry evaluation", ri.Name, ri.Matches)
		}
	}
	f = fullFacts()
	if v := s.Eval(context.Background(), policy.StageHelo, f, nil); v.Action != policy.Continue || f.Score != 0 {
		t.Errorf("Eval enforced monitor rules: %+v, score %v", v, f.Score)
	}
}

func TestRuntimeErrorSkipsOnlyThatRule(t *testing.T) {
	var logs bytes.Buffer
	dir := testenv.WriteFiles(t, map[string]string{"r.yaml": `
rules:
  - name: broken
    when: dnsbl["nothere.example"][0] == "127.0.0.2"
    action: reject
  - name: fine
    when: '"zen.example" in dnsbl'
    action: tempfail
`})
	s, err := Load(Config{Files: []string{"r.yaml"}}, Options{BaseDir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		v := s.Eval(context.Background(), policy.StageConnect, fullFacts(), nil)
		if v.Action != policy.Tempfail || v.Rule != "fine" {
			t.Fatalf("got %+v", v)
		}
	}
	info := s.Rules()
	if info[0].Errors != 3 || info[0].Matches != 0 {
		t.Errorf("broken rule: %+v", info[0])
	}
	if n := strings.Count(logs.String(), "rule failed"); n != 1 {
		t.Errorf("logged %d times, want once per minute: %s", n, logs.String())
	}
}

func TestVariables(t *testing.T) {
	cases := []struct {
		stage policy.Stage
		when  string
	}{
		{policy.StageConnect, `ip == "192.0.2.7" && ip_version == 4`},
		{policy.StageConnect, `ptr == "mail.example.org" && fcrdns`},
		{policy.StageConnect, `dnsbl["zen.example"] == ["127.0.0.2"]`},
		{policy.StageConnect, `now.Year() == 2025 && queue_id == "ABC123"`},
		{policy.StageHelo, `helo == "mail.example.org" && spf_helo == "pass"`},
		{policy.StageMail, `mail_from == "alice@example.org" && mail_from_domain == "example.org" && auth_user == "" && tls && spf == "pass"`},
		{policy.StageRcpt, `rcpt == "carol@example.net" && rcpts == ["bob@example.net"] && rcpt_count == 2`},
		{policy.StageData, `headers["received"] == ["from a", "from b"] && header("SUBJECT") startsWith "=?UTF-8?"`},
		{policy.StageData, `subject == "Grüße from Alice" && header_from == "alice@Example.org" && header_from_domain == "example.org"`},
		{policy.StageData, `message_id == "<1@example.org>"`},
		{policy.StageEOM, `size == 2048 && attachments[0].name == "report.PDF" && attachments[0].content_type == "application/pdf" && attachments[0].size == 1000`},
		{policy.StageEOM, `dkim[0].domain == "example.org" && dkim[0].selector == "s1" && dkim[0].algorithm == "rsa-sha256" && dkim[0].result == "pass"`},
		{policy.StageEOM, `dmarc.result == "pass" && dmarc.policy == "reject" && dmarc.domain == "example.org"`},
		{policy.StageEOM, `score == 0.0`},
		{policy.StageConnect, `domain_of("Bob@Example.NET") == "example.net" && domain_of("Example.COM.") == "example.com"`},
		{policy.StageConnect, `org_domain("a.b.example.co.uk") == "example.co.uk"`},
		{policy.StageData, `in_list("senders", header_from)`},
	}
	for _, c := range cases {
		t.Run(c.when, func(t *testing.T) {
			s := loadRules(t, "lists:\n  senders: {file: senders.txt, type: address}\nrules:\n  - name: r\n    when: '"+strings.ReplaceAll(c.when, "'", "''")+"'\n    action: reject\n",
				"senders.txt", "ALICE@example.org\n")
			if got := s.Rules()[0].Stage; got != c.stage {
				t.Errorf("inferred stage %s, want %s", got, c.stage)
			}
			f := fullFacts()
			if c.stage == policy.StageRcpt {
				f.Rcpt = "carol@example.net"
			}
			if v := s.Eval(context.Background(), c.stage, f, nil); v.Action != policy.Reject {
				t.Errorf("did not match; explanation: %+v", s.Explain(context.Background(), c.stage, f))
			}
			// The rule runs at its stage only.
			for _, st := range policy.Stages {
				if st != c.stage {
					if v := s.Eval(context.Background(), st, f, nil); v.Action != policy.Continue {
						t.Errorf("rule ran at stage %s too", st)
					}
				}
			}
		})
	}
}

func TestOrgDomainAndExtraFunctions(t *testing.T) {
	type ctxKey struct{}
	var seen []string
	opts := Options{
		OrgDomain: func(ctx context.Context, d string) string {
			seen = append(seen, d+"/"+ctx.Value(ctxKey{}).(string))
			return "org.example"
		},
		Functions: []Func{{
			Name:  "twice_over",
			Types: []any{new(func(string, int) bool)},
			Stage: policy.StageRcpt,
			Fn: func(ctx context.Context, args ...any) (any, error) {
				return ctx.Value(ctxKey{}) == "tx" && len(args[0].(string)) > args[1].(int), nil
			},
		}},
	}
	dir := testenv.WriteFiles(t, map[string]string{"r.yaml": `
rules:
  - name: org
    when: org_domain(mail_from_domain) == "org.example"
    action: score
    score: 1
  - name: extra
    when: twice_over(mail_from, 3)
    action: score
    score: 2
`})
	s, err := Load(Config{Files: []string{"r.yaml"}}, Options{BaseDir: dir, OrgDomain: opts.OrgDomain, Functions: opts.Functions})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Rules()[1].Stage; got != policy.StageRcpt {
		t.Errorf("a function's stage counts: got %s", got)
	}
	ctx := context.WithValue(context.Background(), ctxKey{}, "tx")
	f := fullFacts()
	s.Eval(ctx, policy.StageMail, f, nil)
	s.Eval(ctx, policy.StageRcpt, f, nil)
	if f.Score != 3 || !slices.Equal(seen, []string{"example.org/tx"}) {
		t.Errorf("score %v, org_domain calls %v", f.Score, seen)
	}

	bad := []Func{{Name: "ip", Types: []any{new(func() bool)}, Fn: opts.Functions[0].Fn}, {Name: "x", Types: []any{42}, Fn: opts.Functions[0].Fn}}
	if _, err := Load(Config{Files: []string{"r.yaml"}}, Options{BaseDir: dir, Functions: bad}); err == nil ||
		!strings.Contains(err.Error(), `function "ip"`) || !strings.Contains(err.Error(), `function "x"`) {
		t.Errorf("bad functions: %v", err)
	}
}

func TestReplyAndHeaderTextAreSafe(t *testing.T) {
	s := loadRules(t, `
rules:
  - name: h
    when: true
    stage: data
    action: add_header
    header: {name: X-Subject, value: "{{subject}}"}
  - name: r
    when: true
    stage: data
    action: reject
    message: "bad subject {{header('Subject')}}"
`)
	f := fullFacts()
	f.Headers = []policy.Header{{Name: "Subject", Value: "hi\r\n250 OK\r\nFake: ünï"}}
	v := s.Eval(context.Background(), policy.StageData, f, nil)
	if strings.ContainsAny(v.Text, "\r\n") || !strings.HasPrefix(v.Text, "bad subject hi  250 OK") || strings.ContainsRune(v.Text, 'ü') {
		t.Errorf("reply text not made safe: %q", v.Text)
	}
	if len(v.Headers) != 1 || strings.ContainsAny(v.Headers[0].Value, "\r\n") || !strings.HasPrefix(v.Headers[0].Value, "=?utf-8?q?") {
		t.Errorf("header value not made safe: %+v", v.Headers)
	}
}

func TestExplainAndTraced(t *testing.T) {
	s := loadRules(t, `
rules:
  - name: a
    when: spf == "fail" && mail_from_domain == "example.org"
    action: reject
  - name: b
    when: tls
    action: score
    score: 1
`)
	f := fullFacts()
	f.SPF = &spf.Result{Result: "fail"}
	ex := s.Explain(context.Background(), policy.StageMail, f)
	if len(ex) != 2 || !ex[0].Matched || !ex[0].Decided || !ex[1].Matched || ex[1].Decided {
		t.Fatalf("explain: %+v", ex)
	}
	if !slices.Equal(ex[0].Vars, []Var{{"mail_from_domain", "example.org"}, {"spf", "fail"}}) {
		t.Errorf("vars %+v", ex[0].Vars)
	}
	if f.Score != 0 || s.Rules()[0].Matches != 0 {
		t.Errorf("Explain changed state: score %v, %+v", f.Score, s.Rules()[0])
	}

	// Values outlive the evaluation that read them.
	s2 := loadRules(t, "rules:\n  - {name: l, when: '\"zen.example\" in dnsbl && len(headers) > 0', stage: data, action: score, score: 1}\n")
	ex = s2.Explain(context.Background(), policy.StageData, fullFacts())
	s2.Eval(context.Background(), policy.StageData, &policy.Facts{}, nil)
	if len(ex) != 1 || len(ex[0].Vars) != 2 || len(ex[0].Vars[0].Value.(map[string][]string)) != 1 || len(ex[0].Vars[1].Value.(map[string][]string)) != 5 {
		t.Errorf("explained values changed after the evaluation: %+v", ex)
	}

	var traced []Explanation
	rs := s.Traced(func(e Explanation) { traced = append(traced, e) })
	if v := rs.Eval(context.Background(), policy.StageMail, f, nil); v.Rule != "a" {
		t.Errorf("traced verdict %+v", v)
	}
	if len(traced) != 1 || traced[0].Rule != "a" {
		t.Errorf("traced %+v: the deciding rule ends the stage", traced)
	}
}

func TestNilSetAndFacts(t *testing.T) {
	var s *Set
	var r policy.Rules = s
	if v := r.Eval(context.Background(), policy.StageEOM, fullFacts(), nil); v.Action != policy.Continue {
		t.Errorf("nil set: %+v", v)
	}
	s = loadRules(t, "rules:\n  - {name: x, when: 'dmarc.result == \"fail\"', action: reject}\n")
	if v := s.Eval(context.Background(), policy.StageEOM, nil, nil); v.Action != policy.Continue {
		t.Errorf("nil facts: %+v", v)
	}
	// Checks that did not run leave their variables empty, never nil derefs.
	f := &policy.Facts{}
	if v := s.Eval(context.Background(), policy.StageEOM, f, nil); v.Action != policy.Continue {
		t.Errorf("empty facts: %+v", v)
	}
	f.DMARC = &dmarc.Result{Result: "fail"}
	if v := s.Eval(context.Background(), policy.StageEOM, f, nil); v.Action != policy.Reject {
		t.Errorf("dmarc fail: %+v", v)
	}
}
