package main

import (
	"bufio"
	"fmt"
	"net"
	"net/smtp"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/journal"
)

// TestJournalAllFronts: with journal: set, a transaction through each of
// the milter, the SMTP proxy and the policy service leaves one line, and
// SIGTERM writes what is queued before mailward exits.
func TestJournalAllFronts(t *testing.T) {
	dir := t.TempDir()
	milterAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	smtpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	policyAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	sink := testenv.StartSink(t)
	cfg := writeFile(t, dir, "mailward.yaml", baseConfig(t, milterAddr)+fmt.Sprintf(`admin:
  listen: ""
smtp:
  listen: %s
  upstream: %s
policy:
  listen: inet:%s
journal:
  path: journal/mail.jsonl
  omit_headers: [Subject]
`, smtpAddr, sink.Addr(), policyAddr))
	p := startProc(t, cfg, milterAddr)

	sendOne(t, milterAddr)
	msg := "From: a@x.example\r\nSubject: private\r\n\r\nhello\r\n"
	if err := smtp.SendMail(smtpAddr, nil, "a@x.example", []string{"b@y.example"}, []byte(msg)); err != nil {
		t.Fatalf("through the SMTP proxy: %v", err)
	}
	c, err := net.Dial("tcp", policyAddr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(c, "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.9\nhelo_name=c.example\nsender=a@x.example\nrecipient=b@y.example\nqueue_id=PQ1\n\n")
	reply, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if err != nil || !strings.HasPrefix(reply, "action=") {
		t.Fatalf("policy reply %q, %v", reply, err)
	}
	// The policy service ends its transaction when Postfix sends the
	// end-of-data request or the instance expires; the connection's close ends it too.
	time.Sleep(200 * time.Millisecond)
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(t, 30*time.Second); err != nil {
		t.Fatalf("mailward exited with %v", err)
	}

	files, err := journal.Expand([]string{filepath.Join(dir, "journal")})
	if err != nil {
		t.Fatal(err)
	}
	var fronts []string
	_, err = journal.Read(files, func(l *journal.Line) error {
		fronts = append(fronts, l.Front)
		if l.Front == "smtp" {
			if len(l.Headers) != 1 || l.Headers[0].Name != "From" || !slices.Equal(l.Omitted, []string{"Subject"}) {
				t.Errorf("smtp line: headers %+v omitted %v", l.Headers, l.Omitted)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(fronts)
	if !slices.Equal(fronts, []string{"milter", "policy", "smtp"}) {
		t.Fatalf("journal lines by front %v, want one each of milter, policy, smtp\n%s", fronts, p.out.String())
	}
}
