package testenv

import (
	"strings"
	"testing"
)

// OtherResults is an Authentication-Results field of another server,
// which removing forged ones must leave alone.
const OtherResults = "Authentication-Results: other.example; spf=pass smtp.mailfrom=sender.example"

// ForgedResults are Authentication-Results fields claiming authservID,
// spelt the plain way and in the ways a naive match misses (a quoted id
// with quoted-pairs, white space before the colon, a comment, another
// case). Each claims a DKIM pass for header.d=forgedN.test.
func ForgedResults(authservID string) []string {
	quotedPairs := strings.Replace(authservID, ".", `\.`, 1)
	quotedPairs = quotedPairs[:len(quotedPairs)-1] + `\` + quotedPairs[len(quotedPairs)-1:]
	return []string{
		"Authentication-Results: " + authservID + "; dkim=pass header.d=forged1.test; dmarc=pass header.from=forged1.test",
		`Authentication-Results: "` + authservID + `"; dkim=pass header.d=forged2.test`,
		`Authentication-Results: "` + quotedPairs + `"; dkim=pass header.d=forged3.test`,
		"Authentication-Results : " + authservID + "; dkim=pass header.d=forged4.test",
		"Authentication-Results\t:(comment)" + strings.ToUpper(authservID) + "; dkim=pass header.d=forged5.test",
	}
}

// CheckResults fails t unless the delivered header block h holds none
// of the claims ForgedResults makes, still holds OtherResults, and, if
// ours, an Authentication-Results field of authservID's own.
func CheckResults(t testing.TB, h, authservID string, ours bool) {
	t.Helper()
	if strings.Contains(h, "header.d=forged") {
		t.Errorf("a forged Authentication-Results claiming %s was delivered:\n%s", authservID, h)
	}
	if !strings.Contains(h, OtherResults) {
		t.Errorf("another server's Authentication-Results was removed:\n%s", h)
	}
	if ours && !strings.Contains(h, "Authentication-Results: "+authservID+";") {
		t.Errorf("no Authentication-Results of ours (%s):\n%s", authservID, h)
	}
}
