package smtp

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/testenv"
)

// TestRelayAuthUnreadableUserRefusedFirst: a user the proxy cannot name
// (here longer than it carries, which Dovecot behind Postfix takes) is
// refused before the exchange goes upstream, with one definite answer,
// never 235 followed by a dropped connection; the session goes on.
func TestRelayAuthUnreadableUserRefusedFirst(t *testing.T) {
	testenv.Require(t, "postfix")
	long := strings.Repeat("a", maxUserLen) + "@x"
	dc := testenv.StartDovecot(t, map[string]string{"alice": alicePass, long: alicePass})
	main := testenv.DovecotSASL(dc)
	main["smtpd_recipient_restrictions"] = "permit_sasl_authenticated, reject"
	main["smtpd_relay_restrictions"] = "permit_sasl_authenticated, reject"
	logs := &logBuffer{t: t}
	r := &authRig{rig: startRigLog(t, main, Config{Auth: AuthRelay}, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))), logs: logs, dc: dc}

	rc, _ := rawTLS(t, "127.0.0.9", r.addr)
	// Initial response.
	rc.send("AUTH PLAIN " + b64("\x00"+long+"\x00"+alicePass) + "\r\n")
	if got := rc.expect(535); !strings.Contains(got.String(), "user name") {
		t.Fatalf("got %s", got)
	}
	// First response of the exchange: upstream's exchange is cancelled.
	rc.send("AUTH LOGIN\r\n")
	rc.expect(334)
	rc.send(b64(long) + "\r\n")
	rc.expect(535)
	// PLAIN with no user in it at all.
	rc.send("AUTH PLAIN\r\n")
	rc.expect(334)
	rc.send(b64("no separators") + "\r\n")
	rc.expect(535)
	// The session is still whole, and takes a user it can name.
	rc.send("AUTH PLAIN " + b64("\x00alice\x00"+alicePass) + "\r\n")
	rc.expect(235)
	rc.send("MAIL FROM:<alice@sender.example>\r\n")
	rc.expect(250)
	rc.send("RCPT TO:<bob@rcpt.example>\r\n")
	rc.expect(250)
	rc.send("QUIT\r\n")
	rc.expect(221)
	if err := r.pf.WaitLog("sasl_username=alice", 10*time.Second); err != nil {
		t.Error(err)
	}
	if strings.Contains(r.pf.Log(), "sasl_username=aaaa") {
		t.Error("the user the proxy cannot name authenticated upstream")
	}
	noSecrets(t, logs.String())
}
