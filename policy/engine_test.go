package policy

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
)

var ctx = context.Background()

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTestEngine(rules RulesFunc) *Engine {
	return NewEngine(Settings{Hostname: "mx.test"}, nil, rules, quiet())
}

// stagesSeen records at which stage each rule set was asked, and answers
// what the table says.
func TestEarliestStage(t *testing.T) {
	var asked []Stage
	e := newTestEngine(func(_ context.Context, st Stage, f *Facts, _ *[]Match) Verdict {
		asked = append(asked, st)
		if st == StageConnect && f.IP == netip.MustParseAddr("192.0.2.66") {
			return Verdict{Action: Reject, Text: "go away"}
		}
		return Verdict{}
	})
	c, v := e.Connect(ctx, ConnInfo{IP: netip.MustParseAddr("192.0.2.66")})
	defer c.Close()
	if v.Action != Reject || v.Stage != StageConnect || v.Code != 550 || v.Enhanced != "5.7.1" {
		t.Fatalf("connect verdict = %+v; want 550 5.7.1 reject at connect", v)
	}
	// Everything after a connection-level reject answers the same, without
	// running rules again.
	if v := c.Helo(ctx, "x"); v.Action != Reject {
		t.Fatalf("helo after connect reject = %v", v.Action)
	}
	if v := c.Mail(ctx, "a@b.example", MailInfo{}); v.Action != Reject {
		t.Fatalf("mail after connect reject = %v", v.Action)
	}
	if len(asked) != 1 {
		t.Fatalf("rules asked at %v; want connect only", asked)
	}
}

func TestRcptRejectIsPerRecipient(t *testing.T) {
	e := newTestEngine(func(_ context.Context, st Stage, f *Facts, _ *[]Match) Verdict {
		if st == StageRcpt && f.Rcpt == "no@x.example" {
			return Verdict{Action: Reject, Code: 550, Enhanced: "5.1.1", Text: "unknown"}
		}
		return Verdict{}
	})
	c, _ := e.Connect(ctx, ConnInfo{IP: netip.MustParseAddr("192.0.2.1")})
	defer c.Close()
	c.Helo(ctx, "h.example")
	c.Mail(ctx, "<a@b.example>", MailInfo{})
	for _, r := range []string{"one@x.example", "no@x.example", "two@x.example"} {
		v := c.Rcpt(ctx, "<"+r+">")
		want := Continue
		if r == "no@x.example" {
			want = Reject
		}
		if v.Action != want {
			t.Fatalf("rcpt %s = %v, want %v", r, v.Action, want)
		}
	}
	if got := strings.Join(c.Facts().Rcpts, ","); got != "one@x.example,two@x.example" {
		t.Fatalf("rcpts = %s", got)
	}
	c.Header("Subject", "hi")
	if v := c.EndOfHeaders(ctx); v.Action != Continue {
		t.Fatalf("eoh = %v", v.Action)
	}
	v := c.EndOfMessage(ctx)
	if v.Action != Accept || v.Stage != StageEOM {
		t.Fatalf("eom = %+v", v)
	}
	if len(v.Headers) == 0 || v.Headers[0].Name != "Authentication-Results" || !strings.HasPrefix(v.Headers[0].Value, "mx.test") {
		t.Fatalf("no Authentication-Results in %+v", v.Headers)
	}
}

func TestConnectionFactsSurviveMessages(t *testing.T) {
	var seen []string
	e := newTestEngine(func(_ context.Context, st Stage, f *Facts, _ *[]Match) Verdict {
		if st == StageEOM {
			seen = append(seen, f.IP.String()+"/"+f.Helo+"/"+f.MailFrom+"/"+strings.Join(f.Rcpts, ","))
		}
		return Verdict{}
	})
	c, _ := e.Connect(ctx, ConnInfo{IP: netip.MustParseAddr("2001:db8::1")})
	defer c.Close()
	c.Helo(ctx, "h.example")
	for _, from := range []string{"a@x.example", "b@x.example"} {
		c.Mail(ctx, from, MailInfo{})
		c.Rcpt(ctx, "r@y.example")
		c.EndOfHeaders(ctx)
		c.EndOfMessage(ctx)
	}
	want := "2001:db8::1/h.example/a@x.example/r@y.example 2001:db8::1/h.example/b@x.example/r@y.example"
	if got := strings.Join(seen, " "); got != want {
		t.Fatalf("seen %q\nwant %q", got, want)
	}
}

func TestQuarantineAndHeadersWaitForEndOfMessage(t *testing.T) {
	e := newTestEngine(func(_ context.Context, st Stage, f *Facts, _ *[]Match) Verdict {
		switch st {
		case StageMail:
			return Verdict{Action: Quarantine, Reason: "suspicious sender"}
		case StageRcpt:
			return Verdict{Headers: []HeaderEdit{{Name: "X-Flag", Value: "yes"}}}
		}
		return Verdict{}
	})
	c, _ := e.Connect(ctx, ConnInfo{})
	defer c.Close()
	if v := c.Mail(ctx, "a@x.example", MailInfo{}); v.Action != Continue {
		t.Fatalf("quarantine must wait for end of message, got %v at mail", v.Action)
	}
	if v := c.Rcpt(ctx, "r@y.example"); v.Action != Continue || len(v.Headers) != 0 {
		t.Fatalf("rcpt = %+v", v)
	}
	v := c.EndOfMessage(ctx)
	if v.Action != Quarantine || v.Reason != "suspicious sender" {
		t.Fatalf("eom = %+v", v)
	}
	found := false
	for _, h := range v.Headers {
		found = found || h.Name == "X-Flag"
	}
	if !found {
		t.Fatalf("header from rcpt stage lost: %+v", v.Headers)
	}
}

func TestPanicGivesFallbackNotAccept(t *testing.T) {
	for _, tc := range []struct {
		onError Action
		want    Action
	}{{Tempfail, Tempfail}, {Accept, Continue}} {
		e := NewEngine(Settings{Hostname: "mx.test", OnError: tc.onError}, nil, RulesFunc(func(context.Context, Stage, *Facts, *[]Match) Verdict {
			panic("broken rule")
		}), quiet())
		c, v := e.Connect(ctx, ConnInfo{})
		if v.Action != tc.want {
			t.Errorf("on_error %v: verdict %v, want %v", tc.onError, v.Action, tc.want)
		}
		if tc.want == Tempfail && v.Code != 451 {
			t.Errorf("tempfail code = %d", v.Code)
		}
		c.Close()
	}
}

func TestScoreThresholds(t *testing.T) {
	for _, tc := range []struct {
		score float64
		want  Action
	}{{3, Accept}, {10, Quarantine}, {20, Reject}} {
		e := NewEngine(Settings{Hostname: "mx.test", ScoreHeader: "X-Mailward-Score", Thresholds: Thresholds{Reject: 15, Quarantine: 10, AddHeader: 2}}, nil,
			RulesFunc(func(_ context.Context, st Stage, f *Facts, m *[]Match) Verdict {
				if st == StageData {
					f.Score += tc.score
					*m = append(*m, Match{Rule: "spammy", Action: "score", Score: tc.score, Stage: st})
				}
				return Verdict{}
			}), quiet())
		c, _ := e.Connect(ctx, ConnInfo{})
		c.Mail(ctx, "a@x.example", MailInfo{})
		c.Rcpt(ctx, "b@y.example")
		c.EndOfHeaders(ctx)
		v := c.EndOfMessage(ctx)
		if v.Action != tc.want {
			t.Errorf("score %v: %v, want %v", tc.score, v.Action, tc.want)
		}
		if tc.want == Accept {
			var got string
			for _, h := range v.Headers {
				if h.Name == "X-Mailward-Score" {
					got = h.Value
				}
			}
			if got != "3.0 (spammy=3)" {
				t.Errorf("score header = %q", got)
			}
		}
		c.Close()
	}
}

func TestVerdictDefaultsAndReply(t *testing.T) {
	v := Verdict{Action: Reject, Code: 451, Enhanced: "4.7.1"}.WithDefaults()
	if v.Code != 550 || v.Enhanced != "5.7.1" {
		t.Fatalf("a reject with a 4xx code must become 5xx: %+v", v)
	}
	if got := (Verdict{Action: Tempfail, Text: "later"}).Reply(); got != "451 4.7.1 later" {
		t.Fatalf("reply = %q", got)
	}
	if got := (Verdict{Action: Reject, Code: 554, Enhanced: "5.7.26", Text: "dmarc"}).Reply(); got != "554 5.7.26 dmarc" {
		t.Fatalf("reply = %q", got)
	}
}

func TestAuthServID(t *testing.T) {
	for in, want := range map[string]string{
		"mx.test; spf=pass":                   "mx.test",
		"  (comment (nested)) mx.test 1; x=y": "mx.test",
		"mx.test;":                            "mx.test",
		"\r\n\tMX.TEST; none":                 "MX.TEST",
		"(unterminated":                       "",
		"":                                    "",
	} {
		if got := AuthServID(in); got != want {
			t.Errorf("AuthServID(%q) = %q, want %q", in, got, want)
		}
	}
	refs := ForgedAuthResults([]Header{
		{"Authentication-Results", "other.test; spf=pass"},
		{"authentication-results", "MX.test; dkim=pass"},
		{"Subject", "x"},
		{"Authentication-Results", "mx.test.evil; dkim=pass"},
	}, "mx.test")
	if len(refs) != 1 || refs[0].Index != 2 {
		t.Fatalf("forged = %+v; want the second Authentication-Results only", refs)
	}
}

func FuzzAuthServID(f *testing.F) {
	f.Add("mx.test; spf=pass")
	f.Add("(a(b)c) \"quoted id\"; none")
	f.Fuzz(func(t *testing.T, v string) {
		id := AuthServID(v)
		if strings.ContainsAny(id, " \t\r\n;") && !strings.HasPrefix(strings.TrimSpace(v), "\"") && !strings.Contains(v, "(") {
			t.Fatalf("authserv-id %q of %q holds a separator", id, v)
		}
	})
}

func TestAttachmentsListedAtEndOfMessage(t *testing.T) {
	var got []Attachment
	e := newTestEngine(func(_ context.Context, st Stage, f *Facts, _ *[]Match) Verdict {
		if st == StageEOM {
			got = f.Attachments
		}
		return Verdict{}
	})
	c, _ := e.Connect(ctx, ConnInfo{})
	defer c.Close()
	c.Mail(ctx, "a@x.example", MailInfo{})
	c.Rcpt(ctx, "b@y.example")
	c.Header("MIME-Version", "1.0")
	c.Header("Content-Type", `multipart/mixed; boundary="b1"`)
	c.EndOfHeaders(ctx)
	body := "--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n" +
		"--b1\r\nContent-Type: application/octet-stream; name=\"invoice.exe\"\r\nContent-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n" +
		"--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\n\r\n%PDF-1.4\r\n--b1--\r\n"
	// Chunks split mid-line, as an MTA may send them.
	for i := 0; i < len(body); i += 7 {
		c.Body([]byte(body[i:min(i+7, len(body))]))
	}
	c.EndOfMessage(ctx)
	if len(got) != 2 || got[0].Name != "invoice.exe" || got[0].Size != 12 || got[1].Name != "a.pdf" || got[1].ContentType != "application/pdf" {
		t.Fatalf("attachments = %+v", got)
	}
}

func TestConnectionScoreCountsForEveryMessage(t *testing.T) {
	var scores []float64
	e := newTestEngine(func(_ context.Context, st Stage, f *Facts, m *[]Match) Verdict {
		switch st {
		case StageConnect:
			f.Score += 4
			*m = append(*m, Match{Rule: "listed", Action: "score", Score: 4, Stage: st})
		case StageEOM:
			scores = append(scores, f.Score)
		}
		return Verdict{}
	})
	c, _ := e.Connect(ctx, ConnInfo{})
	defer c.Close()
	for i := 0; i < 2; i++ {
		c.Mail(ctx, "a@x.example", MailInfo{})
		c.Rcpt(ctx, "b@y.example")
		c.EndOfHeaders(ctx)
		c.EndOfMessage(ctx)
	}
	if len(scores) != 2 || scores[0] != 4 || scores[1] != 4 {
		t.Fatalf("scores at end of message = %v; want the connect-stage 4 in both", scores)
	}
}

func TestRefuseRcptDownstream(t *testing.T) {
	var atEOM []string
	e := newTestEngine(func(_ context.Context, st Stage, f *Facts, _ *[]Match) Verdict {
		if st == StageEOM {
			atEOM = append([]string(nil), f.Rcpts...)
		}
		return Verdict{}
	})
	c, _ := e.Connect(ctx, ConnInfo{})
	defer c.Close()
	c.Mail(ctx, "a@x.example", MailInfo{})
	c.Rcpt(ctx, "<one@y.example>")
	c.Rcpt(ctx, "<two@y.example>")
	c.RefuseRcpt("<one@y.example>", 550)
	c.EndOfHeaders(ctx)
	c.EndOfMessage(ctx)
	if strings.Join(atEOM, ",") != "two@y.example" {
		t.Fatalf("rules at end of message saw %v; want only the recipient the next hop took", atEOM)
	}
	if got := strings.Join(outcomeList(c.Outcomes()), " "); got != "one@y.example=550 two@y.example=ok" {
		t.Fatalf("outcomes = %q", got)
	}
}
