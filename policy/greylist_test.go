package policy_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
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
	"github.com/mailward/mailward/checks"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/rules"
	"github.com/mailward/mailward/signing"
)

// The tests here run the engine as serve does: real checks against the
// fixture DNS server, real rules, and a cache that is either memory or a
// real redis-server shared by two engines standing for two processes.

const testRules = `
rules:
  - name: grey
    when: rcpt startsWith "grey"
    action: greylist
  - name: bulk-sender
    when: mail_from startsWith "bulk@" && ratelimit("from:" + mail_from, 3, "1h")
    action: tempfail
`

type world struct {
	dns  *testenv.DNSServer
	key  ed25519.PrivateKey
	dir  string
	grey cache.GreylistConfig
	// signing is the engines' DKIM key table; nil: none.
	signing *signing.Table
	// contentOff turns the engines' content scan off.
	contentOff bool
}

func newWorld(t testing.TB) *world {
	t.Helper()
	auth := testenv.NewAuthZone(t, "")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(testRules), 0o644); err != nil {
		t.Fatal(err)
	}
	return &world{
		dns: testenv.StartDNS(t, auth.Zone), key: auth.Key, dir: dir,
		grey: cache.GreylistConfig{Delay: cache.Duration(time.Second), RetryWindow: cache.Duration(time.Hour)},
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// engine builds one "process": its own resolver and checks, sharing c.
func (w *world) engine(t testing.TB, c cache.Cache) *policy.Engine {
	t.Helper()
	cfg := checks.DefaultConfig()
	cfg.Hostname = "mx.receiver.test"
	cfg.DNS = resolver.Config{Servers: []string{w.dns.Addr()}, Timeout: 500 * time.Millisecond, Retries: -1}
	r, err := resolver.New(cfg.DNS)
	if err != nil {
		t.Fatal(err)
	}
	suite, err := checks.New(cfg, r)
	if err != nil {
		t.Fatal(err)
	}
	var checker policy.Checker = suite
	if c != nil {
		checker = checks.Cached(suite, c, checks.CacheOptions{Scope: checks.ConfigScope(cfg)})
	}
	rl := c
	if rl == nil {
		rl = memoryCache(t)
	}
	fns := []rules.Func{rules.RateLimitFunc(rl, quietLog())}
	set, err := rules.Load(rules.Config{Files: []string{"rules.yaml"}}, rules.Options{BaseDir: w.dir, Functions: fns, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	s := policy.Settings{Hostname: "mx.receiver.test", DMARCEnforce: true, VerdictTTL: time.Hour, CheckTimeout: 10 * time.Second, Signing: w.signing, ContentOff: w.contentOff}
	e := policy.NewEngine(s, checker, set, quietLog())
	if c != nil {
		g, err := cache.NewGreylist(c, w.grey)
		if err != nil {
			t.Fatal(err)
		}
		e.SetCache(c, g)
	}
	return e
}

func redisCache(t testing.TB, r *testenv.Redis) cache.Cache {
	t.Helper()
	c, err := cache.New(cache.Config{Type: cache.TypeRedis, Redis: cache.RedisConfig{
		Addrs: []string{r.Addr()}, Timeout: cache.Duration(500 * time.Millisecond)}}, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func memoryCache(t testing.TB) cache.Cache {
	t.Helper()
	c, err := cache.New(cache.Config{}, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const plainMessage = "From: Alice <alice@example.test>\r\nTo: bob@example.net\r\nSubject: hello\r\nMessage-ID: <1@example.test>\r\n\r\nHello Bob.\r\n"

func (w *world) sign(t testing.TB, msg string) string {
	return testenv.SignDKIM(t, msg, "example.test", "sel", w.key)
}

// result is what one transaction got.
type result struct {
	rcpt []policy.Verdict
	mail policy.Verdict
	eom  policy.Verdict
}

// send runs one transaction through e; msg "" stops after the recipients.
func send(t testing.TB, e *policy.Engine, ip, from string, rcpts []string, msg string) result {
	t.Helper()
	ctx := context.Background()
	c, v := e.Connect(ctx, policy.ConnInfo{IP: netip.MustParseAddr(ip), Front: "test"})
	defer c.Close()
	if v.Action.Final() {
		t.Fatalf("connect: %+v", v)
	}
	c.Helo(ctx, "mx.example.test")
	var res result
	res.mail = c.Mail(ctx, from, policy.MailInfo{})
	if res.mail.Action.Final() {
		return res
	}
	ok := 0
	for _, r := range rcpts {
		v := c.Rcpt(ctx, r)
		res.rcpt = append(res.rcpt, v)
		if v.Action == policy.Continue {
			ok++
		}
	}
	if msg == "" || ok == 0 {
		return res
	}
	br := bufio.NewReader(strings.NewReader(msg))
	hs, err := policy.ReadHeader(br)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		c.HeaderField(h.Name, h.Value)
	}
	c.EndOfHeaders(ctx)
	body, _ := io.ReadAll(br)
	if err := c.Body(body); err != nil {
		t.Fatal(err)
	}
	res.eom = c.EndOfMessage(ctx)
	return res
}

func authResults(v policy.Verdict) string {
	for _, h := range v.Headers {
		if h.Name == "Authentication-Results" {
			return h.Value
		}
	}
	return ""
}

func TestGreylistThroughEngine(t *testing.T) {
	w := newWorld(t)
	e := w.engine(t, memoryCache(t))
	rcpts := []string{"grey@example.net", "other@example.net"}
	res := send(t, e, "198.51.100.9", "someone@example.org", rcpts, "")
	if v := res.rcpt[0]; v.Action != policy.Tempfail || v.Code != 451 || v.Enhanced != "4.7.1" ||
		v.Text != "Greylisted, please retry in 1 seconds" || v.Rule != "grey" {
		t.Fatalf("first try: %+v; want 451 4.7.1 Greylisted, please retry in 1 seconds", v)
	}
	if v := res.rcpt[1]; v.Action != policy.Continue {
		t.Fatalf("a recipient no rule greylists: %+v", v)
	}
	if v := send(t, e, "198.51.100.9", "someone@example.org", rcpts, "").rcpt[0]; v.Action != policy.Tempfail {
		t.Fatalf("retry before the delay: %+v; want tempfail", v)
	}
	time.Sleep(1100 * time.Millisecond)
	// Another address of the same /24: MTAs retry from their pool.
	if v := send(t, e, "198.51.100.10", "someone@example.org", rcpts, "").rcpt[0]; v.Action != policy.Continue {
		t.Fatalf("retry after the delay: %+v; want continue", v)
	}
}

func TestGreylistSkippedAfterDMARCPass(t *testing.T) {
	w := newWorld(t)
	e := w.engine(t, memoryCache(t))
	// A client elsewhere is greylisted ...
	if v := send(t, e, "203.0.113.5", "someone@example.org", []string{"grey@example.net"}, "").rcpt[0]; v.Action != policy.Tempfail {
		t.Fatalf("control: %+v; want tempfail", v)
	}
	// ... but one whose network delivered a DMARC pass is not.
	res := send(t, e, "192.0.2.1", "alice@example.test", []string{"bob@example.net"}, w.sign(t, plainMessage))
	if res.eom.Action != policy.Accept || !strings.Contains(authResults(res.eom), "dmarc=pass") {
		t.Fatalf("signed message: %+v", res.eom)
	}
	if v := send(t, e, "192.0.2.77", "someone@example.org", []string{"grey@example.net"}, "").rcpt[0]; v.Action != policy.Continue {
		t.Fatalf("after a DMARC pass from the network: %+v; want continue", v)
	}
}

func TestGreylistWithoutCacheIsOff(t *testing.T) {
	w := newWorld(t)
	e := w.engine(t, nil)
	if v := send(t, e, "198.51.100.9", "someone@example.org", []string{"grey@example.net"}, "").rcpt[0]; v.Action != policy.Continue || v.Greylist {
		t.Fatalf("no greylister: %+v; want continue", v)
	}
}

// TestTwoEnginesShareRedis stands for two mailward processes on one Redis.
func TestTwoEnginesShareRedis(t *testing.T) {
	w := newWorld(t)
	r := testenv.StartRedis(t)
	a, b := w.engine(t, redisCache(t, r)), w.engine(t, redisCache(t, r))

	t.Run("greylist", func(t *testing.T) {
		rc := []string{"grey@example.net"}
		if v := send(t, a, "198.51.100.9", "x@example.org", rc, "").rcpt[0]; v.Action != policy.Tempfail {
			t.Fatalf("first sight on A: %+v", v)
		}
		if v := send(t, b, "198.51.100.9", "x@example.org", rc, "").rcpt[0]; v.Action != policy.Tempfail || !strings.Contains(v.Reason, "early") {
			t.Fatalf("early retry on B: %+v; want tempfail (early)", v)
		}
		time.Sleep(1100 * time.Millisecond)
		if v := send(t, b, "198.51.100.9", "x@example.org", rc, "").rcpt[0]; v.Action != policy.Continue {
			t.Fatalf("retry on B after the delay: %+v", v)
		}
	})

	t.Run("ratelimit", func(t *testing.T) {
		rc := []string{"bob@example.net"}
		for i, e := range []*policy.Engine{a, b, a} {
			if v := send(t, e, "192.0.2.1", "bulk@example.test", rc, "").mail; v.Action != policy.Continue {
				t.Fatalf("message %d: %+v; want continue", i+1, v)
			}
		}
		v := send(t, b, "192.0.2.1", "bulk@example.test", rc, "").mail
		if v.Action != policy.Tempfail || v.Rule != "bulk-sender" || !strings.Contains(v.Reason, "rate limit from:bulk@example.test over 3 per 1h") {
			t.Fatalf("4th message: %+v; want tempfail naming the limit", v)
		}
	})

	t.Run("spf and verdict cached", func(t *testing.T) {
		msg := w.sign(t, plainMessage)
		rc := []string{"bob@example.net"}
		first := send(t, a, "192.0.2.1", "alice@example.test", rc, msg).eom
		if first.Action != policy.Accept || !strings.Contains(authResults(first), "dkim=pass") {
			t.Fatalf("first: %+v", first)
		}
		spfQ, keyQ := w.dns.Queries("example.test", dns.TypeTXT), w.dns.Queries("sel._domainkey.example.test", dns.TypeTXT)
		if spfQ != 1 || keyQ != 1 {
			t.Fatalf("after one message: %d SPF and %d key queries; want 1 and 1", spfQ, keyQ)
		}
		second := send(t, b, "192.0.2.1", "alice@example.test", rc, msg).eom
		if second.Action != policy.Accept || authResults(second) != authResults(first) || !strings.Contains(second.Reason, "cached verdict") {
			t.Fatalf("second:\n%+v\nwant the first's verdict and Authentication-Results:\n%+v", second, first)
		}
		if q := w.dns.Queries("example.test", dns.TypeTXT); q != 1 {
			t.Errorf("SPF record queried %d times for two messages on two engines; want 1", q)
		}
		// The DKIM key look-up starts while the header streams, before the
		// verdict can be known; DMARC runs only at the end.
		if q := w.dns.Queries("_dmarc.example.test", dns.TypeTXT); q != 1 {
			t.Errorf("DMARC record queried %d times; want 1 (verdict reused)", q)
		}
		// Another message from the same client and domain: SPF still cached,
		// DKIM verified afresh.
		third := send(t, b, "192.0.2.1", "alice@example.test", rc, w.sign(t, strings.Replace(plainMessage, "hello", "again", 1))).eom
		if third.Action != policy.Accept || strings.Contains(third.Reason, "cached") {
			t.Fatalf("third: %+v", third)
		}
		if q := w.dns.Queries("example.test", dns.TypeTXT); q != 1 {
			t.Errorf("SPF record queried %d times; want 1", q)
		}
		if q := w.dns.Queries("_dmarc.example.test", dns.TypeTXT); q != 2 {
			t.Errorf("DMARC record queried %d times; want 2", q)
		}
	})
}

func TestTemperrorNotCached(t *testing.T) {
	w := newWorld(t)
	r := testenv.StartRedis(t)
	a, b := w.engine(t, redisCache(t, r)), w.engine(t, redisCache(t, r))
	msg := w.sign(t, plainMessage)
	rc := []string{"bob@example.net"}

	w.dns.ServFail("example.test")
	v := send(t, a, "192.0.2.1", "alice@example.test", rc, msg).eom
	// DKIM carries DMARC, so the message passes, but its SPF result is a
	// temperror: neither it nor the verdict may be remembered.
	if !strings.Contains(authResults(v), "spf=temperror") {
		t.Fatalf("with the SPF record failing: %+v; want spf=temperror", v)
	}
	w.dns.Reset("example.test")
	before := w.dns.Queries("example.test", dns.TypeTXT)
	v = send(t, b, "192.0.2.1", "alice@example.test", rc, msg).eom
	if v.Action != policy.Accept || !strings.Contains(authResults(v), "spf=pass") || strings.Contains(v.Reason, "cached") {
		t.Fatalf("after recovery: %+v; want a fresh accept with spf=pass", v)
	}
	if q := w.dns.Queries("example.test", dns.TypeTXT); q <= before {
		t.Errorf("SPF not looked up again after a temperror (%d queries before, %d after)", before, q)
	}
}

func TestRedisDownMailFlows(t *testing.T) {
	w := newWorld(t)
	r := testenv.StartRedis(t)
	e := w.engine(t, redisCache(t, r))
	msg := w.sign(t, plainMessage)
	// Fill the verdict cache, then lose Redis.
	if v := send(t, e, "192.0.2.1", "alice@example.test", []string{"bob@example.net"}, msg).eom; v.Action != policy.Accept {
		t.Fatalf("before: %+v", v)
	}
	r.Stop()
	start := time.Now()
	for i := range 5 {
		res := send(t, e, "192.0.2.1", "bulk@example.test", []string{"grey@example.net", "bob@example.net"}, msg)
		if res.mail.Action != policy.Continue {
			t.Fatalf("message %d: rate limit applied without a cache: %+v", i, res.mail)
		}
		for _, v := range res.rcpt {
			if v.Action != policy.Continue {
				t.Fatalf("message %d: recipient refused without a cache: %+v", i, v)
			}
		}
		if res.eom.Action != policy.Accept || strings.Contains(res.eom.Reason, "cached") || !strings.Contains(authResults(res.eom), "dkim=pass") {
			t.Fatalf("message %d: %+v; want a freshly checked accept", i, res.eom)
		}
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("5 messages took %s with Redis down", d)
	}
}
