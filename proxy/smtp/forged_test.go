package smtp

import (
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/testenv"
)

// A rule that accepts before the message (a partner's network at connect,
// a partner's domain at MAIL) must not let an Authentication-Results that
// claims our authserv-id through: it is dropped on the way upstream and
// ours is added, as for any accepted message.
func TestEarlyAcceptDropsForgedResults(t *testing.T) {
	for _, tc := range []struct{ name, client, from string }{
		{"accept at connect", "127.0.0.87", "alice@sender.example"},
		{"accept at mail", "127.0.0.9", "billing@partner.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink := testenv.StartSink(t)
			_, addr := startProxy(t, Config{Upstream: sink.Addr()})
			c := dialClient(t, tc.client, addr)
			body := message("early accept",
				"Authentication-Results: other.example; spf=pass smtp.mailfrom=sender.example",
				"Authentication-Results: "+authservID+"; dkim=pass header.d=bank.test; dmarc=pass header.from=bank.test")
			if err := send(t, c, tc.from, []string{"bob@rcpt.example"}, body); err != nil {
				t.Fatal(err)
			}
			c.Quit()
			msgs, err := sink.Wait(1, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			h := msgs[0].Header()
			if strings.Contains(h, "header.d=bank.test") {
				t.Errorf("forged Authentication-Results reached upstream:\n%s", h)
			}
			if !strings.Contains(h, "Authentication-Results: other.example; spf=pass") {
				t.Errorf("another server's Authentication-Results was dropped:\n%s", h)
			}
			if !strings.Contains(h, "Authentication-Results: "+authservID+";") {
				t.Errorf("no Authentication-Results of ours:\n%s", h)
			}
		})
	}
}

// Every spelling of a forged result is dropped on the way upstream: a
// quoted authserv-id with quoted-pairs, white space before the colon, a
// comment before the id.
func TestForgedSpellingsDropped(t *testing.T) {
	sink := testenv.StartSink(t)
	_, addr := startProxy(t, Config{Upstream: sink.Addr()})
	c := dialClient(t, "127.0.0.9", addr)
	body := message("forged spellings",
		"Authentication-Results: other.example; spf=pass",
		`Authentication-Results: "`+authservID+`"; dkim=pass header.d=bank1.test`,
		`Authentication-Results: "mw.test\.ex\ample"; dkim=pass header.d=bank2.test`,
		"Authentication-Results : "+authservID+"; dkim=pass header.d=bank3.test",
		"Authentication-Results\t:(c)"+strings.ToUpper(authservID)+"; dkim=pass header.d=bank4.test")
	if err := send(t, c, "alice@sender.example", []string{"bob@rcpt.example"}, body); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	msgs, err := sink.Wait(1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h := msgs[0].Header()
	if strings.Contains(h, "header.d=bank") {
		t.Errorf("a forged Authentication-Results reached upstream:\n%s", h)
	}
	if !strings.Contains(h, "Authentication-Results: other.example; spf=pass") {
		t.Errorf("another server's Authentication-Results was dropped:\n%s", h)
	}
}
