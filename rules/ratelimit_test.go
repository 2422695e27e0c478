package rules

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
)

func memCache(t testing.TB) cache.Cache {
	t.Helper()
	c, err := cache.New(cache.Config{}, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func loadWith(t testing.TB, c cache.Cache, content string) (*Set, error) {
	t.Helper()
	dir := testenv.WriteFiles(t, map[string]string{"rules.yaml": content})
	return Load(Config{Files: []string{"rules.yaml"}}, Options{BaseDir: dir, Functions: []Func{RateLimitFunc(c, discardLog())}, Logger: discardLog()})
}

func TestRateLimitTripsOnTheNextEvent(t *testing.T) {
	s, err := loadWith(t, memCache(t), `
rules:
  - name: per-ip
    when: ratelimit("ip:" + ip, 3, "1h")
    action: tempfail
    message: Too many messages
`)
	if err != nil {
		t.Fatal(err)
	}
	// Reading only ip, it still runs once per message.
	if st := s.Rules()[0].Stage; st != policy.StageMail {
		t.Fatalf("stage %s; want mail", st)
	}
	f := fullFacts()
	for i := 1; i <= 3; i++ {
		if v := s.Eval(context.Background(), policy.StageMail, f, nil); v.Action != policy.Continue {
			t.Fatalf("message %d: %+v; want continue", i, v)
		}
	}
	v := s.Eval(context.Background(), policy.StageMail, f, nil)
	if v.Action != policy.Tempfail || v.Text != "Too many messages" || v.Reason != "rate limit ip:192.0.2.7 over 3 per 1h" {
		t.Fatalf("4th message: %+v; want tempfail naming the limit", v)
	}
	// Another key has its own limit.
	g := fullFacts()
	g.IP = g.IP.Next()
	if v := s.Eval(context.Background(), policy.StageMail, g, nil); v.Action != policy.Continue {
		t.Fatalf("another address: %+v", v)
	}
}

func TestRateLimitLoadErrors(t *testing.T) {
	for _, tc := range []struct{ when, want string }{
		{`ratelimit("ip:" + ip, 10, "1x")`, `rules.yaml:3:37: ratelimit window "1x"`},
		{`ratelimit("ip:" + ip, 0, "1h")`, `rules.yaml:3:33: ratelimit limit 0`},
		{`ratelimit("ip:" + ip, "10", "1h")`, `rules.yaml:3:`},
	} {
		_, err := loadWith(t, memCache(t), "rules:\n  - name: r\n    when: "+tc.when+"\n    action: reject\n")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v; want one containing %q", tc.when, err, tc.want)
		}
	}
}

func TestRateLimitRunTimeErrorsAndOutage(t *testing.T) {
	c := memCache(t)
	s, err := loadWith(t, c, `
rules:
  - name: bad-window
    when: ratelimit("k", 1, helo)
    action: reject
  - name: limited
    when: ratelimit("from:" + mail_from, 1, "1h")
    action: reject
`)
	if err != nil {
		t.Fatal(err)
	}
	f := fullFacts()
	s.Eval(context.Background(), policy.StageMail, f, nil)
	if v := s.Eval(context.Background(), policy.StageMail, f, nil); v.Rule != "limited" {
		t.Fatalf("second message: %+v; want limited to decide", v)
	}
	if n := s.Rules()[0].Errors; n != 2 {
		t.Errorf("bad window counted %d errors; want 2", n)
	}
	// With the cache gone there is no limit, and no error either.
	c.Close()
	if v := s.Eval(context.Background(), policy.StageMail, f, nil); v.Action != policy.Continue {
		t.Fatalf("cache closed: %+v; want continue", v)
	}
	if n := s.Rules()[1].Errors; n != 0 {
		t.Errorf("an unavailable cache counted as %d rule errors", n)
	}
	if _, _, _, err := c.Allow(context.Background(), "x", 1, 1); !errors.Is(err, cache.ErrClosed) {
		t.Fatalf("closed cache: %v", err)
	}
}

func TestGreylistAction(t *testing.T) {
	s, err := loadWith(t, memCache(t), `
rules:
  - name: grey-all
    when: ip != "192.0.2.99"
    action: greylist
  - name: no-such-user
    when: rcpt == "nobody@example.net"
    action: reject
`)
	if err != nil {
		t.Fatal(err)
	}
	if st := s.Rules()[0].Stage; st != policy.StageRcpt {
		t.Fatalf("greylist rule at %s; want rcpt, the earliest stage with sender and recipient", st)
	}
	f := fullFacts()
	f.Rcpt = "bob@example.net"
	var ms []policy.Match
	v := s.Eval(context.Background(), policy.StageRcpt, f, &ms)
	if v.Action != policy.Continue || !v.Greylist || v.Rule != "grey-all" || len(ms) != 1 || ms[0].Action != "greylist" {
		t.Fatalf("greylist match: %+v %+v", v, ms)
	}
	// A later terminal rule still decides.
	f.Rcpt = "nobody@example.net"
	if v := s.Eval(context.Background(), policy.StageRcpt, f, nil); v.Action != policy.Reject || v.Rule != "no-such-user" {
		t.Fatalf("reject after greylist: %+v", v)
	}
	f.IP = f.IP.Next().Next().Next() // 192.0.2.10: still greylisted
	f.Rcpt = "bob@example.net"
	if v := s.Eval(context.Background(), policy.StageRcpt, f, nil); !v.Greylist {
		t.Fatalf("not greylisted: %+v", v)
	}

	_, err = loadWith(t, memCache(t), "rules:\n  - name: g\n    when: true\n    stage: mail\n    action: greylist\n")
	if err == nil || !strings.Contains(err.Error(), "the greylist action") {
		t.Fatalf("greylist at mail: %v; want an error naming the greylist action", err)
	}
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
