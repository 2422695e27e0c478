package smtp

import (
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
			body := message("early accept", append([]string{testenv.OtherResults}, testenv.ForgedResults(authservID)...)...)
			if err := send(t, c, tc.from, []string{"bob@rcpt.example"}, body); err != nil {
				t.Fatal(err)
			}
			c.Quit()
			msgs, err := sink.Wait(1, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			testenv.CheckResults(t, msgs[0].Header(), authservID, true)
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
	body := message("forged spellings", append([]string{testenv.OtherResults}, testenv.ForgedResults(authservID)...)...)
	if err := send(t, c, "alice@sender.example", []string{"bob@rcpt.example"}, body); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	msgs, err := sink.Wait(1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	testenv.CheckResults(t, msgs[0].Header(), authservID, true)
}
