package smtp

import (
	"crypto/hmac"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

// TestRelayAuthUserInFirstResponse: reading the user before the exchange
// goes upstream refuses no legitimate client: PLAIN without an initial
// response (the user comes after the empty challenge), CRAM-MD5 (after
// the server's challenge), LOGIN without one, and PLAIN naming itself as
// authorization identity all authenticate through Postfix and Dovecot.
func TestRelayAuthUserInFirstResponse(t *testing.T) {
	r := startAuthRig(t, Config{Auth: AuthRelay})
	login := func(name string, exchange func(rc *rawClient)) {
		t.Helper()
		rc, _ := rawTLS(t, "127.0.0.9", r.addr)
		exchange(rc)
		if got := rc.expect(235); len(got.text) == 0 {
			t.Fatalf("%s: %v", name, got)
		}
		rc.send("QUIT\r\n")
		rc.expect(221)
	}
	login("PLAIN, no initial response", func(rc *rawClient) {
		rc.send("AUTH PLAIN\r\n")
		rc.expect(334)
		rc.send(b64("\x00alice\x00"+alicePass) + "\r\n")
	})
	login("CRAM-MD5", func(rc *rawClient) {
		rc.send("AUTH CRAM-MD5\r\n")
		ch := rc.expect(334)
		challenge, err := base64.StdEncoding.DecodeString(ch.text[0])
		if err != nil {
			t.Fatalf("challenge %q: %v", ch.text[0], err)
		}
		m := hmac.New(md5.New, []byte(alicePass))
		m.Write(challenge)
		rc.send(b64("alice "+hex.EncodeToString(m.Sum(nil))) + "\r\n")
	})
	login("LOGIN, no initial response", func(rc *rawClient) {
		rc.send("AUTH LOGIN\r\n")
		rc.expect(334)
		rc.send(b64("alice") + "\r\n")
		rc.expect(334)
		rc.send(b64(alicePass) + "\r\n")
	})
	login("PLAIN, authzid = authcid", func(rc *rawClient) {
		rc.send("AUTH PLAIN " + b64("alice\x00alice\x00"+alicePass) + "\r\n")
	})
	for _, mech := range []string{"PLAIN", "CRAM-MD5", "LOGIN"} {
		if !strings.Contains(r.logs.String(), "auth_user=alice mechanism="+mech) {
			t.Errorf("no authentication of alice by %s in the log", mech)
		}
	}
	noSecrets(t, r.logs.String())
}
