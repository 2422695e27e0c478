package policy

import (
	"context"
	"net/netip"
	"strings"
	"testing"
)

// Header edits decided at connect and HELO reach every message of the
// connection, as their scores do.
func TestConnectionHeaderEdits(t *testing.T) {
	e := newTestEngine(func(_ context.Context, st Stage, _ *Facts, _ *[]Match) Verdict {
		switch st {
		case StageConnect:
			return Verdict{Headers: []HeaderEdit{{Name: "X-Client", Value: "seen"}}}
		case StageHelo:
			return Verdict{Headers: []HeaderEdit{{Name: "X-Helo", Value: "odd"}}}
		}
		return Verdict{}
	})
	c, _ := e.Connect(ctx, ConnInfo{IP: netip.MustParseAddr("192.0.2.1")})
	defer c.Close()
	c.Helo(ctx, "h.example")
	for i := range 2 {
		c.Mail(ctx, "a@b.example", MailInfo{})
		c.Rcpt(ctx, "r@x.example")
		c.HeaderField("Subject", " hi")
		c.EndOfHeaders(ctx)
		v := c.EndOfMessage(ctx)
		var names []string
		for _, h := range v.Headers {
			names = append(names, h.Name)
		}
		if got := strings.Join(names, ","); !strings.Contains(got, "X-Client,X-Helo") {
			t.Errorf("message %d: headers added %s; want X-Client and X-Helo", i+1, got)
		}
	}
}

// Drive plays the stages in order, goes on past a refused recipient and
// stops when every recipient is refused.
func TestDrive(t *testing.T) {
	var seen []string
	e := newTestEngine(func(_ context.Context, st Stage, f *Facts, _ *[]Match) Verdict {
		seen = append(seen, st.String())
		switch {
		case st == StageRcpt && strings.HasPrefix(f.Rcpt, "no"):
			return Verdict{Action: Reject, Code: 550, Text: "no such user"}
		case st == StageData && f.Header("X-Tag") != "":
			return Verdict{Action: Tempfail, Text: "tag " + f.Header("X-Tag")}
		}
		return Verdict{}
	})
	tx := Transaction{Conn: ConnInfo{IP: netip.MustParseAddr("192.0.2.1")}, Helo: "h.example", From: "a@b.example",
		Rcpts: []string{"no1@x.example", "yes@x.example"}, Header: []Header{{Name: "X-Tag", Value: " alpha\r\n beta"}},
		Body: strings.NewReader("body\n")}
	out, err := e.Drive(ctx, tx)
	if err != nil {
		t.Fatal(err)
	}
	if v := out.Verdict; v.Action != Tempfail || v.Stage != StageData || v.Code != 451 || v.Text != "tag alpha beta" {
		t.Errorf("verdict %+v; want 451 at data for the unfolded tag", v)
	}
	if got := strings.Join(seen, " "); got != "connect helo mail rcpt rcpt data" {
		t.Errorf("stages %s", got)
	}
	if len(out.Steps) != 6 || out.Steps[3].Subject != "no1@x.example" || out.Steps[3].Verdict.Action != Reject {
		t.Errorf("steps %+v", out.Steps)
	}

	tx.Rcpts = []string{"no1@x.example", "no2@x.example"}
	out, err = e.Drive(ctx, tx)
	if err != nil {
		t.Fatal(err)
	}
	if v := out.Verdict; v.Action != Reject || v.Stage != StageRcpt || len(out.Rcpts) != 2 {
		t.Errorf("every recipient refused: %+v, rcpts %+v", v, out.Rcpts)
	}
}

// A replay whose body was not kept gives the size and attachments.
func TestDriveGivenSizeAndAttachments(t *testing.T) {
	var got Facts
	e := newTestEngine(func(_ context.Context, st Stage, f *Facts, _ *[]Match) Verdict {
		if st == StageEOM {
			got = *f
		}
		return Verdict{}
	})
	out, err := e.Drive(ctx, Transaction{Conn: ConnInfo{IP: netip.MustParseAddr("192.0.2.1")}, Helo: "h.example",
		Rcpts: []string{"r@x.example"}, Size: 12345, Attachments: []Attachment{{Name: "a.pdf", ContentType: "application/pdf", Size: 10}}})
	if err != nil {
		t.Fatal(err)
	}
	if out.Verdict.Action != Accept || got.Size != 12345 || len(got.Attachments) != 1 || got.Attachments[0].Name != "a.pdf" {
		t.Errorf("verdict %s, size %d, attachments %+v", out.Verdict.Action, got.Size, got.Attachments)
	}
}
