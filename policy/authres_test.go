package policy

import (
	"bufio"
	"context"
	"net/netip"
	"strings"
	"testing"
)

// An accept decided before end of message (an allowlist rule at connect,
// MAIL or RCPT) still removes the Authentication-Results that claim our
// authserv-id and adds ours when the message ends.
func TestEarlyAcceptStillEditsHeaders(t *testing.T) {
	for _, at := range []Stage{StageConnect, StageHelo, StageMail, StageRcpt, StageData} {
		t.Run(at.String(), func(t *testing.T) {
			e := newTestEngine(func(_ context.Context, st Stage, f *Facts, _ *[]Match) Verdict {
				switch st {
				case at:
					return Verdict{Action: Accept, Rule: "partner-domain"}
				case StageEOM:
					t.Errorf("rules ran at end of message after an accept at %s", at)
				}
				return Verdict{}
			})
			c, _ := e.Connect(ctx, ConnInfo{IP: netip.MustParseAddr("192.0.2.1")})
			defer c.Close()
			c.Helo(ctx, "h.example")
			// Two messages: a connection-level accept holds for both.
			for range 2 {
				c.Mail(ctx, "billing@partner.example", MailInfo{})
				c.Rcpt(ctx, "bob@rcpt.example")
				c.HeaderField("Authentication-Results", " other.test; spf=pass")
				c.HeaderField("Authentication-Results", " mx.test; dkim=pass header.d=bank.test; dmarc=pass")
				c.HeaderField("From", " <ceo@bank.test>")
				c.EndOfHeaders(ctx)
				c.Body([]byte("hello\r\n"))
				v := c.EndOfMessage(ctx)
				if v.Action != Accept || v.Stage != at || v.Rule != "partner-domain" {
					t.Fatalf("eom = %+v; want the accept of %s", v, at)
				}
				if len(v.Remove) != 1 || v.Remove[0] != (HeaderRef{Name: "Authentication-Results", Index: 2}) {
					t.Errorf("removed %+v; want the forged Authentication-Results (the second)", v.Remove)
				}
				var ours bool
				for _, h := range v.Headers {
					ours = ours || h.Name == "Authentication-Results" && strings.HasPrefix(h.Value, "mx.test;") && h.Prepend
				}
				if !ours {
					t.Errorf("no Authentication-Results of ours: %+v", v.Headers)
				}
			}
		})
	}
}

// A reject decided early needs no edits: the message is refused.
func TestEarlyRejectHasNoEdits(t *testing.T) {
	e := newTestEngine(func(_ context.Context, st Stage, f *Facts, _ *[]Match) Verdict {
		if st == StageMail {
			return Verdict{Action: Reject}
		}
		return Verdict{}
	})
	c, _ := e.Connect(ctx, ConnInfo{})
	defer c.Close()
	c.Mail(ctx, "a@x.example", MailInfo{})
	c.HeaderField("Authentication-Results", " mx.test; dkim=pass")
	if v := c.EndOfMessage(ctx); v.Action != Reject || len(v.Headers)+len(v.Remove) != 0 {
		t.Fatalf("eom = %+v", v)
	}
}

// The authserv-id as a mail reader reads it: a quoted-string unescaped,
// comments and folding skipped.
func TestAuthServIDQuoted(t *testing.T) {
	for in, want := range map[string]string{
		`"mx.example\.org"; dkim=pass`:      "mx.example.org",
		`"mx.example.org"; dkim=pass`:       "mx.example.org",
		` (c) "mx.\e\x\a\m\p\l\e.org" 1; x`: "mx.example.org",
		`"mx.ex\"ample.org"; x`:             `mx.ex"ample.org`,
		`"quoted id"; none`:                 "quoted id",
		`"mx.example.org`:                   "mx.example.org",
		`"mx.example` + "\r\n" + ` .org"`:   "mx.example .org",
	} {
		if got := AuthServID(in); got != want {
			t.Errorf("AuthServID(%q) = %q, want %q", in, got, want)
		}
	}
}

// Forged results are found whatever the spelling: a quoted authserv-id
// with quoted-pairs, a field name with white space before the colon. The
// index counts every field of the name as the MTA does.
func TestForgedAuthResultsSpellings(t *testing.T) {
	e := NewEngine(Settings{Hostname: "mx.test"}, nil, nil, quiet())
	c, _ := e.Connect(ctx, ConnInfo{})
	defer c.Close()
	c.Mail(ctx, "a@x.example", MailInfo{})
	c.Rcpt(ctx, "b@y.example")
	for _, h := range [][2]string{
		{"Authentication-Results", " other.test; spf=pass"},
		{"Authentication-Results ", ` "mx.tes\t"; dkim=pass`},
		{"Authentication-Results\t", " mx.test; dmarc=pass"},
		{"authentication-results", ` "mx.test"; dkim=pass`},
		{"Authentication-Results", ` "mx.test.evil"; dkim=pass`},
	} {
		c.HeaderField(h[0], h[1])
	}
	c.EndOfHeaders(ctx)
	v := c.EndOfMessage(ctx)
	var idx []int
	for _, r := range v.Remove {
		if r.Name != "Authentication-Results" {
			t.Errorf("removal names %q", r.Name)
		}
		idx = append(idx, r.Index)
	}
	if len(idx) != 3 || idx[0] != 2 || idx[1] != 3 || idx[2] != 4 {
		t.Fatalf("removed %v; want fields 2, 3 and 4", idx)
	}
	if got := c.Facts().Header("Authentication-Results"); got != "other.test; spf=pass" {
		t.Errorf("first Authentication-Results %q", got)
	}
}

// A message file with white space before a colon (obsolete syntax, still
// read by mail readers) is read, not refused, and its forged result found.
func TestReadHeaderObsoleteNameDrive(t *testing.T) {
	hs, err := ReadHeader(bufio.NewReader(strings.NewReader("Authentication-Results : mx.test; dkim=pass\r\nSubject: x\r\n\r\nbody\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 2 || hs[0].Name != "Authentication-Results " {
		t.Fatalf("headers %+v", hs)
	}
	e := NewEngine(Settings{Hostname: "mx.test"}, nil, nil, quiet())
	out, err := e.Drive(ctx, Transaction{Helo: "h.example", From: "a@x.example", Rcpts: []string{"b@y.example"}, Header: hs})
	if err != nil {
		t.Fatal(err)
	}
	if r := out.Verdict.Remove; len(r) != 1 || r[0].Index != 1 {
		t.Fatalf("removed %+v; want the forged result", r)
	}
}
