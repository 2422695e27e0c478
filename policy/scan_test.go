package policy

import (
	"context"
	"strings"
	"testing"
)

// The attachment scan is skipped only where it would find nothing: for
// every header it skips, the scan itself lists no attachment.
func TestMayHaveAttachments(t *testing.T) {
	for _, tc := range []struct {
		header []Header
		want   bool
	}{
		{nil, false},
		{[]Header{{Name: "Subject", Value: "hi"}}, false},
		{[]Header{{Name: "Content-Type", Value: " text/plain; charset=utf-8"}}, false},
		{[]Header{{Name: "content-type", Value: "text/html;\r\n charset=\"us-ascii\""}}, false},
		{[]Header{{Name: "Content-Type", Value: `multipart/mixed; boundary="b"`}}, true},
		{[]Header{{Name: "Content-Type", Value: `application/pdf; name="a.pdf"`}}, true},
		{[]Header{{Name: "Content-Disposition", Value: "inline"}}, true},
		{[]Header{{Name: "Content-Type", Value: "text/plain"}, {Name: "Content-Type", Value: "multipart/mixed"}}, true},
		{[]Header{{Name: "Content-Type", Value: "text/plain; ="}}, true}, // unreadable: scan
	} {
		got := mayHaveAttachments(tc.header)
		if got != tc.want {
			t.Errorf("mayHaveAttachments(%v) = %v, want %v", tc.header, got, tc.want)
		}
		if got {
			continue
		}
		var msg strings.Builder
		for _, h := range tc.header {
			msg.WriteString(h.Name + ":" + h.Value + "\r\n")
		}
		msg.WriteString("\r\n--b\r\nContent-Disposition: attachment; filename=x\r\n\r\nbody\r\n")
		if a, _ := scan(msg.String(), msg.Len()); len(a) != 0 {
			t.Errorf("skipped a header under which the scan finds %v", a)
		}
	}
}

// A message that is itself a named part is listed, scan or no scan.
func TestSinglePartAttachmentListed(t *testing.T) {
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
	c.Header("Content-Type", `application/octet-stream; name="run.exe"`)
	c.EndOfHeaders(ctx)
	c.Body([]byte("MZ\r\n"))
	c.EndOfMessage(ctx)
	if len(got) != 1 || got[0].Name != "run.exe" {
		t.Fatalf("attachments = %+v", got)
	}
}
