package dmarc_test

import (
	"strings"
	"testing"

	"github.com/mailward/mailward/checks/dmarc"
)

func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{
		"v=DMARC1; p=reject; sp=none; np=quarantine; adkim=s; aspf=r; psd=n; t=y; rua=mailto:a@b.example!10m, https://r.example/x; ruf=mailto:f@b.example; fo=1:d",
		"v=DMARC1",
		"v = DMARC1 ; p = none ;",
		"v=DMARC1; pct=0; p=quarantine",
		"v=DMARC1; p=; rua=,,",
		"V=DMARC1;p=reject;p=none",
		"p=reject; v=DMARC1",
		"v=DMARC1;\x00=\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rec, err := dmarc.ParseRecord(s)
		if err != nil {
			if rec != nil {
				t.Fatal("record returned with an error")
			}
			return
		}
		if !strings.HasPrefix(strings.TrimLeft(s, " \t"), "v") && !strings.HasPrefix(strings.TrimLeft(s, " \t"), "V") {
			t.Fatalf("accepted %q, which does not start with v=", s)
		}
		if rec.ADKIM != "r" && rec.ADKIM != "s" || rec.ASPF != "r" && rec.ASPF != "s" {
			t.Fatalf("alignment modes %q %q", rec.ADKIM, rec.ASPF)
		}
		if rec.PSD != "y" && rec.PSD != "n" && rec.PSD != "u" {
			t.Fatalf("psd %q", rec.PSD)
		}
		for _, u := range append(rec.RUA, rec.RUF...) {
			if u == "" || strings.ContainsAny(u, " ,;") {
				t.Fatalf("bad URI kept: %q", u)
			}
		}
		p, sp, np, ok := rec.Policies()
		if ok {
			for _, v := range []string{p, sp, np} {
				if v != "none" && v != "quarantine" && v != "reject" {
					t.Fatalf("policy %q from %q", v, s)
				}
			}
		} else if len(rec.RUA) > 0 {
			t.Fatal("a record with a valid rua= was dropped")
		}
	})
}

func FuzzAuthorDomains(f *testing.F) {
	for _, s := range []string{
		"Joe <joe@example.com>",
		"\"Joe, Jr.\" (work) <joe(x)@(y)example.com>, ann@Example.ORG.",
		"Team: a@x.example, b@y.example;, c@z.example",
		"<@relay.example,@r2.example:joe@example.com>",
		"joe@[192.0.2.1]",
		"joe@bücher.example",
		"undisclosed-recipients:;",
		"\"unterminated",
		"a@b@c",
		"((nested) comment) joe@example.com",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		domains, err := dmarc.AuthorDomains([]string{s})
		if err != nil {
			if domains != nil {
				t.Fatal("domains returned with an error")
			}
			return
		}
		if len(domains) == 0 {
			t.Fatal("no domain and no error")
		}
		seen := map[string]bool{}
		for _, d := range domains {
			if seen[d] {
				t.Fatalf("%q listed twice", d)
			}
			seen[d] = true
			if strings.HasPrefix(d, "[") {
				continue
			}
			if d != strings.ToLower(d) || strings.HasSuffix(d, ".") || d == "" || strings.ContainsAny(d, " @<>,;:\"()") {
				t.Fatalf("domain %q from %q is not normalized", d, s)
			}
		}
	})
}
