package testenv

import (
	"bytes"
	"crypto"
	"os/exec"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
)

// Swaks sends one message with swaks to addr, as a real SMTP client would,
// and returns its transcript. args come after the defaults (HELO name,
// timeout), so they may override them.
func Swaks(t testing.TB, addr string, args ...string) (string, error) {
	t.Helper()
	bin := Require(t, "swaks")
	out, err := exec.Command(bin, append([]string{"--server", addr, "--helo", "client.test.example", "--timeout", "60"}, args...)...).CombinedOutput()
	return string(out), err
}

// SignDKIM signs msg for domain and selector with relaxed/relaxed
// canonicalization over the usual header fields, as most senders do.
func SignDKIM(t testing.TB, msg, domain, selector string, key crypto.Signer) string {
	t.Helper()
	var out bytes.Buffer
	err := dkim.Sign(&out, strings.NewReader(msg), &dkim.SignOptions{
		Domain: domain, Selector: selector, Signer: key,
		HeaderKeys:             []string{"From", "To", "Subject", "Message-ID"},
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
	})
	if err != nil {
		t.Fatalf("signing test message: %v", err)
	}
	return out.String()
}
