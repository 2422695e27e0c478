package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
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
