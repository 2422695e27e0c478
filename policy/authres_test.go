package policy

import (
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
