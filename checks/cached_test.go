package checks

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/internal/testenv"
)

func newMemCache(t testing.TB) cache.Cache {
	t.Helper()
	c, err := cache.New(cache.Config{}, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCachedReusesResults(t *testing.T) {
	cfg := listsConfig()
	c := newMemCache(t)
	// Two suites with their own resolvers stand for two processes.
	f1, ctx := newFixture(t, cfg), context.Background()
	a := Cached(f1.suite, c, CacheOptions{Scope: ConfigScope(cfg)})
	ip := netip.MustParseAddr("192.0.2.1")

	for i := range 2 {
		if r := a.SPF(ctx, ip, "mx.example.test", "alice@example.test"); r == nil || r.Result != "pass" {
			t.Fatalf("SPF %d: %+v", i, r)
		}
		rev, listed := a.Client(ctx, ip)
		if rev == nil || rev.Result != "pass" || len(listed) != 1 || listed[0].Names[0] != "listed" {
			t.Fatalf("client %d: %+v %+v", i, rev, listed)
		}
		if got := a.Domains(ctx, "spam.test"); len(got) != 1 || got[0].Query != "spam.test" {
			t.Fatalf("domains %d: %+v", i, got)
		}
	}
	// Another sender of the same domain shares the result.
	if r := a.SPF(ctx, ip, "mx.example.test", "bob@EXAMPLE.test"); r == nil || r.Result != "pass" {
		t.Fatalf("SPF other sender: %+v", r)
	}
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"example.test", dns.TypeTXT}, {"1.2.0.192.in-addr.arpa", dns.TypePTR}, {"1.2.0.192.bl.test", dns.TypeA}, {"spam.test.bl.test", dns.TypeA}} {
		if n := f1.srv.Queries(q.name, q.qtype); n != 1 {
			t.Errorf("%s %s queried %d times; want 1", q.name, dns.TypeToString[q.qtype], n)
		}
	}

	// A fresh resolver with the same cache asks nothing.
	b := Cached(suiteOn(t, f1, cfg), c, CacheOptions{Scope: ConfigScope(cfg)})
	if r := b.SPF(ctx, ip, "mx.example.test", "alice@example.test"); r == nil || r.Result != "pass" {
		t.Fatalf("SPF on b: %+v", r)
	}
	if n := f1.srv.Queries("example.test", dns.TypeTXT); n != 1 {
		t.Errorf("SPF queried %d times by two checkers; want 1", n)
	}
	// Another configuration does not read these results.
	cfg2 := cfg
	cfg2.DNSBL = dnsbl.Config{}
	if ConfigScope(cfg2) == ConfigScope(cfg) {
		t.Fatal("scope ignores the lists")
	}
	d := Cached(suiteOn(t, f1, cfg2), c, CacheOptions{Scope: ConfigScope(cfg2)})
	d.SPF(ctx, ip, "mx.example.test", "alice@example.test")
	if n := f1.srv.Queries("example.test", dns.TypeTXT); n != 2 {
		t.Errorf("other scope: SPF queried %d times; want 2", n)
	}
}

func TestCachedNeverKeepsTemperror(t *testing.T) {
	cfg := listsConfig()
	f := newFixture(t, cfg)
	c := newMemCache(t)
	ctx := context.Background()
	ip := netip.MustParseAddr("192.0.2.1")

	f.srv.ServFail("example.test")
	f.srv.ServFail("1.2.0.192.bl.test")
	a := Cached(f.suite, c, CacheOptions{})
	if r := a.SPF(ctx, ip, "mx.example.test", "alice@example.test"); r == nil || r.Result != "temperror" {
		t.Fatalf("SPF with SERVFAIL: %+v", r)
	}
	if _, listed := a.Client(ctx, ip); len(listed) != 1 || listed[0].Error == "" {
		t.Fatalf("list with SERVFAIL: %+v", listed)
	}
	f.srv.Reset("example.test")
	f.srv.Reset("1.2.0.192.bl.test")
	// A new resolver, so that only our cache could remember the failure.
	b := Cached(suiteOn(t, f, cfg), c, CacheOptions{})
	if r := b.SPF(ctx, ip, "mx.example.test", "alice@example.test"); r == nil || r.Result != "pass" {
		t.Fatalf("SPF after recovery: %+v; a temperror was kept", r)
	}
	if _, listed := b.Client(ctx, ip); len(listed) != 1 || listed[0].Error != "" || len(listed[0].Codes) != 1 {
		t.Fatalf("list after recovery: %+v; a failure was kept", listed)
	}
}

func TestCachedRunsUncachedWithoutCache(t *testing.T) {
	f := newFixture(t, listsConfig())
	c := newMemCache(t)
	c.Close()
	a := Cached(f.suite, c, CacheOptions{})
	ip := netip.MustParseAddr("192.0.2.1")
	for range 2 {
		if r := a.SPF(context.Background(), ip, "mx.example.test", "alice@example.test"); r == nil || r.Result != "pass" {
			t.Fatalf("SPF: %+v", r)
		}
	}
	if m := a.Message(); m == nil {
		t.Fatal("no message verifier")
	} else {
		m.Close()
	}
}

// suiteOn is another checks suite, with its own resolver, on f's server.
func suiteOn(t testing.TB, f *fixture, cfg Config) *Suite {
	t.Helper()
	cfg.DNS = resolver.Config{Servers: []string{f.srv.Addr()}, Timeout: 200 * time.Millisecond, Retries: -1}
	r, err := resolver.New(cfg.DNS)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, r)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A result is kept no longer than the DNS answers it came from: an SPF
// record of TTL 2 changed in the zone shows within seconds, although the
// cache would keep results ten minutes.
func TestCachedFollowsDNSTTL(t *testing.T) {
	zone := func(spf string) string {
		return `
$ORIGIN short.test.
@ 60 IN SOA ns hostmaster 1 3600 600 86400 60
@ 2 IN TXT "` + spf + `"
`
	}
	srv := testenv.StartDNS(t, zone("v=spf1 ip4:192.0.2.0/24 -all"))
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 200 * time.Millisecond, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(DefaultConfig(), r)
	if err != nil {
		t.Fatal(err)
	}
	a := Cached(s, newMemCache(t), CacheOptions{MaxTTL: 10 * time.Minute})
	ctx, ip := context.Background(), netip.MustParseAddr("192.0.2.1")
	if res := a.SPF(ctx, ip, "mx.short.test", "a@short.test"); res == nil || res.Result != "pass" {
		t.Fatalf("SPF: %+v", res)
	}
	if err := srv.SetZone(zone("v=spf1 -all")); err != nil {
		t.Fatal(err)
	}
	if res := a.SPF(ctx, ip, "mx.short.test", "a@short.test"); res == nil || res.Result != "pass" {
		t.Fatalf("SPF within the TTL: %+v; want the cached pass", res)
	}
	time.Sleep(2100 * time.Millisecond)
	if res := a.SPF(ctx, ip, "mx.short.test", "a@short.test"); res == nil || res.Result != "fail" {
		t.Fatalf("SPF after the record's TTL: %+v; want fail from the changed record", res)
	}
}
