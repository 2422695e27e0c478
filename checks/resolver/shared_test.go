package resolver

import (
	"context"
	"errors"
	"testing"

	"github.com/miekg/dns"

	mwcache "github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/internal/testenv"
)

// Two processes' resolvers on one Redis: a TXT answer one of them got is
// the other's too, negative answers included, failures never.
func TestSharedTXTAnswers(t *testing.T) {
	redis := testenv.StartRedis(t)
	srv := testenv.StartDNS(t, `
example.test. 300 IN SOA ns.example.test. h.example.test. 1 3600 600 86400 300
_dmarc.shop.example.test. 300 IN TXT "v=DMARC1; p=reject"
sel._domainkey.shop.example.test. 300 IN TXT "v=DKIM1; k=ed25519; p=abc" "def"
flaky.example.test. 300 IN TXT "v=spf1 -all"
`)
	newResolver := func() *Resolver {
		c, err := mwcache.New(mwcache.Config{Type: mwcache.TypeRedis, Redis: mwcache.RedisConfig{Addrs: []string{redis.Addr()}}}, mwcache.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		r, err := New(Config{Servers: []string{srv.Addr()}})
		if err != nil {
			t.Fatal(err)
		}
		r.SetShared(c)
		return r
	}
	a, b := newResolver(), newResolver()
	ctx := context.Background()
	for _, name := range []string{"_dmarc.shop.example.test", "sel._domainkey.shop.example.test"} {
		ta, err := a.LookupTXT(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		tb, err := b.LookupTXT(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if len(ta) != 1 || len(tb) != 1 || ta[0] != tb[0] {
			t.Fatalf("%s: %q vs %q", name, ta, tb)
		}
		if n := srv.Queries(name, dns.TypeTXT); n != 1 {
			t.Errorf("%s asked %d times; the second process must use the shared answer", name, n)
		}
	}
	if got, _ := b.LookupTXT(ctx, "sel._domainkey.shop.example.test"); got[0] != "v=DKIM1; k=ed25519; p=abcdef" {
		t.Errorf("shared TXT strings not joined back: %q", got)
	}
	// NXDOMAIN is an answer: shared.
	if _, err := a.LookupTXT(ctx, "_dmarc.none.example.test"); !errors.Is(err, ErrNXDomain) {
		t.Fatal(err)
	}
	if _, err := b.LookupTXT(ctx, "_dmarc.none.example.test"); !errors.Is(err, ErrNXDomain) {
		t.Fatalf("shared NXDOMAIN lost its kind: %v", err)
	}
	if n := srv.Queries("_dmarc.none.example.test", dns.TypeTXT); n != 1 {
		t.Errorf("NXDOMAIN asked %d times", n)
	}
	// SERVFAIL is not: the other process asks again once DNS recovers.
	srv.ServFail("flaky.example.test")
	if _, err := a.LookupTXT(ctx, "flaky.example.test"); !errors.Is(err, ErrServFail) {
		t.Fatal(err)
	}
	srv.Reset("flaky.example.test")
	if txt, err := b.LookupTXT(ctx, "flaky.example.test"); err != nil || txt[0] != "v=spf1 -all" {
		t.Fatalf("after recovery: %q %v", txt, err)
	}
}

// An answer too big for the local cache is not shared either: the fleet's
// Redis would hold it for its TTL.
func TestSharedRefusesOversized(t *testing.T) {
	srv := testenv.StartDNS(t, txtZone("big", 1, 14, 16))
	c, err := mwcache.New(mwcache.Config{}, mwcache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Servers: []string{srv.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	r.SetShared(c)
	if txts, err := r.LookupTXT(context.Background(), "big0.example.test"); err != nil || len(txts) != 14 {
		t.Fatalf("%d records, %v", len(txts), err)
	}
	if _, ok, _ := c.Get(context.Background(), sharedKey(cacheKey{"big0.example.test.", dns.TypeTXT})); ok {
		t.Error("a 56 KB answer was stored in the shared cache")
	}
}
