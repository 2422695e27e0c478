package deliver

import (
	"strings"
	"testing"
)

func TestPolicyDomainAsALabel(t *testing.T) {
	r := testReport()
	r.PolicyDomain = "Bücher.Example"
	p, err := newPayload(r, "mx.example.net")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(p.filename, "mx.example.net!xn--bcher-kva.example!") || !strings.Contains(p.subject, "Report Domain: xn--bcher-kva.example\r\n") {
		t.Errorf("filename %q, subject %q: want the A-label", p.filename, p.subject)
	}
}

func TestRUAKeepsSizeSuffixes(t *testing.T) {
	got := RUA("v=DMARC1; p=none; rua=mailto:a@example.com!10m, mailto:b@example.net ;ruf=mailto:f@example.com")
	if strings.Join(got, " ") != "mailto:a@example.com!10m mailto:b@example.net" {
		t.Errorf("RUA: %q", got)
	}
}

func TestParseURIBounds(t *testing.T) {
	for _, bad := range []string{"", "mailto:", "mailto:a@b", "mailto:a@[192.0.2.1]", "mailto:a%2Cb@example.com", "mailto:a@example.com!10x", "mailto:" + strings.Repeat("a", 3000) + "@example.com"} {
		if _, err := parseURI(bad); err == nil {
			t.Errorf("parseURI(%.40q) accepted", bad)
		}
	}
	u, err := parseURI("MAILTO:agg@Example.NET?subject=hi!2k")
	if err != nil || u.address != "agg@example.net" || u.domain != "example.net" || u.limit != 2048 {
		t.Errorf("parseURI: %+v, %v", u, err)
	}
}
