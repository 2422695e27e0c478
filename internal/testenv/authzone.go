package testenv

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"testing"
)

// AuthZone is fixture DNS in which mail from example.test authenticates:
// SPF allows 192.0.2.0/24, Key's public half is published at
// sel._domainkey.example.test, DMARC asks p=reject, and 192.0.2.1 is
// mx.example.test both ways.
type AuthZone struct {
	Zone string
	Key  ed25519.PrivateKey
}

// NewAuthZone makes a key and the zone text for it; extra, zone text
// starting with its own $ORIGIN, is appended.
func NewAuthZone(t testing.TB, extra string) AuthZone {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	zone := `
$TTL 300
$ORIGIN example.test.
@            IN SOA ns hostmaster 1 3600 600 86400 60
@            IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
mx           IN A   192.0.2.1
sel._domainkey IN TXT "v=DKIM1; k=ed25519; p=` + base64.StdEncoding.EncodeToString(pub) + `"
_dmarc       IN TXT "v=DMARC1; p=reject"
$ORIGIN 2.0.192.in-addr.arpa.
@            IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 60
1            IN PTR mx.example.test.
` + extra
	return AuthZone{Zone: zone, Key: key}
}
