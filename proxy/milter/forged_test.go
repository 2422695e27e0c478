package milter

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
)

// An allowlist rule that accepts at MAIL must not answer SMFIR_ACCEPT
// there: the MTA would not call again, and a forged Authentication-Results
// claiming our authserv-id would pass. The accept comes at end of message,
// after the forged header's removal and our own header.
func TestEarlyAcceptRemovesForgedResults(t *testing.T) {
	for _, tc := range []struct {
		name    string
		actions uint32
		atMail  byte
	}{
		{"header changes allowed", 0x1ff, 'c'},
		// With no header changes allowed, nothing is left to do at the end.
		{"no header changes", 0x04, 'a'},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules := policy.RulesFunc(func(_ context.Context, st policy.Stage, f *policy.Facts, _ *[]policy.Match) policy.Verdict {
				if st == policy.StageMail && f.MailFrom == "billing@partner.example" {
					return policy.Verdict{Action: policy.Accept, Rule: "partner-domain"}
				}
				return policy.Verdict{}
			})
			m := startSession(t, rules)
			m.send('O', optneg(6, tc.actions, 0x1fffff))
			m.expect('O')
			m.send('C', "client.example\x004\x00\x19192.0.2.1\x00")
			m.expect('c')
			m.send('H', "helo.example\x00")
			m.expect('c')
			m.send('M', "<billing@partner.example>\x00")
			m.expect(tc.atMail)
			if tc.atMail == 'a' {
				m.send('Q', "")
				return
			}
			m.send('R', "<b@rcpt.example>\x00")
			m.expect('c')
			m.send('L', "Authentication-Results\x00 other.example; spf=pass\x00")
			m.send('L', "Authentication-Results\x00 mw.test.example; dkim=pass header.d=bank.test; dmarc=pass\x00")
			m.send('L', "From\x00 <ceo@bank.test>\x00")
			m.send('N', "")
			m.expect('c')
			m.send('B', "Hello.\r\n")
			m.send('E', "")
			var deleted, added bool
			for {
				c, d := m.reply()
				switch c {
				case 'm':
					deleted = binary.BigEndian.Uint32([]byte(d)) == 2 && d[4:] == "Authentication-Results\x00\x00"
					continue
				case 'i':
					added = d[4:len("Authentication-Results")+4] == "Authentication-Results"
					continue
				}
				if c != 'a' {
					t.Fatalf("end of message reply %q %q; want accept", c, d)
				}
				break
			}
			if !deleted || !added {
				t.Fatalf("forged header deleted: %v, ours added: %v", deleted, added)
			}
			m.send('Q', "")
		})
	}
}

// Through Postfix: every spelling of a forged result is deleted, and
// only those (the MTA counts fields by name as the engine does).
func TestPostfixRemovesForgedSpellings(t *testing.T) {
	r := startRig(t)
	body := message("forged spellings", append([]string{testenv.OtherResults}, testenv.ForgedResults("mw.test.example")...)...)
	out, err := testenv.Swaks(t, r.postfix.SMTPAddr(), "--from", "alice@sender.example", "--to", "bob@rcpt.example", "--data", body)
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	msgs, err := r.sink.Wait(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	testenv.CheckResults(t, msgs[0].Header(), "mw.test.example", true)
}
