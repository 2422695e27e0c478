package policy

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-message"

	"github.com/mailward/mailward/internal/mimewalk"
)

// walkAttachments lists attachments the way go-message's own reader
// does, to hold the streaming scanner to it on well-formed mail.
func walkAttachments(t *testing.T, msg string) []Attachment {
	t.Helper()
	e, err := message.Read(strings.NewReader(msg))
	if e == nil {
		t.Fatalf("go-message cannot read the message: %v", err)
	}
	var out []Attachment
	e.Walk(func(_ []int, part *message.Entity, _ error) error {
		ct, ctParams, _ := part.Header.ContentType()
		if strings.HasPrefix(ct, "multipart/") {
			return nil
		}
		disp, dParams, _ := part.Header.ContentDisposition()
		name := dParams["filename"]
		if name == "" {
			name = ctParams["name"]
		}
		if name == "" && disp != "attachment" {
			return nil
		}
		n, _ := io.Copy(io.Discard, part.Body)
		out = append(out, Attachment{Name: name, ContentType: ct, Size: n})
		return nil
	})
	return out
}

func scan(msg string, chunk int) ([]Attachment, error) {
	s := newAttachmentScan(DefaultMIMEDepth, DefaultMIMEParts)
	for i := 0; i < len(msg); i += chunk {
		s.Write([]byte(msg[i:min(i+chunk, len(msg))]))
	}
	return s.Finish()
}

func TestMIMEScannerAgreesWithGoMessage(t *testing.T) {
	long := strings.Repeat("x", 5000)
	for name, msg := range map[string]string{
		"nested": "MIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary=\"outer\"\r\n\r\npreamble\r\n" +
			"--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n" +
			"--inner\r\nContent-Type: text/plain\r\n\r\nhello\r\n--inner\r\nContent-Type: text/html\r\n\r\n<p>hello</p>\r\n--inner--\r\n" +
			"--outer\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\nJVBERi0xLjQK\r\n" +
			"--outer\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.txt\r\n\r\nline one\r\nline two\r\n" +
			"--outer\r\nContent-Type: application/octet-stream; name=\"=?UTF-8?B?aW52b2ljZS5leGU=?=\"\r\n\r\n" + long + "\r\nend\r\n" +
			"--outer\r\nContent-Type: text/plain; name=qp.txt\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 soft=\r\nbreak\r\nhard\r\n" +
			"--outer--\r\nepilogue\r\n",
		"single attachment": "Content-Type: image/png; name=p.png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n",
		"no mime":           "Subject: plain\r\n\r\nJust text.\r\n",
		"same boundary inside": "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n" +
			"--c\r\nContent-Disposition: attachment; filename=one\r\n\r\n1\r\n--c--\r\n" +
			"--b\r\nContent-Disposition: attachment; filename=two\r\n\r\n22\r\n--b--\r\n",
	} {
		want := walkAttachments(t, msg)
		for _, chunk := range []int{1, 7, 64, len(msg)} {
			got, err := scan(msg, chunk)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s in chunks of %d:\n got %+v\nwant %+v", name, chunk, got, want)
			}
		}
	}
}

// nested builds a message of multiparts nested depth deep, an
// executable at the bottom.
func nested(depth int) string {
	var b strings.Builder
	b.WriteString("MIME-Version: 1.0\r\n")
	for i := range depth {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n", i, i)
	}
	b.WriteString("Content-Type: application/octet-stream; name=\"payload.exe\"\r\n\r\nMZ\r\n")
	for i := depth - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "--b%d--\r\n", i)
	}
	return b.String()
}

func TestMIMEBounds(t *testing.T) {
	if got, err := scan(nested(DefaultMIMEDepth), 4096); err != nil || len(got) != 1 || got[0].Name != "payload.exe" {
		t.Fatalf("nested to the bound: %+v, %v; want payload.exe found", got, err)
	}
	if _, err := scan(nested(DefaultMIMEDepth+1), 4096); err == nil || !strings.Contains(err.Error(), "nested") {
		t.Fatalf("nested past the bound: err %v", err)
	}
	// 20,000 deep, as an attacker sends it: refused, not walked.
	if _, err := scan(nested(20000), 64<<10); err == nil {
		t.Fatal("20,000 deep: no error")
	}
	var b strings.Builder
	b.WriteString("Content-Type: multipart/mixed; boundary=b\r\n\r\n")
	for range DefaultMIMEParts {
		b.WriteString("--b\r\n\r\nx\r\n")
	}
	if _, err := scan(b.String()+"--b--\r\n", 4096); err == nil || !strings.Contains(err.Error(), "parts") {
		t.Fatalf("%d parts and the message: err %v", DefaultMIMEParts, err)
	}
}

// A message nested past the bound could hide an attachment from the
// rules: it gets the on_error verdict, whatever the rules say.
func TestMIMEPastBoundsIsOnError(t *testing.T) {
	for _, onError := range []Action{Tempfail, Accept} {
		var seen []Attachment
		e := NewEngine(Settings{Hostname: "mx.test", OnError: onError, MIMEDepth: 5}, nil, RulesFunc(func(_ context.Context, st Stage, f *Facts, _ *[]Match) Verdict {
			if st == StageEOM {
				seen = f.Attachments
			}
			return Verdict{}
		}), quiet())
		c, _ := e.Connect(ctx, ConnInfo{})
		hdr, body, _ := strings.Cut(nested(200), "\r\n\r\n")
		c.Mail(ctx, "a@x.example", MailInfo{})
		c.Rcpt(ctx, "b@y.example")
		for _, line := range strings.Split(hdr, "\r\n") {
			name, value, _ := strings.Cut(line, ":")
			c.HeaderField(name, value)
		}
		c.EndOfHeaders(ctx)
		c.Body([]byte(body))
		v := c.EndOfMessage(ctx)
		c.Close()
		want := Tempfail
		if onError == Accept {
			want = Accept
		}
		if v.Action != want || !strings.Contains(v.Reason, "nested more than 5 deep") {
			t.Errorf("on_error %s: verdict %s (%s); want %s for the nesting", onError, v.Action, v.Reason, want)
		}
		if len(seen) != 0 {
			t.Errorf("rules saw attachments %+v past the bound", seen)
		}
		if e.OverLimits("mime") != 1 {
			t.Errorf("mime limit counted %d times", e.OverLimits("mime"))
		}
	}
}

func BenchmarkMIMENested20000(b *testing.B) {
	msg := []byte(nested(20000))
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		s := newAttachmentScan(DefaultMIMEDepth, DefaultMIMEParts)
		for i := 0; i < len(msg); i += 64 << 10 {
			s.Write(msg[i:min(i+64<<10, len(msg))])
		}
		s.Finish()
	}
}

// Scanning costs the same per byte however the parts nest: boundaries
// are looked up, not compared one by one.
func BenchmarkMIMEManyBoundaryLines(b *testing.B) {
	var m strings.Builder
	m.WriteString("Content-Type: multipart/mixed; boundary=b0\r\n\r\n--b0\r\n")
	for i := 1; i < DefaultMIMEDepth; i++ {
		fmt.Fprintf(&m, "Content-Type: multipart/mixed; boundary=%s%d\r\n\r\n--%s%d\r\n", strings.Repeat("a", 60), i, strings.Repeat("a", 60), i)
	}
	m.WriteString("\r\n")
	for m.Len() < 1<<20 {
		m.WriteString("--" + strings.Repeat("a", 60) + "x\r\n")
	}
	msg := []byte(m.String())
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		s := newAttachmentScan(DefaultMIMEDepth, DefaultMIMEParts)
		s.Write(msg)
		s.Finish()
	}
}

func FuzzMIMEScanner(f *testing.F) {
	f.Add(nested(3), 5)
	f.Add("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Disposition: attachment; filename=a\r\n\r\nx\r\n--b--\r\n", 1)
	f.Fuzz(func(t *testing.T, msg string, chunk int) {
		chunk = max(1, chunk%100)
		s := newAttachmentScan(4, 20)
		for i := 0; i < len(msg); i += chunk {
			s.Write([]byte(msg[i:min(i+chunk, len(msg))]))
		}
		got, _ := s.Finish()
		if len(got) > 20 {
			t.Fatalf("%d attachments listed past the part bound", len(got))
		}
		for _, a := range got {
			if a.Size < 0 || a.Size > int64(len(msg)) {
				t.Fatalf("attachment size %d of a %d-byte message", a.Size, len(msg))
			}
		}
	})
}

// A field folded over many lines costs its length once: each part's
// Content-Type below has 20,000 continuation lines.
func TestMIMEFoldedFields(t *testing.T) {
	var b strings.Builder
	b.WriteString("Content-Type: multipart/mixed; boundary=b\r\n\r\n")
	for range 50 {
		b.WriteString("--b\r\nContent-Disposition: attachment;\r\n filename=a.exe\r\nContent-Type: application/octet-stream;\r\n" +
			strings.Repeat(" x=y;\r\n", 20000) + "\r\nMZ\r\n")
	}
	b.WriteString("--b--\r\n")
	a, err := scan(b.String(), 1<<16)
	if err != nil || len(a) != 50 || a[0].Name != "a.exe" {
		t.Fatalf("%d attachments (%+v), %v", len(a), a[:min(len(a), 1)], err)
	}
}

// attachmentScan is the walk with the attachment list as its one reader.
type attachmentScan struct {
	w *mimewalk.Walker
	l *attachmentList
}

func newAttachmentScan(depth, parts int) *attachmentScan {
	l := &attachmentList{}
	return &attachmentScan{w: mimewalk.New(mimewalk.Options{MaxDepth: depth, MaxParts: parts}, l), l: l}
}

func (s *attachmentScan) Write(b []byte) { s.w.Write(b) }

func (s *attachmentScan) Finish() ([]Attachment, error) {
	err := s.w.Finish()
	return s.l.result, err
}
