package checks

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/checks/uribl"
	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/rules"
)

const uriZone = `
$TTL 300
$ORIGIN multi.test.
@ IN SOA ns hostmaster 1 3600 600 86400 60
spam.example IN A 127.0.0.2
10.2.0.192 IN A 127.0.0.4
refused.example IN A 127.255.255.254
$ORIGIN example.
@ IN SOA ns hostmaster 1 3600 600 86400 60
`

func uriConfig(srv *testenv.DNSServer) Config {
	cfg := Config{}
	cfg.DNS.Servers = []string{srv.Addr()}
	cfg.DNS.Timeout, cfg.DNS.Retries = 200*time.Millisecond, -1
	cfg.URIBL = uribl.Config{Zones: []uribl.Zone{{Zone: "multi.test", Bitmask: map[int]string{2: "black", 4: "grey"}, MaxQueries: 5}}}
	return cfg
}

func uriSuite(t testing.TB, cfg Config) *Suite {
	t.Helper()
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

func links(hosts ...string) []policy.URL {
	var out []policy.URL
	for _, h := range hosts {
		u := policy.URL{Scheme: "http", Host: h}
		if _, err := netip.ParseAddr(h); err != nil {
			// The registrable domain: the last two labels, for these names.
			labels := strings.Split(h, ".")
			u.Domain = strings.Join(labels[max(0, len(labels)-2):], ".")
		}
		out = append(out, u)
	}
	return out
}

func TestSuiteURLs(t *testing.T) {
	srv := testenv.StartDNS(t, uriZone)
	s := uriSuite(t, uriConfig(srv))
	ctx := context.Background()
	res := s.URLs(ctx, links("www.spam.example", "spam.example", "ok.example", "192.0.2.10", "example"))
	if len(res) != 2 || res[0].Query != "spam.example" || res[0].Names[0] != "black" || res[1].Query != "192.0.2.10" || res[1].Names[0] != "grey" {
		t.Errorf("%+v", res)
	}
	// The registrable domain is asked about, once, not each host.
	if n := srv.Queries("spam.example.multi.test", dns.TypeA); n != 1 {
		t.Errorf("spam.example asked %d times", n)
	}
	if n := srv.Queries("www.spam.example.multi.test", dns.TypeA) + srv.Queries("example.multi.test", dns.TypeA); n != 0 {
		t.Errorf("a host or a bare suffix was asked about")
	}
	if res := s.URLs(ctx, nil); res != nil {
		t.Errorf("no links: %+v", res)
	}
	// Without zones nothing is asked.
	cfg := uriConfig(srv)
	cfg.URIBL = uribl.Config{}
	if res := uriSuite(t, cfg).URLs(ctx, links("spam.example")); res != nil {
		t.Errorf("no zones: %+v", res)
	}
}

func TestCachedURLs(t *testing.T) {
	t.Run("memory", func(t *testing.T) { cachedURLs(t, newMemCache(t)) })
	// Through Redis the results go as JSON and come back decoded.
	t.Run("redis", func(t *testing.T) {
		srv := testenv.StartRedis(t)
		cfg := cache.DefaultConfig()
		cfg.Type, cfg.Redis.Addrs = cache.TypeRedis, []string{srv.Addr()}
		c, err := cache.New(cfg, cache.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cachedURLs(t, c)
	})
}

func cachedURLs(t *testing.T, c cache.Cache) {
	srv := testenv.StartDNS(t, uriZone)
	cfg := uriConfig(srv)
	ctx := context.Background()
	// Two suites with their own resolvers, so that only the check cache
	// can spare the second its look-ups.
	a := Cached(uriSuite(t, cfg), c, CacheOptions{Scope: ConfigScope(cfg)})
	b := Cached(uriSuite(t, cfg), c, CacheOptions{Scope: ConfigScope(cfg)})
	for i, k := range []policy.Checker{a, b} {
		res := k.URLs(ctx, links("spam.example", "ok.example"))
		if len(res) != 1 || res[0].Names[0] != "black" || res[0].Codes[0] != "127.0.0.2" || res[0].Query != "spam.example" {
			t.Fatalf("message %d: %+v", i, res)
		}
	}
	if n := srv.Queries("spam.example.multi.test", dns.TypeA); n != 1 {
		t.Errorf("second message asked again: %d queries", n)
	}
	// A failed look-up is not kept: the next message asks again.
	srv.ServFail("refused2.example.multi.test")
	for i := range 2 {
		res := a.URLs(ctx, links("refused2.example"))
		if len(res) != 1 || res[0].Error == "" {
			t.Fatalf("servfail %d: %+v", i, res)
		}
	}
	if n := srv.Queries("refused2.example.multi.test", dns.TypeA); n != 2 {
		t.Errorf("a failure was cached: %d queries, want 2", n)
	}
}

// withLinks stands in for the content scan: it gives the URI lists the
// links of a message the engine cannot read them from.
type withLinks struct {
	policy.Checker
	urls []policy.URL
}

func (w withLinks) URLs(ctx context.Context, _ []policy.URL) []uribl.Result {
	return w.Checker.URLs(ctx, w.urls)
}

// A listed link rejects through a rule; a zone that fails makes the
// same rule's reject a tempfail, never a 5xx.
func TestURIListsThroughEngine(t *testing.T) {
	srv := testenv.StartDNS(t, uriZone)
	dir := t.TempDir()
	rulesFile := filepath.Join(dir, "uribl.yaml")
	os.WriteFile(rulesFile, []byte(`rules:
  - name: listed-link
    when: '"black" in (uribl["multi.test"] ?? [])'
    action: reject
    code: "550 5.7.1"
    message: "a link in the message is listed"
`), 0o644)
	set, err := rules.Load(rules.Config{Files: []string{rulesFile}}, rules.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s := uriSuite(t, uriConfig(srv))
	send := func(hosts ...string) (policy.Verdict, policy.Facts) {
		t.Helper()
		e := policy.NewEngine(policy.Settings{Hostname: "mx.receiver.test", CheckTimeout: 2 * time.Second, OnError: policy.Tempfail},
			withLinks{s, links(hosts...)}, set, nil)
		ctx := context.Background()
		c, _ := e.Connect(ctx, policy.ConnInfo{IP: netip.MustParseAddr("198.51.100.1"), Front: "test"})
		defer c.Close()
		c.Helo(ctx, "client.test")
		c.Mail(ctx, "<a@sender.test>", policy.MailInfo{})
		c.Rcpt(ctx, "<b@example.net>")
		c.Header("Subject", "hi")
		c.EndOfHeaders(ctx)
		c.Body([]byte("see http://" + strings.Join(hosts, "/ http://") + "/\r\n"))
		v := c.EndOfMessage(ctx)
		return v, *c.Facts()
	}
	v, f := send("ok.example", "www.spam.example")
	if v.Action != policy.Reject || v.Code != 550 || v.Rule != "listed-link" {
		t.Errorf("listed link: %+v", v)
	}
	if len(f.URIBL) != 1 || f.URIBL[0].Query != "spam.example" {
		t.Errorf("facts: %+v", f.URIBL)
	}
	if v, _ := send("ok.example"); v.Action != policy.Accept {
		t.Errorf("clean links: %+v", v)
	}
	srv.Drop("timeout.example.multi.test")
	v, f = send("timeout.example", "spam.example")
	if v.Action != policy.Tempfail || v.Code/100 != 4 || !strings.Contains(v.Unknown, "URI list multi.test failed") {
		t.Errorf("timed-out zone: %+v, want a tempfail naming the list", v)
	}
	if len(f.URIBL) != 2 || f.URIBL[0].Error == "" {
		t.Errorf("facts: %+v", f.URIBL)
	}
	// 127.255.255.254 is the list refusing us: an error, not a listing.
	v, _ = send("refused.example", "spam.example")
	if v.Action != policy.Tempfail {
		t.Errorf("refused answer: %+v, want tempfail", v)
	}
}

// Without URI lists a message's links cost the cache nothing.
func TestCachedURLsWithoutZones(t *testing.T) {
	srv := testenv.StartDNS(t, uriZone)
	cfg := uriConfig(srv)
	cfg.URIBL = uribl.Config{}
	c := newMemCache(t)
	k := Cached(uriSuite(t, cfg), c, CacheOptions{Scope: ConfigScope(cfg)})
	if res := k.URLs(context.Background(), links("spam.example")); res != nil {
		t.Fatalf("%+v", res)
	}
	if st := c.Stats(); st.Entries != 0 || st.Hits+st.Misses != 0 {
		t.Errorf("the cache was asked: %+v", st)
	}
}
