package spf

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/internal/testenv"
)

const zone = `
$ORIGIN example.test.
$TTL 300
@            IN SOA ns hostmaster 1 3600 600 86400 60
@            IN TXT "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 include:_spf.partner.test -all"
@            IN TXT "google-site-verification=abc"
@            IN MX  10 mx
@            IN A   198.51.100.1
mx           IN A   198.51.100.10
mx           IN AAAA 2001:db8:1::10
mail         IN A   198.51.100.20
mail         IN TXT "v=spf1 a mx ~all"
mail         IN MX  10 mx
soft         IN TXT "v=spf1 ?ip4:203.0.113.5 ~all"
loop1        IN TXT "v=spf1 include:loop2.example.test -all"
loop2        IN TXT "v=spf1 include:loop1.example.test -all"
redir        IN TXT "v=spf1 exp=nope.example.test redirect=target.example.test"
target       IN TXT "v=spf1 ip4:192.0.2.99 -all exp=why.example.test"
why          IN TXT "%{i} may not send for %{d} (" "sender %{s}, helo %{h}, checked by %{r} at %{t})"
voids        IN TXT "v=spf1 a:n1.example.test a:n2.example.test a:n3.example.test +all"
twovoids     IN TXT "v=spf1 a:n1.example.test a:n2.example.test +all"
eleven       IN TXT "v=spf1 a:x.example.test a:x.example.test a:x.example.test a:x.example.test a:x.example.test a:x.example.test a:x.example.test a:x.example.test a:x.example.test a:x.example.test a:x.example.test +all"
ten          IN TXT "v=spf1 a:x.example.test a:x.example.test a:x.example.test a:x.example.test a:x.example.test a:x.example.test a:x.example.test a:x.example.test a:x.example.test a:x.example.test +all"
x            IN A   203.0.113.200
macro        IN TXT "v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d} -all"
1.2.0.192.jane._spf.macro IN A 127.0.0.2
broken       IN TXT "v=spf1 ip4:192.0.2.1 -all" 
broken       IN TXT "v=spf1 +all"
syntax       IN TXT "v=spf1 ip4:192.0.2.1 -al"
servfail     IN TXT "v=spf1 include:sf.example.test -all"
sf           IN TXT "v=spf1 +all"
helo-host    IN A   192.0.2.77
helo-host    IN TXT "v=spf1 a -all"
ptrrec       IN TXT "v=spf1 ptr:example.test -all"
host7        IN A   192.0.2.7
$ORIGIN _spf.partner.test.
@            IN TXT "v=spf1 ip4:203.0.113.0/24 -all"
`

const reverseZone = `
$ORIGIN 2.0.192.in-addr.arpa.
7   IN PTR host7.example.test.
8   IN PTR host7.example.test.
`

func start(t testing.TB) (*testenv.DNSServer, *Checker) {
	t.Helper()
	srv := testenv.StartDNS(t, zone+reverseZone)
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 300 * time.Millisecond, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1700000000, 0)
	return srv, New(r, Options{Hostname: "mx.receiver.test", Now: func() time.Time { return now }})
}

func TestCheckMailFrom(t *testing.T) {
	_, c := start(t)
	ctx := context.Background()
	cases := []struct {
		ip, helo, sender string
		want             string
		domain           string
	}{
		{"192.0.2.10", "x.example.test", "alice@example.test", "pass", "example.test"},
		{"2001:db8::5", "x.example.test", "alice@example.test", "pass", "example.test"},
		{"::ffff:192.0.2.10", "x.example.test", "alice@example.test", "pass", "example.test"}, // mapped is IPv4
		{"203.0.113.9", "x.example.test", "alice@example.test", "pass", "example.test"},       // through include
		{"198.51.100.50", "x.example.test", "alice@EXAMPLE.test", "fail", "example.test"},
		{"198.51.100.20", "x", "bob@mail.example.test", "pass", "mail.example.test"}, // a
		{"198.51.100.10", "x", "bob@mail.example.test", "pass", "mail.example.test"}, // mx: 10 is not mail's
		{"198.51.100.11", "x", "bob@mail.example.test", "softfail", "mail.example.test"},
		{"203.0.113.5", "x", "<c@soft.example.test>", "neutral", "soft.example.test"},
		{"192.0.2.1", "x", "c@nowhere.example.test", "none", "nowhere.example.test"},
		{"192.0.2.1", "x", "c@localhost", "none", "localhost"},
		{"192.0.2.1", "x", "c@[192.0.2.1]", "none", "[192.0.2.1]"},
		{"192.0.2.1", "x", "c@loop1.example.test", "permerror", "loop1.example.test"},
		{"192.0.2.1", "x", "c@broken.example.test", "permerror", "broken.example.test"},
		{"192.0.2.1", "x", "c@syntax.example.test", "permerror", "syntax.example.test"},
		{"192.0.2.1", "x", "c@voids.example.test", "permerror", "voids.example.test"},
		{"192.0.2.1", "x", "c@twovoids.example.test", "pass", "twovoids.example.test"},
		{"192.0.2.1", "x", "c@eleven.example.test", "permerror", "eleven.example.test"},
		{"192.0.2.1", "x", "c@ten.example.test", "pass", "ten.example.test"},
		{"192.0.2.1", "x", "jane+spam@macro.example.test", "pass", "macro.example.test"},
		{"192.0.2.1", "x", "john@macro.example.test", "fail", "macro.example.test"},
		{"192.0.2.7", "x", "c@ptrrec.example.test", "pass", "ptrrec.example.test"},
		{"192.0.2.8", "x", "c@ptrrec.example.test", "fail", "ptrrec.example.test"}, // PTR does not confirm
		// The null sender is postmaster@helo.
		{"192.0.2.77", "helo-host.example.test", "", "pass", "helo-host.example.test"},
		{"192.0.2.78", "helo-host.example.test", "<>", "fail", "helo-host.example.test"},
	}
	for _, tc := range cases {
		res := c.CheckMailFrom(ctx, netip.MustParseAddr(tc.ip), tc.helo, tc.sender)
		if res.Result != tc.want || res.Domain != tc.domain || res.Identity != "mailfrom" {
			t.Errorf("%s from %s: %+v, want %s for %s", tc.sender, tc.ip, res, tc.want, tc.domain)
		}
		if res.Reason == "" {
			t.Errorf("%s from %s: no reason", tc.sender, tc.ip)
		}
	}
}

func TestCheckHelo(t *testing.T) {
	_, c := start(t)
	ctx := context.Background()
	res := c.CheckHelo(ctx, netip.MustParseAddr("192.0.2.77"), "helo-host.example.test")
	if res.Result != "pass" || res.Identity != "helo" || res.Domain != "helo-host.example.test" {
		t.Errorf("helo pass: %+v", res)
	}
	res = c.CheckHelo(ctx, netip.MustParseAddr("192.0.2.1"), "helo-host.example.test")
	if res.Result != "fail" {
		t.Errorf("helo fail: %+v", res)
	}
	for _, bad := range []string{"", "localhost", "[192.0.2.1]", "a..b.test", "JUMPIN' JUPITER"} {
		if res := c.CheckHelo(ctx, netip.MustParseAddr("192.0.2.1"), bad); res.Result != "none" {
			t.Errorf("helo %q: %+v, want none", bad, res)
		}
	}
	if res := c.CheckHelo(ctx, netip.Addr{}, "helo-host.example.test"); res.Result != "permerror" {
		t.Errorf("no IP: %+v", res)
	}
}

func TestExplanation(t *testing.T) {
	_, c := start(t)
	res := c.CheckMailFrom(context.Background(), netip.MustParseAddr("192.0.2.1"), "mta.client.test", "eve@redir.example.test")
	if res.Result != "fail" {
		t.Fatalf("%+v", res)
	}
	// The redirect target's exp= applies (RFC 7208 section 6.2), with the
	// target as %{d}, and c/r/t allowed in the text.
	want := "192.0.2.1 may not send for target.example.test (sender eve@redir.example.test, helo mta.client.test, checked by mx.receiver.test at 1700000000)"
	if res.Explanation != want {
		t.Errorf("explanation\n got %q\nwant %q", res.Explanation, want)
	}
	// Explanations only come with fail.
	res = c.CheckMailFrom(context.Background(), netip.MustParseAddr("192.0.2.99"), "x", "eve@redir.example.test")
	if res.Result != "pass" || res.Explanation != "" {
		t.Errorf("pass: %+v", res)
	}
}

func TestDNSTroubleIsTemperror(t *testing.T) {
	srv, c := start(t)
	ctx := context.Background()
	ip := netip.MustParseAddr("192.0.2.1")

	srv.ServFail("sf.example.test")
	if res := c.CheckMailFrom(ctx, ip, "x", "a@servfail.example.test"); res.Result != "temperror" {
		t.Errorf("include SERVFAIL: %+v", res)
	}
	srv.Drop("example.test")
	if res := c.CheckMailFrom(ctx, ip, "x", "a@example.test"); res.Result != "temperror" {
		t.Errorf("timeout: %+v", res)
	}
	srv.Reset("example.test")
	srv.Refuse("mail.example.test")
	if res := c.CheckMailFrom(ctx, ip, "x", "a@mail.example.test"); res.Result != "temperror" {
		t.Errorf("refused: %+v", res)
	}
	srv.Reset("mail.example.test")
	srv.ServFail("mx.example.test") // the mx mechanism's address look-up
	if res := c.CheckMailFrom(ctx, netip.MustParseAddr("198.51.100.99"), "x", "a@mail.example.test"); res.Result != "temperror" {
		t.Errorf("MX host SERVFAIL: %+v", res)
	}
}

func TestOverallTimeout(t *testing.T) {
	srv := testenv.StartDNS(t, zone)
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c := New(r, Options{Timeout: 150 * time.Millisecond})
	srv.Delay("mail.example.test", time.Second)
	begin := time.Now()
	res := c.CheckMailFrom(context.Background(), netip.MustParseAddr("192.0.2.1"), "x", "a@mail.example.test")
	if res.Result != "temperror" {
		t.Errorf("%+v", res)
	}
	if d := time.Since(begin); d > 900*time.Millisecond {
		t.Errorf("took %v with a 150ms limit", d)
	}
}

func TestVoidLookupLimitOption(t *testing.T) {
	srv := testenv.StartDNS(t, zone)
	r, _ := resolver.New(resolver.Config{Servers: []string{srv.Addr()}})
	ip := netip.MustParseAddr("192.0.2.1")
	if res := New(r, Options{VoidLookupLimit: -1}).CheckMailFrom(context.Background(), ip, "x", "a@voids.example.test"); res.Result != "pass" {
		t.Errorf("no limit: %+v", res)
	}
	if res := New(r, Options{VoidLookupLimit: 1}).CheckMailFrom(context.Background(), ip, "x", "a@twovoids.example.test"); res.Result != "permerror" {
		t.Errorf("limit 1: %+v", res)
	}
}

// The examples of RFC 7208 section 7.4.
func TestMacroExamples(t *testing.T) {
	v4 := newEval(&Checker{opts: Options{Hostname: "r", Now: time.Now}}, netip.MustParseAddr("192.0.2.3"), "helo.test", "strong-bad", "email.example.com")
	v6 := newEval(&Checker{opts: Options{Hostname: "r", Now: time.Now}}, netip.MustParseAddr("2001:db8::cb01"), "helo.test", "strong-bad", "email.example.com")
	cases := []struct {
		e    *eval
		in   string
		want string
	}{
		{v4, "%{s}", "strong-bad@email.example.com"},
		{v4, "%{o}", "email.example.com"},
		{v4, "%{d}", "email.example.com"},
		{v4, "%{d4}", "email.example.com"},
		{v4, "%{d3}", "email.example.com"},
		{v4, "%{d2}", "example.com"},
		{v4, "%{d1}", "com"},
		{v4, "%{dr}", "com.example.email"},
		{v4, "%{d2r}", "example.email"},
		{v4, "%{l}", "strong-bad"},
		{v4, "%{l-}", "strong.bad"},
		{v4, "%{lr}", "strong-bad"},
		{v4, "%{lr-}", "bad.strong"},
		{v4, "%{l1r-}", "strong"},
		{v4, "%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"},
		{v4, "%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"},
		{v4, "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"},
		{v4, "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"},
		{v4, "%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"},
		{v6, "%{ir}.%{v}._spf.%{d2}", "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"},
		{v4, "%%%_%-", "% %20"},
		{v4, "%{S}", "strong-bad%40email.example.com"},
		{v4, "%{d999999999999999999999}", "email.example.com"},
	}
	for _, tc := range cases {
		ms, err := parseMacroString(tc.in, false)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if got := ms.expand(&tc.e.macros, "email.example.com"); got != tc.want {
			t.Errorf("%s = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{"%", "%x", "%{", "%{}", "%{d0}", "%{a}", "%{c}", "%{d2x}", "foo bar", "%{ir"} {
		if _, err := parseMacroString(bad, false); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if _, err := parseMacroString("%{c} at %{t} by %{r}", true); err != nil {
		t.Errorf("explanation letters: %v", err)
	}
}

func TestParseRecord(t *testing.T) {
	good := []string{
		"v=spf1",
		"V=SPF1 -ALL",
		"v=spf1 a mx ptr ip4:192.0.2.0/24 ip6:2001:db8::/32 ip6:::1 a:%{d}/24//64 mx:example.com//0 exists:%{i}.bl.example.com include:_spf.example.com ~all",
		"v=spf1 redirect=_spf.example.com exp=explain.%{d2}  unknown-mod=%{l}x ",
		"v=spf1 a:foo.example.xn--zckzah -all",
	}
	for _, r := range good {
		if _, err := parseRecord(r); err != nil {
			t.Errorf("%q: %v", r, err)
		}
	}
	bad := []string{
		"v=spf10", "v=spf1 -all.", "v=spf1 all:x", "v=spf1 a/33", "v=spf1 a//129", "v=spf1 a/24/64",
		"v=spf1 ip4:1.2.3", "v=spf1 ip4:1.2.3.4/032", "v=spf1 ip4:1.2.3.4//32", "v=spf1 ip6:1.2.3.4",
		"v=spf1 ip6::CAFE::BABE", "v=spf1 a:museum", "v=spf1 a:abc.123", "v=spf1 a:example.-com",
		"v=spf1 include:", "v=spf1 exists", "v=spf1 ptr/0", "v=spf1 redirect=a.test redirect=b.test",
		"v=spf1 exp=a.test exp=b.test", "v=spf1 exp=", "v=spf1 foo=%z", "v=spf1 1up=x", "v=spf1 =all",
		"v=spf1 -all\tip4:1.2.3.4", "v=spf1 a:ex\xc3\xa4mple.com", "v=spf1 redirect:x.test", "v=spf1 exp=%{c}.test",
	}
	for _, r := range bad {
		if _, err := parseRecord(r); err == nil {
			t.Errorf("%q parsed", r)
		}
	}
}

// FuzzParseRecord: any record text gives a record or an error, never a panic.
func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{"v=spf1 a mx -all", "v=spf1 ip4:1.2.3.4/24 exists:%{ir}.%{l1r+-}.x.test ~all", "v=spf1 redirect=%{d2}.x exp=%{o}.y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rec, err := parseRecord(s)
		if err != nil {
			return
		}
		for _, d := range rec.directives {
			if d.cidr4 > 32 || d.cidr6 > 128 {
				t.Errorf("%q: prefix lengths %d/%d", s, d.cidr4, d.cidr6)
			}
		}
	})
}

// FuzzMacro: parsing and expanding any macro-string never panics.
func FuzzMacro(f *testing.F) {
	for _, s := range []string{"%{ir}.%{v}._spf.%{d2}", "%{l1r+-}", "%{S}%%%_%-", "%{c} %{t} %{r}"} {
		f.Add(s, true)
	}
	e := newEval(&Checker{opts: Options{Hostname: "r", Now: time.Now}}, netip.MustParseAddr("2001:db8::1"), "h.test", "a.b-c+d", "x.test")
	e.macros.validated = func(string) string { return "unknown" }
	f.Fuzz(func(t *testing.T, s string, explain bool) {
		ms, err := parseMacroString(s, explain)
		if err != nil {
			return
		}
		ms.expand(&e.macros, "x.test")
	})
}

// FuzzServedRecord serves arbitrary TXT content from the fixture DNS server
// and checks it end to end: always one of the seven results, never a panic.
func FuzzServedRecord(f *testing.F) {
	srv := testenv.StartDNS(f, zone)
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, CacheSize: -1, Timeout: 200 * time.Millisecond, Retries: -1})
	if err != nil {
		f.Fatal(err)
	}
	c := New(r, Options{Timeout: 2 * time.Second})
	for _, s := range []string{"v=spf1 a mx include:example.test -all", "v=spf1 exists:%{i}.%{d} redirect=mail.example.test", "v=spf1 ptr ip6::: ~all exp=why.example.test"} {
		f.Add(s)
	}
	valid := map[string]bool{"none": true, "neutral": true, "pass": true, "fail": true, "softfail": true, "temperror": true, "permerror": true}
	f.Fuzz(func(t *testing.T, txt string) {
		rr := &dns.TXT{Hdr: dns.RR_Header{Name: "fuzz.example.test.", Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 0}}
		for len(txt) > 255 {
			rr.Txt = append(rr.Txt, escapeTXT(txt[:255]))
			txt = txt[255:]
		}
		rr.Txt = append(rr.Txt, escapeTXT(txt))
		if err := srv.SetZone(zone + rr.String() + "\n"); err != nil {
			return // not representable as a zone: nothing to serve
		}
		res := c.CheckMailFrom(context.Background(), netip.MustParseAddr("192.0.2.1"), "h.example.test", "x@fuzz.example.test")
		if !valid[res.Result] {
			t.Errorf("result %q for %q", res.Result, txt)
		}
	})
}

func escapeTXT(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c > '~':
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func BenchmarkCheckMailFrom(b *testing.B) {
	_, c := start(b)
	ctx := context.Background()
	ip := netip.MustParseAddr("203.0.113.9") // matches in the include: several look-ups
	if res := c.CheckMailFrom(ctx, ip, "x", "a@example.test"); res.Result != "pass" {
		b.Fatalf("%+v", res)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.CheckMailFrom(ctx, ip, "x", "a@example.test")
		}
	})
}

func BenchmarkParseRecord(b *testing.B) {
	rec := "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 a mx include:_spf.example.com exists:%{ir}.%{v}._spf.%{d2} redirect=_spf.example.net exp=why.%{d}"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseRecord(rec); err != nil {
			b.Fatal(err)
		}
	}
}

// The MX hosts of mx mechanisms are the sender's names: each look-up of
// one that finds nothing is void (section 4.6.4). Ten mx terms of ten
// NXDOMAIN hosts each once made 111 queries and ended in fail.
func TestMXHostVoids(t *testing.T) {
	var z strings.Builder
	z.WriteString("$ORIGIN example.test.\n$TTL 300\n@ IN SOA ns hostmaster 1 3600 600 86400 60\n")
	var terms []string
	for i := 1; i <= 10; i++ {
		terms = append(terms, fmt.Sprintf("mx:m%d.example.test", i))
		for j := 0; j < 10; j++ {
			fmt.Fprintf(&z, "m%d IN MX %d h%d.m%d.example.test.\n", i, j, j, i)
		}
	}
	fmt.Fprintf(&z, "mxvoids IN TXT %q\n", "v=spf1 "+strings.Join(terms, " ")+" -all")
	z.WriteString("twovoids IN TXT \"v=spf1 mx:m0.example.test +all\"\n")
	z.WriteString("m0 IN MX 10 gone1.example.test.\nm0 IN MX 20 gone2.example.test.\n")
	z.WriteString("threevoids IN TXT \"v=spf1 mx:m0.example.test a:gone3.example.test +all\"\n")
	z.WriteString("ptrvoids IN TXT \"v=spf1 ptr a:gone4.example.test +all\"\n")
	z.WriteString("$ORIGIN 2.0.192.in-addr.arpa.\n@ IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 60\n")
	z.WriteString("9 IN PTR p1.example.test.\n9 IN PTR p2.example.test.\n")
	srv := testenv.StartDNS(t, z.String())
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 300 * time.Millisecond, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	c := New(r, Options{})
	ip := netip.MustParseAddr("192.0.2.9")
	res := c.CheckMailFrom(context.Background(), ip, "x", "a@mxvoids.example.test")
	if res.Result != "permerror" || !strings.Contains(res.Reason, "void") {
		t.Errorf("ten mx terms of NXDOMAIN hosts: %+v; want permerror for void look-ups", res)
	}
	hosts := 0
	for i := 1; i <= 10; i++ {
		for j := 0; j < 10; j++ {
			hosts += srv.Queries(fmt.Sprintf("h%d.m%d.example.test", j, i), dns.TypeA)
		}
	}
	if hosts > 3 {
		t.Errorf("%d MX host look-ups; the third void one should end the evaluation", hosts)
	}
	for sender, want := range map[string]string{
		"a@twovoids.example.test":   "pass",      // two void MX hosts: within the limit
		"a@threevoids.example.test": "permerror", // and one more
		"a@ptrvoids.example.test":   "permerror", // two PTR names that do not exist, and one more
	} {
		if res := c.CheckMailFrom(context.Background(), ip, "x", sender); res.Result != want {
			t.Errorf("%s: %+v; want %s", sender, res, want)
		}
	}
}
