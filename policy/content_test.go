package policy

import (
	"context"
	"strings"
	"testing"

	"github.com/mailward/mailward/checks/content"
)

// The content scan reads the message as it streams and its findings are
// in the facts when the rules of end of message run; a bound met is not
// a fallback.
func TestContentFacts(t *testing.T) {
	drive := func(s Settings, body string) (Facts, Verdict) {
		var seen Facts
		e := NewEngine(s, nil, RulesFunc(func(_ context.Context, st Stage, f *Facts, _ *[]Match) Verdict {
			if st == StageEOM {
				seen = *f
			}
			return Verdict{}
		}), quiet())
		out, err := e.Drive(ctx, Transaction{From: "a@x.example", Rcpts: []string{"b@y.example"},
			Header: []Header{{Name: "From", Value: ` "support@bank.example" <a@x.example>`}, {Name: "Content-Type", Value: " text/html; charset=utf-8"}},
			Body:   strings.NewReader(body)})
		if err != nil {
			t.Fatal(err)
		}
		return seen, out.Verdict
	}
	body := "<p>Hello</p>\n<a href=\"http://evil.example/\">www.bank.example</a>\n"
	f, v := drive(Settings{Hostname: "mx.test"}, body)
	if v.Action != Accept || !strings.Contains(f.BodyText, "Hello") || len(f.URLs) != 2 || f.URLs[0].Domain != "evil.example" {
		t.Fatalf("%s: text %q, urls %+v", v.Action, f.BodyText, f.URLs)
	}
	if c := f.Content; c == nil || !c.HTML || c.TextParts != 1 || c.PhishLinks != 1 || !c.FromDisplayMismatch || c.Limit != "" {
		t.Errorf("content %+v", f.Content)
	}

	f, v = drive(Settings{Hostname: "mx.test", ContentOff: true}, body)
	if v.Action != Accept || f.BodyText != "" || f.URLs != nil || f.Content != nil {
		t.Errorf("content off: %s, %q, %+v, %+v", v.Action, f.BodyText, f.URLs, f.Content)
	}

	long := strings.Repeat("<a href=\"http://a.example/\">text text text</a>\n", 1000)
	f, v = drive(Settings{Hostname: "mx.test"}, long+"<a href=\"http://b.example/\">b</a>")
	f2, _ := drive(Settings{Hostname: "mx.test", Content: contentOptions(100, 5)}, long)
	if v.Action != Accept || len(f.URLs) != 2 || len(f2.BodyText) != 100 || f2.Content.Limit == "" {
		t.Errorf("bounds: %s, %+v; text %d bytes, limit %q", v.Action, f.URLs, len(f2.BodyText), f2.Content.Limit)
	}
}

// A policy service never sees the message: no content scan.
func TestContentSkipped(t *testing.T) {
	var seen *Content
	e := newTestEngine(func(_ context.Context, st Stage, f *Facts, _ *[]Match) Verdict {
		seen = f.Content
		return Verdict{}
	})
	c, _ := e.Connect(ctx, ConnInfo{})
	defer c.Close()
	c.Mail(ctx, "a@x.example", MailInfo{})
	c.SkipContent()
	c.Rcpt(ctx, "b@y.example")
	c.EndOfMessage(ctx)
	if seen != nil {
		t.Errorf("content %+v without content", seen)
	}
}

func contentOptions(text, urls int) (o content.Options) {
	o.MaxTextBytes, o.MaxURLs = text, urls
	return o
}

// A message accepted before its content arrives is not scanned: no rule
// will read what the scan finds.
func TestContentNotScannedWhenDecided(t *testing.T) {
	e := newTestEngine(func(_ context.Context, st Stage, f *Facts, _ *[]Match) Verdict {
		if st == StageMail {
			return Verdict{Action: Accept}
		}
		return Verdict{}
	})
	out, err := e.Drive(ctx, Transaction{From: "a@x.example", Rcpts: []string{"b@y.example"},
		Header: []Header{{Name: "Subject", Value: " hi"}}, Body: strings.NewReader("see http://a.example/\n")})
	if err != nil {
		t.Fatal(err)
	}
	if out.Verdict.Action != Accept || out.Facts.Content != nil || out.Facts.URLs != nil {
		t.Errorf("%s; content %+v, urls %+v", out.Verdict.Action, out.Facts.Content, out.Facts.URLs)
	}
}
