package policy_test

import (
	"strings"
	"testing"

	"github.com/mailward/mailward/policy"
)

// With dmarc.enforce, a From that cannot be evaluated to one Author
// Domain is refused: mail readers still show the address, so accepting
// it would bypass the domain's p=reject.
func TestDMARCEnforceMalformedFrom(t *testing.T) {
	w := newWorld(t)
	e := w.engine(t, memoryCache(t))
	body := "To: bob@example.net\r\nSubject: wire\r\n\r\nPay now.\r\n"
	cases := map[string]struct{ from, reason string }{
		"well formed":       {"From: CEO <ceo@example.test>\r\n", "dmarc policy reject"},
		"second From":       {"From: CEO <ceo@example.test>\r\nFrom: x@example.org\r\n", "several From"},
		"trailing ;":        {"From: CEO <ceo@example.test>;\r\n", "unparsable"},
		"unclosed comment":  {"From: CEO <ceo@example.test> (\r\n", "unparsable"},
		"bad second domain": {"From: CEO <ceo@example.test>, x@exa!mple\r\n", "no valid domain"},
		"no From":           {"", "no From"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			v := send(t, e, "198.51.100.9", "someone@example.org", []string{"bob@example.net"}, tc.from+body).eom
			if v.Action != policy.Reject || v.Code != 550 || !strings.Contains(v.Reason, tc.reason) {
				t.Errorf("got %+v; want a 550 reject for %q", v, tc.reason)
			}
		})
	}
}
