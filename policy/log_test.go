package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/cache"
)

// TestTransactionLineParses: the JSON transaction line needs no parsing
// of its values: lists are arrays, the duration is seconds, keys are the
// documented ones.
func TestTransactionLineParses(t *testing.T) {
	var buf bytes.Buffer
	e := NewEngine(Settings{Hostname: "mx.test"}, nil, RulesFunc(func(_ context.Context, st Stage, f *Facts, ms *[]Match) Verdict {
		if st == StageRcpt && f.Rcpt == "no@x.example" {
			*ms = append(*ms, Match{Rule: "no-such-user", Action: "reject", Stage: st})
			return Verdict{Action: Reject, Code: 550, Enhanced: "5.1.1", Text: "unknown", Rule: "no-such-user"}
		}
		return Verdict{}
	}), slog.New(slog.NewJSONHandler(&buf, nil)))
	out, err := e.Drive(ctx, Transaction{
		Conn: ConnInfo{IP: netip.MustParseAddr("192.0.2.1"), Front: "test"}, Helo: "h.example", From: "a@b.example",
		Rcpts: []string{"no@x.example", "yes@x.example"}, Header: []Header{{Name: "Subject", Value: " hi"}},
	})
	if err != nil || out.Verdict.Action != Accept {
		t.Fatalf("drive: %v %+v", err, out)
	}
	var line struct {
		Msg      string   `json:"msg"`
		Rcpts    []string `json:"rcpts"`
		Rules    []string `json:"rules"`
		Checks   []string `json:"checks"`
		Verdict  string   `json:"verdict"`
		Duration *float64 `json:"duration_seconds"`
		Score    *float64 `json:"score"`
	}
	var raw map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if strings.Contains(l, `"msg":"transaction"`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatalf("transaction line: %v\n%s", err, l)
			}
			json.Unmarshal([]byte(l), &raw)
		}
	}
	if line.Msg != "transaction" || line.Verdict != "accept" || line.Duration == nil || *line.Duration <= 0 || *line.Duration > 60 || line.Score == nil {
		t.Fatalf("transaction line = %+v\n%s", line, buf.String())
	}
	if strings.Join(line.Rcpts, " ") != "no@x.example=550 yes@x.example=ok" || strings.Join(line.Rules, " ") != "no-such-user:reject" || line.Checks == nil {
		t.Errorf("lists: rcpts %q, rules %q, checks %q", line.Rcpts, line.Rules, line.Checks)
	}
	for _, gone := range []string{"duration", "why"} {
		if _, ok := raw[gone]; ok {
			t.Errorf("the line still has %q: %v", gone, raw)
		}
	}
}

type greyCounts struct{ seen []string }

func (g *greyCounts) Stage(string, Stage, Verdict, time.Duration) {}
func (g *greyCounts) Transaction(front string, v Verdict, _ *Facts, _ []Match, _ time.Duration) {
	g.seen = append(g.seen, "transaction "+v.Action.String())
}
func (g *greyCounts) Greylist(front, outcome, reason string) {
	g.seen = append(g.seen, "greylist "+outcome+" "+reason)
}

// TestGreylistedClientThatQuits: a message whose every recipient was
// greylisted, from a client that then leaves, is logged and counted as
// the 451 it got, not as an aborted "continue" at connect.
func TestGreylistedClientThatQuits(t *testing.T) {
	var buf bytes.Buffer
	e := NewEngine(Settings{Hostname: "mx.test"}, nil, RulesFunc(func(_ context.Context, st Stage, f *Facts, ms *[]Match) Verdict {
		if st == StageRcpt {
			return Verdict{Greylist: true, Rule: "grey"}
		}
		return Verdict{}
	}), slog.New(slog.NewJSONHandler(&buf, nil)))
	mem := cache.NewMemory(cache.Config{}, cache.Options{})
	defer mem.Close()
	g, err := cache.NewGreylist(mem, cache.GreylistConfig{})
	if err != nil {
		t.Fatal(err)
	}
	e.SetCache(mem, g)
	obs := &greyCounts{}
	e.Observe(obs)
	c, _ := e.Connect(ctx, ConnInfo{IP: netip.MustParseAddr("192.0.2.1"), Front: "milter"})
	c.Helo(ctx, "h.example")
	c.Mail(ctx, "a@b.example", MailInfo{})
	if v := c.Rcpt(ctx, "x@y.example"); v.Action != Tempfail || v.Code != 451 {
		t.Fatalf("rcpt: %+v; want a 451", v)
	}
	c.Close()
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if line["verdict"] != "tempfail" || line["stage"] != "rcpt" || line["code"] != 451.0 || !strings.Contains(line["reason"].(string), "greylisted (new)") ||
		line["greylist"] != "greylisted (new)" {
		t.Errorf("log line: %s", buf.String())
	}
	if got := strings.Join(obs.seen, ", "); got != "greylist greylisted new, transaction tempfail" {
		t.Errorf("observed %s", got)
	}
}
