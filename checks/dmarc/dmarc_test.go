package dmarc_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/publicsuffix"

	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/dmarc"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/checks/spf"
	"github.com/mailward/mailward/internal/testenv"
)

// A root SOA makes every negative answer cacheable.
const soa = ". 300 IN SOA ns.invalid. hostmaster.invalid. 1 3600 600 86400 300\n"

func start(t testing.TB, zone string) (*dmarc.Checker, *testenv.DNSServer) {
	t.Helper()
	srv := testenv.StartDNS(t, soa+zone)
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 500 * time.Millisecond, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	return dmarc.New(r, dmarc.Options{}), srv
}

func rrTXT(name, text string) string { return name + ". 300 IN TXT \"" + text + "\"\n" }
func rrA(name string) string         { return name + ". 300 IN A 192.0.2.1\n" }

func spfPass(domain string) *spf.Result {
	return &spf.Result{Result: "pass", Domain: domain, Identity: "mailfrom"}
}

func spfFail(domain string) *spf.Result {
	return &spf.Result{Result: "fail", Domain: domain, Identity: "mailfrom"}
}

func dkimRes(result, domain string) dkim.Result {
	return dkim.Result{Result: result, Domain: domain, Selector: "s"}
}

func check(t testing.TB, c *dmarc.Checker, from string, s *spf.Result, d ...dkim.Result) *dmarc.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Check(ctx, []string{from}, s, d)
}

type expect struct {
	result, policy, domain, policyDomain, orgDomain string
	testing                                         bool
	reason                                          string
}

func verify(t *testing.T, got *dmarc.Result, want expect) {
	t.Helper()
	if got == nil {
		t.Fatal("nil result")
	}
	if got.Result != want.result || got.Policy != want.policy || got.Testing != want.testing ||
		want.domain != "" && got.Domain != want.domain ||
		want.policyDomain != "" && got.PolicyDomain != want.policyDomain ||
		want.orgDomain != "" && got.OrgDomain != want.orgDomain ||
		!strings.Contains(got.Reason, want.reason) {
		t.Errorf("got  %+v\nwant %+v", *got, want)
	}
}

func TestRecordAtAuthorDomain(t *testing.T) {
	c, srv := start(t, rrTXT("_dmarc.example.com", "v=DMARC1; p=reject; sp=none; rua=mailto:d@example.com")+rrA("example.com"))
	from := "Joe <joe@Example.COM>"
	verify(t, check(t, c, from, spfFail("example.com")),
		expect{result: "fail", policy: "reject", domain: "example.com", policyDomain: "example.com", orgDomain: "example.com", reason: "no aligned"})
	verify(t, check(t, c, from, spfFail("example.com"), dkimRes("pass", "example.com")),
		expect{result: "pass", policy: "reject", reason: "dkim pass for example.com"})
	verify(t, check(t, c, from, spfPass("example.com"), dkimRes("fail", "example.com")),
		expect{result: "pass", policy: "reject", reason: "spf pass"})
	// A pass for an unrelated domain is not enough.
	verify(t, check(t, c, from, spfPass("example.net"), dkimRes("pass", "example.net")),
		expect{result: "fail", policy: "reject", reason: "spf pass for example.net, dkim pass for example.net not aligned"})
	if n := srv.Queries("_dmarc.com", dns.TypeTXT); n != 1 {
		t.Errorf("_dmarc.com asked %d times, want once (cached after)", n)
	}
}

func TestRecordOnlyAtParent(t *testing.T) {
	c, _ := start(t, rrTXT("_dmarc.example.com", "v=DMARC1; p=reject; sp=quarantine")+rrA("mail.example.com"))
	verify(t, check(t, c, "joe@mail.example.com", nil),
		expect{result: "fail", policy: "quarantine", domain: "mail.example.com", policyDomain: "example.com", orgDomain: "example.com"})
	// Relaxed alignment: both names share the Organizational Domain.
	verify(t, check(t, c, "joe@mail.example.com", spfPass("bounce.example.com")),
		expect{result: "pass", policy: "quarantine", reason: "relaxed"})
	verify(t, check(t, c, "joe@mail.example.com", nil, dkimRes("pass", "example.com")),
		expect{result: "pass", policy: "quarantine"})
}

func TestPSDRecord(t *testing.T) {
	zone := rrTXT("_dmarc.example", "v=DMARC1; p=reject; psd=y") + rrA("mail.shop.example") + rrA("shop.example")
	c, srv := start(t, zone)
	verify(t, check(t, c, "joe@mail.shop.example", nil),
		expect{result: "fail", policy: "reject", policyDomain: "example", orgDomain: "shop.example"})
	verify(t, check(t, c, "joe@mail.shop.example", nil, dkimRes("pass", "shop.example")),
		expect{result: "pass", policy: "reject", orgDomain: "shop.example"})
	// Another registrant under the same PSD does not align.
	verify(t, check(t, c, "joe@mail.shop.example", spfPass("other.example"), dkimRes("pass", "mail.other.example")),
		expect{result: "fail", policy: "reject"})
	if n := srv.Queries("_dmarc.other.example", dns.TypeTXT); n != 0 {
		t.Errorf("walked other.example (%d queries) though it cannot share shop.example", n)
	}

	// The registrant's own record wins over the PSD's.
	c, _ = start(t, zone+rrTXT("_dmarc.shop.example", "v=DMARC1; p=none; sp=quarantine"))
	verify(t, check(t, c, "joe@mail.shop.example", nil),
		expect{result: "fail", policy: "quarantine", policyDomain: "shop.example", orgDomain: "shop.example"})
	verify(t, check(t, c, "joe@shop.example", nil),
		expect{result: "fail", policy: "none", policyDomain: "shop.example", orgDomain: "shop.example"})
}

func TestPSDNoAtIntermediateName(t *testing.T) {
	c, srv := start(t, rrTXT("_dmarc.corp.example.com", "v=DMARC1; p=quarantine; psd=n")+
		rrTXT("_dmarc.example.com", "v=DMARC1; p=reject")+rrA("a.b.corp.example.com"))
	verify(t, check(t, c, "joe@a.b.corp.example.com", nil, dkimRes("pass", "example.com")),
		expect{result: "fail", policy: "quarantine", policyDomain: "corp.example.com", orgDomain: "corp.example.com"})
	verify(t, check(t, c, "joe@a.b.corp.example.com", nil, dkimRes("pass", "x.corp.example.com")),
		expect{result: "pass", policy: "quarantine"})
	// The Author Domain's walk stopped at psd=n; only the DKIM domain's walk
	// went past it.
	for _, name := range []string{"_dmarc.a.b.corp.example.com", "_dmarc.b.corp.example.com", "_dmarc.corp.example.com"} {
		if n := srv.Queries(name, dns.TypeTXT); n != 1 {
			t.Errorf("%s asked %d times", name, n)
		}
	}
}

func TestDeepNameQueryLimit(t *testing.T) {
	author := "a.b.c.d.e.f.g.h.i.j.example.com"
	c, srv := start(t, rrTXT("_dmarc.example.com", "v=DMARC1; p=reject")+rrA(author))
	verify(t, check(t, c, "joe@"+author, nil),
		expect{result: "fail", policy: "reject", policyDomain: "example.com", orgDomain: "example.com"})
	labels := strings.Split(author, ".")
	total := 0
	asked := map[string]int{}
	for i := range labels {
		name := "_dmarc." + strings.Join(labels[i:], ".")
		n := srv.Queries(name, dns.TypeTXT)
		total += n
		asked[name] = n
	}
	if total > 8 {
		t.Errorf("%d _dmarc queries, more than 8: %v", total, asked)
	}
	for _, name := range []string{"_dmarc." + author, "_dmarc.g.h.i.j.example.com", "_dmarc.j.example.com", "_dmarc.example.com", "_dmarc.com"} {
		if asked[name] != 1 {
			t.Errorf("%s asked %d times, want 1", name, asked[name])
		}
	}
	if asked["_dmarc.b.c.d.e.f.g.h.i.j.example.com"] != 0 {
		t.Error("the walk did not jump to seven labels")
	}
}

func TestNonExistentSubdomain(t *testing.T) {
	c, _ := start(t, rrTXT("_dmarc.example.org", "v=DMARC1; p=none; sp=quarantine; np=reject")+rrA("exists.example.org")+
		rrTXT("_dmarc.example.net", "v=DMARC1; p=none; sp=quarantine"))
	verify(t, check(t, c, "joe@exists.example.org", nil), expect{result: "fail", policy: "quarantine", policyDomain: "example.org"})
	verify(t, check(t, c, "joe@nothere.example.org", nil), expect{result: "fail", policy: "reject", policyDomain: "example.org"})
	verify(t, check(t, c, "joe@deeper.nothere.example.org", nil), expect{result: "fail", policy: "reject"})
	verify(t, check(t, c, "joe@example.org", nil), expect{result: "fail", policy: "none", policyDomain: "example.org"})
	// Without np=, sp= covers non-existent subdomains too.
	verify(t, check(t, c, "joe@nothere.example.net", nil), expect{result: "fail", policy: "quarantine"})
}

func TestNonExistenceCheckFails(t *testing.T) {
	c, srv := start(t, rrTXT("_dmarc.example.org", "v=DMARC1; p=none; np=reject"))
	srv.ServFail("broken.example.org")
	verify(t, check(t, c, "joe@broken.example.org", nil), expect{result: "temperror", reason: "existence"})
}

func TestTesting(t *testing.T) {
	c, _ := start(t, rrTXT("_dmarc.r.example", "v=DMARC1; p=reject; t=y")+
		rrTXT("_dmarc.q.example", "v=DMARC1; p=quarantine; t=y")+
		rrTXT("_dmarc.n.example", "v=DMARC1; p=none; t=y")+
		rrTXT("_dmarc.pct0.example", "v=DMARC1; p=reject; pct=0")+
		rrTXT("_dmarc.pct50.example", "v=DMARC1; p=reject; pct=50")+
		rrTXT("_dmarc.tn.example", "v=DMARC1; p=reject; t=n")+
		rrTXT("_dmarc.sub.example", "v=DMARC1; p=none; sp=reject; t=y")+rrA("x.sub.example"))
	cases := []struct {
		domain, policy string
		testing        bool
	}{
		{"r.example", "quarantine", true},
		{"q.example", "none", true},
		{"n.example", "none", true},
		{"pct0.example", "quarantine", true},
		{"pct50.example", "reject", false},
		{"tn.example", "reject", false},
		{"x.sub.example", "quarantine", true},
	}
	for _, tc := range cases {
		verify(t, check(t, c, "joe@"+tc.domain, nil), expect{result: "fail", policy: tc.policy, testing: tc.testing})
	}
}

func TestRecordSyntax(t *testing.T) {
	zone := rrTXT("_dmarc.unknown.example", "v=DMARC1; p=reject; future=yes; adkim=x; aspf=bogus") +
		rrTXT("_dmarc.norua.example", "v=DMARC1; adkim=s") +
		rrTXT("_dmarc.rua.example", "v=DMARC1; rua=mailto:d@rua.example") +
		rrTXT("_dmarc.badp.example", "v=DMARC1; p=bogus") +
		rrTXT("_dmarc.badprua.example", "v=DMARC1; p=bogus; rua=mailto:d@badprua.example!10m") +
		rrTXT("_dmarc.badsp.example", "v=DMARC1; p=reject; sp=maybe") +
		rrTXT("_dmarc.badnp.example", "v=DMARC1; p=reject; np=maybe; rua=mailto:a@b.example") +
		rrTXT("_dmarc.badrua.example", "v=DMARC1; p=bogus; rua=not a uri") +
		rrTXT("_dmarc.lower.example", "v=dmarc1; p=reject") +
		rrTXT("_dmarc.notfirst.example", "p=reject; v=DMARC1") +
		rrTXT("_dmarc.spaces.example", "v = DMARC1 ;p = reject ; adkim = s")
	c, _ := start(t, zone)
	cases := []struct {
		domain, result, policy, reason string
	}{
		{"unknown.example", "fail", "reject", ""},
		{"norua.example", "none", "", "no valid policy"},
		{"rua.example", "fail", "none", ""},
		{"badp.example", "none", "", "no valid policy"},
		{"badprua.example", "fail", "none", ""},
		{"badsp.example", "none", "", "no valid policy"},
		{"badnp.example", "fail", "none", ""},
		{"badrua.example", "none", "", "no valid policy"},
		{"lower.example", "none", "", "no DMARC record"},
		{"notfirst.example", "none", "", "no DMARC record"},
		{"spaces.example", "fail", "reject", ""},
	}
	for _, tc := range cases {
		verify(t, check(t, c, "joe@"+tc.domain, nil), expect{result: tc.result, policy: tc.policy, reason: tc.reason})
	}
	// adkim=x falls back to relaxed; adkim = s (spaced) is strict.
	verify(t, check(t, c, "joe@unknown.example", nil, dkimRes("pass", "mail.unknown.example")), expect{result: "pass", policy: "reject"})
	verify(t, check(t, c, "joe@mail.spaces.example", nil, dkimRes("pass", "spaces.example")), expect{result: "fail", policy: "reject"})
}

func TestSeveralRecords(t *testing.T) {
	c, _ := start(t, rrTXT("_dmarc.two.example", "v=DMARC1; p=reject")+rrTXT("_dmarc.two.example", "v=DMARC1; p=none")+
		rrTXT("_dmarc.one.example", "v=DMARC1; p=reject")+rrTXT("_dmarc.one.example", "something else")+
		rrTXT("_dmarc.sub.parent.example", "v=DMARC1; p=none")+rrTXT("_dmarc.sub.parent.example", "v=DMARC1; p=quarantine")+
		rrTXT("_dmarc.parent.example", "v=DMARC1; p=none; sp=reject"))
	verify(t, check(t, c, "joe@two.example", nil), expect{result: "none", reason: "several records ignored at _dmarc.two.example"})
	verify(t, check(t, c, "joe@one.example", nil), expect{result: "fail", policy: "reject"})
	// Discarded at the Author Domain: the parent's record applies.
	verify(t, check(t, c, "joe@sub.parent.example", nil), expect{result: "fail", policy: "reject", policyDomain: "parent.example"})
}

func TestServFailMidWalk(t *testing.T) {
	zone := rrTXT("_dmarc.example.com", "v=DMARC1; p=reject") + rrA("a.b.example.com") +
		rrTXT("_dmarc.mail.example.com", "v=DMARC1; p=none")
	c, srv := start(t, zone)
	srv.ServFail("_dmarc.b.example.com")
	res := check(t, c, "joe@a.b.example.com", spfPass("a.b.example.com"), dkimRes("pass", "example.com"))
	verify(t, res, expect{result: "temperror", policy: "", reason: "server failure"})
	if res.PolicyDomain != "" {
		t.Errorf("policy domain %q taken past a failed query", res.PolicyDomain)
	}
	if n := srv.Queries("_dmarc.example.com", dns.TypeTXT); n != 0 {
		t.Errorf("walked past the failure: _dmarc.example.com asked %d times", n)
	}

	// A record at the Author Domain gives the policy, but relaxed alignment
	// needs the rest of the walk.
	srv.Reset("_dmarc.b.example.com")
	srv.ServFail("_dmarc.example.com")
	verify(t, check(t, c, "joe@mail.example.com", nil, dkimRes("pass", "example.com")),
		expect{result: "temperror", policy: "none", policyDomain: "mail.example.com", reason: "cannot tell whether dkim domain example.com aligns"})
	// An identical identifier needs no walk.
	verify(t, check(t, c, "joe@mail.example.com", nil, dkimRes("pass", "mail.example.com")),
		expect{result: "pass", policy: "none"})
	// With no passing identifier at all the failure is certain.
	verify(t, check(t, c, "joe@mail.example.com", spfFail("mail.example.com")),
		expect{result: "fail", policy: "none"})

	srv.ServFail("_dmarc.other.example.com")
	verify(t, check(t, c, "joe@other.example.com", nil, dkimRes("pass", "other.example.com")),
		expect{result: "temperror", reason: "server failure"})
}

func TestTimeoutIsTemperror(t *testing.T) {
	c, srv := start(t, rrTXT("_dmarc.example.com", "v=DMARC1; p=reject"))
	srv.Drop("_dmarc.example.com")
	verify(t, check(t, c, "joe@example.com", spfPass("example.com")), expect{result: "temperror", reason: "timed out"})
}

func TestAuthenticatorTemperror(t *testing.T) {
	c, _ := start(t, rrTXT("_dmarc.example.com", "v=DMARC1; p=reject"))
	verify(t, check(t, c, "joe@example.com", spfPass("example.net"), dkimRes("temperror", "example.com")),
		expect{result: "temperror", policy: "reject", reason: "dkim temperror for aligned domain example.com"})
	verify(t, check(t, c, "joe@example.com", &spf.Result{Result: "temperror", Domain: "example.com", Identity: "mailfrom"}),
		expect{result: "temperror", policy: "reject", reason: "spf temperror"})
	// An aligned pass settles it.
	verify(t, check(t, c, "joe@example.com", spfPass("example.com"), dkimRes("temperror", "example.com")),
		expect{result: "pass", policy: "reject"})
	// A temperror for a domain that cannot align changes nothing.
	verify(t, check(t, c, "joe@example.com", nil, dkimRes("temperror", "example.net")),
		expect{result: "fail", policy: "reject"})
}

func TestStrictAlignment(t *testing.T) {
	c, _ := start(t, rrTXT("_dmarc.example.com", "v=DMARC1; p=reject; adkim=s; aspf=s")+rrA("mail.example.com"))
	verify(t, check(t, c, "joe@mail.example.com", spfPass("example.com"), dkimRes("pass", "example.com")),
		expect{result: "fail", policy: "reject"})
	verify(t, check(t, c, "joe@mail.example.com", spfPass("MAIL.example.com.")),
		expect{result: "pass", policy: "reject", reason: "strict"})
	verify(t, check(t, c, "joe@mail.example.com", nil, dkimRes("pass", "mail.EXAMPLE.com")),
		expect{result: "pass", policy: "reject"})
}

func TestHeloIdentityIgnored(t *testing.T) {
	c, _ := start(t, rrTXT("_dmarc.example.com", "v=DMARC1; p=reject"))
	verify(t, check(t, c, "joe@example.com", &spf.Result{Result: "pass", Domain: "example.com", Identity: "helo"}),
		expect{result: "fail", policy: "reject"})
}

// The tree walk and the Public Suffix List disagree; RFC 9989 follows the DNS.
func TestTreeWalkNotPSL(t *testing.T) {
	zone := rrTXT("_dmarc.github.io", "v=DMARC1; p=reject") + rrA("alice.github.io") +
		rrTXT("_dmarc.bank.example", "v=DMARC1; p=reject; psd=y") +
		rrTXT("_dmarc.giant.bank.example", "v=DMARC1; p=quarantine") + rrA("mail.giant.bank.example")
	c, _ := start(t, zone)

	// github.io is a private suffix on the PSL, but DNS publishes an
	// ordinary record there: the two users share an Organizational Domain.
	if a, b := pslOrg(t, "alice.github.io"), pslOrg(t, "bob.github.io"); a == b {
		t.Fatalf("PSL says %s for both: this case shows nothing", a)
	}
	verify(t, check(t, c, "alice@alice.github.io", nil, dkimRes("pass", "bob.github.io")),
		expect{result: "pass", policy: "reject", policyDomain: "github.io", orgDomain: "github.io"})

	// bank.example is not on the PSL, but DNS says it is a PSD (RFC 9989
	// B.4.3): its registrants do not share an Organizational Domain.
	if a, b := pslOrg(t, "giant.bank.example"), pslOrg(t, "mail.mega.bank.example"); a != b {
		t.Fatalf("PSL tells them apart (%s, %s): this case shows nothing", a, b)
	}
	verify(t, check(t, c, "ceo@giant.bank.example", nil, dkimRes("pass", "mail.mega.bank.example")),
		expect{result: "fail", policy: "quarantine", policyDomain: "giant.bank.example", orgDomain: "giant.bank.example"})
	verify(t, check(t, c, "ceo@giant.bank.example", spfPass("mail.giant.bank.example"), dkimRes("pass", "mail.mega.bank.example")),
		expect{result: "pass", policy: "quarantine"})
}

func pslOrg(t *testing.T, name string) string {
	t.Helper()
	org, err := publicsuffix.EffectiveTLDPlusOne(name)
	if err != nil {
		t.Fatal(err)
	}
	return org
}

func TestFromHandling(t *testing.T) {
	c, _ := start(t, rrTXT("_dmarc.example.com", "v=DMARC1; p=reject")+
		rrTXT("_dmarc.example.org", "v=DMARC1; p=quarantine")+
		rrTXT("_dmarc.xn--bcher-kva.example", "v=DMARC1; p=reject"))
	ctx := context.Background()
	cases := []struct {
		name   string
		from   []string
		result string
		domain string
		policy string
		reason string
	}{
		{"no From", nil, "permerror", "", "", "no From header"},
		{"two From", []string{"joe@example.com", "joe@example.com"}, "permerror", "", "", "several From headers"},
		{"unparsable", []string{"Joe <joe@example.com"}, "permerror", "", "", "unparsable"},
		{"address in display name", []string{"ceo@example.org <joe@example.net>"}, "permerror", "", "", "unparsable"},
		{"two at signs", []string{"joe@example.net@example.com"}, "permerror", "", "", "unparsable"},
		{"empty group", []string{"undisclosed-recipients:;"}, "permerror", "", "", "no address"},
		{"no domain", []string{"joe"}, "permerror", "", "", "no address"},
		{"bad domain", []string{"joe@exa!mple.com"}, "permerror", "", "", "no valid domain"},
		{"group", []string{"Team: joe@example.com, ann@EXAMPLE.com;"}, "fail", "example.com", "reject", ""},
		{"folded with comments", []string{"\"Joe, Jr.\" (work)\r\n <joe(x)@(y)example.com>"}, "fail", "example.com", "reject", ""},
		{"quoted at sign", []string{"\"joe@example.net\"@example.com"}, "fail", "example.com", "reject", ""},
		{"route", []string{"<@relay.example.net:joe@example.com>"}, "fail", "example.com", "reject", ""},
		{"U-label", []string{"joe@Bücher.example"}, "fail", "xn--bcher-kva.example", "reject", ""},
		{"literal", []string{"joe@[192.0.2.1]"}, "none", "[192.0.2.1]", "", "address literal"},
		{"same domain twice", []string{"joe@example.com, ann@example.com"}, "fail", "example.com", "reject", ""},
		{"two domains, strictest failure", []string{"joe@example.org, ann@example.com"}, "fail", "example.com", "reject", "2 author domains"},
		{"two domains in a group", []string{"G: joe@example.org, ann@example.net;"}, "fail", "example.org", "quarantine", "2 author domains"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := c.Check(ctx, tc.from, nil, nil)
			verify(t, res, expect{result: tc.result, domain: tc.domain, policy: tc.policy, reason: tc.reason})
		})
	}
	t.Run("two domains, one passing", func(t *testing.T) {
		res := c.Check(ctx, []string{"joe@example.org, ann@example.com"}, nil, []dkim.Result{dkimRes("pass", "example.org")})
		verify(t, res, expect{result: "fail", domain: "example.com", policy: "reject"})
		res = c.Check(ctx, []string{"joe@example.org, ann@example.com"}, nil,
			[]dkim.Result{dkimRes("pass", "example.org"), dkimRes("pass", "example.com")})
		verify(t, res, expect{result: "pass", policy: "quarantine"})
	})
	t.Run("too many domains", func(t *testing.T) {
		one := dmarc.New(nil, dmarc.Options{MaxAuthorDomains: 1})
		verify(t, one.Check(ctx, []string{"joe@example.org, ann@example.com"}, nil, nil),
			expect{result: "permerror", reason: "more than 1"})
	})
}

func TestOrgDomain(t *testing.T) {
	srv := testenv.StartDNS(t, soa+rrTXT("_dmarc.example.com", "v=DMARC1; p=none")+
		rrTXT("_dmarc.bank.example", "v=DMARC1; p=none; psd=y")+rrTXT("_dmarc.broken.example", "v=DMARC1; p=none"))
	srv.ServFail("_dmarc.x.broken.example")
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cases := []struct{ in, want, err string }{
		{"a.b.Example.COM.", "example.com", ""},
		{"x.y.giant.bank.example", "giant.bank.example", ""},
		{"bank.example", "bank.example", ""},
		// No record anywhere: the Public Suffix List's answer.
		{"www.shop.example.net", "example.net", ""},
		{"alice.github.io", "alice.github.io", ""},
		// A failed walk gives the PSL's answer and the error.
		{"a.x.broken.example", "broken.example", "server failure"},
		{"not a name", "", "not a domain name"},
	}
	for _, tc := range cases {
		got, err := dmarc.OrgDomain(ctx, r, tc.in)
		if got != tc.want || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("OrgDomain(%q) = %q, %v; want %q, %q", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestOneWalkPerTTL(t *testing.T) {
	c, srv := start(t, rrTXT("_dmarc.example.com", "v=DMARC1; p=reject")+rrA("mail.example.com"))
	for range 5 {
		verify(t, check(t, c, "joe@mail.example.com", spfPass("bounce.example.com")), expect{result: "pass", policy: "reject"})
	}
	for _, name := range []string{"_dmarc.mail.example.com", "_dmarc.bounce.example.com", "_dmarc.example.com", "_dmarc.com"} {
		if n := srv.Queries(name, dns.TypeTXT); n != 1 {
			t.Errorf("%s asked %d times over 5 messages", name, n)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	if (dmarc.Options{MaxAuthorDomains: -1}).Validate() == nil {
		t.Error("negative max_author_domains validated")
	}
	if err := (dmarc.Options{MaxAuthorDomains: 3}).Validate(); err != nil {
		t.Error(err)
	}
}

func BenchmarkCheckWarm(b *testing.B) {
	c, _ := start(b, rrTXT("_dmarc.example.com", "v=DMARC1; p=reject; rua=mailto:d@example.com")+rrA("mail.example.com"))
	ctx := context.Background()
	from := []string{"\"Joe Example\" <joe@mail.example.com>"}
	s := spfPass("bounce.example.com")
	d := []dkim.Result{dkimRes("pass", "esp.example.net"), dkimRes("pass", "example.com")}
	if r := c.Check(ctx, from, s, d); r.Result != "pass" {
		b.Fatalf("%+v", r)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if r := c.Check(ctx, from, s, d); r.Result != "pass" {
			b.Fatalf("%+v", r)
		}
	}
}

// A From domain is at most 253 octets; a longer one is refused while it
// is read, and building it costs no more than reading it.
func TestLongFromDomain(t *testing.T) {
	long := strings.Repeat("a.", 127) + "example" // 261 octets
	if _, err := dmarc.AuthorDomains([]string{"joe@" + long}); err == nil || !strings.Contains(err.Error(), "longer than 253") {
		t.Errorf("a %d-octet domain: %v", len(long), err)
	}
	ok := strings.Repeat("a.", 120) + "example" // 247 octets
	if d, err := dmarc.AuthorDomains([]string{"joe@" + ok}); err != nil || d[0] != ok {
		t.Errorf("a %d-octet domain: %v %v", len(ok), d, err)
	}
	// 100 KB of labels: built by concatenation this took one allocation
	// (and one copy of the whole) per label.
	huge := []string{"joe@" + strings.Repeat("a.", 50_000) + "example"}
	allocs := testing.AllocsPerRun(2, func() { dmarc.AuthorDomains(huge) })
	t.Logf("%.0f allocations", allocs)
	if allocs > 1000 {
		t.Errorf("%.0f allocations for a huge domain", allocs)
	}
}

// TestAlignmentOfEach: aggregate reports say for SPF and DKIM each
// whether it gave an aligned pass, so evaluation looks at both even
// after the first pass; and the record found comes with the result.
func TestAlignmentOfEach(t *testing.T) {
	c, _ := start(t, rrTXT("_dmarc.example.com", "v=DMARC1; p=reject; rua=mailto:d@example.com!10m"))
	for _, tc := range []struct {
		name       string
		spf        *spf.Result
		dkim       []dkim.Result
		spfA, dkA  bool
		wantResult string
	}{
		{"both", spfPass("example.com"), []dkim.Result{dkimRes("pass", "example.com")}, true, true, "pass"},
		{"spf only", spfPass("example.com"), []dkim.Result{dkimRes("pass", "other.example")}, true, false, "pass"},
		{"dkim only", spfFail("example.com"), []dkim.Result{dkimRes("fail", "example.com"), dkimRes("pass", "example.com")}, false, true, "pass"},
		{"neither", spfFail("example.com"), nil, false, false, "fail"},
	} {
		got := check(t, c, "a@example.com", tc.spf, tc.dkim...)
		if got.Result != tc.wantResult || got.SPFAligned != tc.spfA || got.DKIMAligned != tc.dkA {
			t.Errorf("%s: %s spf_aligned=%v dkim_aligned=%v; want %s %v %v", tc.name, got.Result, got.SPFAligned, got.DKIMAligned, tc.wantResult, tc.spfA, tc.dkA)
		}
		if got.Record == nil || got.Record.Text != "v=DMARC1; p=reject; rua=mailto:d@example.com!10m" {
			t.Errorf("%s: record %+v", tc.name, got.Record)
		}
	}
}
