package checks

import (
	"context"
	"crypto/ed25519"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/internal/config"
	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
)

type fixture struct {
	srv   *testenv.DNSServer
	suite *Suite
	key   ed25519.PrivateKey
}

func newFixture(t testing.TB, cfg Config) *fixture {
	t.Helper()
	auth := testenv.NewAuthZone(t, `
$ORIGIN example.test.
@            IN MX  10 mx
mx           IN TXT "v=spf1 a -all"
$ORIGIN bl.test.
@            IN SOA ns hostmaster 1 3600 600 86400 60
1.2.0.192    IN A   127.0.0.2
spam.test    IN A   127.0.1.2
`)
	srv := testenv.StartDNS(t, auth.Zone)
	cfg.DNS = resolver.Config{Servers: []string{srv.Addr()}, Timeout: 200 * time.Millisecond, Retries: -1}
	r, err := resolver.New(cfg.DNS)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, r)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{srv: srv, suite: s, key: auth.Key}
}

func listsConfig() Config {
	cfg := DefaultConfig()
	cfg.Hostname = "mx.receiver.test"
	cfg.DNSBL = dnsbl.Config{
		Zones:       []dnsbl.Zone{{Zone: "bl.test", Codes: map[string]string{"127.0.0.2": "listed"}}},
		DomainZones: []dnsbl.Zone{{Zone: "bl.test"}},
	}
	return cfg
}

const testMessage = "From: Alice <alice@example.test>\r\nTo: bob@example.net\r\nSubject: hello\r\nMessage-ID: <1@example.test>\r\n\r\nHello Bob.\r\n"

func (f *fixture) sign(t testing.TB, msg string) string {
	return testenv.SignDKIM(t, msg, "example.test", "sel", f.key)
}

func TestSuite(t *testing.T) {
	f := newFixture(t, listsConfig())
	ctx := context.Background()
	ip := netip.MustParseAddr("192.0.2.1")

	rev, listed := f.suite.Client(ctx, ip)
	if rev == nil || rev.Result != "pass" || rev.PTR != "mx.example.test" {
		t.Errorf("iprev: %+v", rev)
	}
	if len(listed) != 1 || listed[0].Zone != "bl.test" || listed[0].Names[0] != "listed" {
		t.Errorf("dnsbl: %+v", listed)
	}
	if got := f.suite.Domains(ctx, "mx.example.test", "spam.test"); len(got) != 1 || got[0].Query != "spam.test" {
		t.Errorf("domains: %+v", got)
	}
	if r := f.suite.SPFHelo(ctx, ip, "mx.example.test"); r == nil || r.Result != "pass" || r.Identity != "helo" {
		t.Errorf("SPF helo: %+v", r)
	}
	spfRes := f.suite.SPF(ctx, ip, "mx.example.test", "alice@example.test")
	if spfRes == nil || spfRes.Result != "pass" {
		t.Fatalf("SPF: %+v", spfRes)
	}

	// A signed message, written in odd chunks: DKIM passes, DMARC passes.
	m := f.suite.Message()
	signed := f.sign(t, testMessage)
	for i := 0; i < len(signed); i += 7 {
		if _, err := m.Write([]byte(signed[i:min(i+7, len(signed))])); err != nil {
			t.Fatal(err)
		}
	}
	sigs, dm := m.Finish(ctx, spfRes)
	m.Close()
	if len(sigs) != 1 || sigs[0].Result != "pass" || sigs[0].Domain != "example.test" {
		t.Errorf("dkim: %+v", sigs)
	}
	if dm == nil || dm.Result != "pass" || dm.Policy != "reject" {
		t.Errorf("dmarc: %+v", dm)
	}

	// Unsigned, from an address SPF refuses: DMARC fails with p=reject.
	bad := netip.MustParseAddr("198.51.100.7")
	spfBad := f.suite.SPF(ctx, bad, "evil.test", "alice@example.test")
	m = f.suite.Message()
	m.Write([]byte(testMessage))
	sigs, dm = m.Finish(ctx, spfBad)
	if spfBad.Result != "fail" || len(sigs) != 0 || dm == nil || dm.Result != "fail" || dm.Policy != "reject" {
		t.Errorf("spoof: spf %+v dkim %+v dmarc %+v", spfBad, sigs, dm)
	}
}

// A header block too big to read to its end may hide the From readers
// show: DMARC cannot pass on the first one alone.
func TestFromBeyondHeaderLimit(t *testing.T) {
	f := newFixture(t, listsConfig())
	ctx := context.Background()
	spfRes := f.suite.SPF(ctx, netip.MustParseAddr("192.0.2.1"), "mx.example.test", "alice@example.test")
	junk := strings.Repeat("X-Junk: "+strings.Repeat("x", 990)+"\r\n", 1100)
	m := f.suite.Message()
	defer m.Close()
	m.Write([]byte("From: alice@example.test\r\n" + junk + "From: ceo@bank.test\r\n\r\nbody\r\n"))
	if _, dm := m.Finish(ctx, spfRes); dm == nil || dm.Result != "permerror" || !strings.Contains(dm.Reason, "not every From") {
		t.Errorf("dmarc: %+v; want permerror", dm)
	}
}

func TestDNSTroubleBecomesTemperror(t *testing.T) {
	f := newFixture(t, listsConfig())
	ctx := context.Background()
	ip := netip.MustParseAddr("192.0.2.1")
	for _, n := range []string{"1.2.0.192.in-addr.arpa", "1.2.0.192.bl.test", "example.test", "sel._domainkey.example.test", "_dmarc.example.test"} {
		f.srv.ServFail(n)
	}
	rev, listed := f.suite.Client(ctx, ip)
	if rev.Result != "temperror" {
		t.Errorf("iprev: %+v", rev)
	}
	if len(listed) != 1 || listed[0].Error == "" || len(listed[0].Codes) != 0 {
		t.Errorf("dnsbl: %+v", listed)
	}
	spfRes := f.suite.SPF(ctx, ip, "mx.example.test", "alice@example.test")
	if spfRes.Result != "temperror" {
		t.Errorf("spf: %+v", spfRes)
	}
	m := f.suite.Message()
	m.Write([]byte(f.sign(t, testMessage)))
	sigs, dm := m.Finish(ctx, spfRes)
	if len(sigs) != 1 || sigs[0].Result != "temperror" {
		t.Errorf("dkim: %+v", sigs)
	}
	if dm == nil || dm.Result != "temperror" {
		t.Errorf("dmarc: %+v", dm)
	}
}

func TestDisabled(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	ip := netip.MustParseAddr("192.0.2.1")
	if rev, listed := f.suite.Client(ctx, ip); rev != nil || listed != nil {
		t.Errorf("client: %+v %+v", rev, listed)
	}
	if r := f.suite.SPF(ctx, ip, "h", "a@example.test"); r != nil {
		t.Errorf("spf: %+v", r)
	}
	if r := f.suite.SPFHelo(ctx, ip, "mx.example.test"); r != nil {
		t.Errorf("spf helo: %+v", r)
	}
	m := f.suite.Message()
	if n, err := m.Write([]byte(testMessage)); n != len(testMessage) || err != nil {
		t.Errorf("write: %d, %v", n, err)
	}
	if sigs, dm := m.Finish(ctx, nil); sigs != nil || dm != nil {
		t.Errorf("finish: %+v %+v", sigs, dm)
	}
	m.Close()
	if n := f.srv.Queries("sel._domainkey.example.test", 16); n != 0 {
		t.Errorf("disabled DKIM looked a key up")
	}
}

// The suite behind the engine: the results reach Authentication-Results.
func TestThroughEngine(t *testing.T) {
	f := newFixture(t, listsConfig())
	ctx := context.Background()
	e := policy.NewEngine(policy.Settings{Hostname: "mx.receiver.test", CheckTimeout: 5 * time.Second}, f.suite, nil, nil)
	c, v := e.Connect(ctx, policy.ConnInfo{IP: netip.MustParseAddr("192.0.2.1"), Front: "test"})
	defer c.Close()
	if v.Action.Final() {
		t.Fatalf("connect: %+v", v)
	}
	c.Helo(ctx, "mx.example.test")
	c.Mail(ctx, "<alice@example.test>", policy.MailInfo{})
	c.Rcpt(ctx, "<bob@example.net>")
	signed := f.sign(t, testMessage)
	head, body, _ := strings.Cut(signed, "\r\n\r\n")
	for _, line := range strings.Split(strings.NewReplacer("\r\n ", " ", "\r\n\t", " ").Replace(head), "\r\n") {
		name, value, _ := strings.Cut(line, ":")
		c.Header(name, strings.TrimPrefix(value, " "))
	}
	c.EndOfHeaders(ctx)
	c.Body([]byte(body))
	v = c.EndOfMessage(ctx)
	var ar string
	for _, h := range v.Headers {
		if strings.EqualFold(h.Name, "Authentication-Results") {
			ar = h.Value
		}
	}
	for _, want := range []string{"iprev=pass", "spf=pass", "dkim=pass", "dmarc=pass"} {
		if !strings.Contains(ar, want) {
			t.Errorf("Authentication-Results %q lacks %s", ar, want)
		}
	}
	facts := c.Facts()
	if len(facts.DNSBL) != 1 || facts.DNSBL[0].Zone != "bl.test" {
		t.Errorf("facts.DNSBL = %+v", facts.DNSBL)
	}
}

func TestConfigFromYAML(t *testing.T) {
	var cfg struct {
		Checks Config `yaml:"checks"`
	}
	cfg.Checks = DefaultConfig()
	doc := []byte(`
checks:
  dns:
    servers: ["127.0.0.1:5353", "::1"]
    timeout: 1500ms
    retries: 1
    cache_size: 500
  spf:
    enable: true
    timeout: 10s
  iprev:
    enable: false
  dnsbl:
    zones:
      - zone: zen.example
        codes: {"127.0.0.2": sbl, "127.0.0.4": xbl}
      - zone: list.dnswl.example
        allow: true
    domain_zones:
      - zone: dbl.example
  dkim:
    max_signatures: 5
    min_rsa_bits: 2048
  dmarc:
    max_author_domains: 3
`)
	if _, err := config.Decode("test.yaml", doc, &cfg); err != nil {
		t.Fatal(err)
	}
	c := cfg.Checks
	if c.DNS.Timeout != 1500*time.Millisecond || c.DNS.Retries != 1 || c.DNS.CacheSize != 500 || len(c.DNS.Servers) != 2 {
		t.Errorf("dns: %+v", c.DNS)
	}
	if !c.SPF.Enable || c.SPF.Timeout != 10*time.Second || c.IPRev.Enable || !c.DKIM.Enable || !c.DMARC.Enable {
		t.Errorf("enables: %+v", c)
	}
	if c.DKIM.MaxSignatures != 5 || c.DKIM.MinRSABits != 2048 || c.DMARC.MaxAuthorDomains != 3 {
		t.Errorf("dkim/dmarc options: %+v %+v", c.DKIM, c.DMARC)
	}
	if len(c.DNSBL.Zones) != 2 || !c.DNSBL.Zones[1].Allow || c.DNSBL.Zones[0].Codes["127.0.0.4"] != "xbl" || c.DNSBL.DomainZones[0].Zone != "dbl.example" {
		t.Errorf("dnsbl: %+v", c.DNSBL)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("validate: %v", err)
	}
	// A mistyped key is caught by the strict loader.
	if _, err := config.Decode("test.yaml", []byte("checks:\n  spf:\n    enabel: true\n"), &cfg); err == nil || !strings.Contains(err.Error(), "enable") {
		t.Errorf("typo: %v", err)
	}
}

func TestValidate(t *testing.T) {
	cases := map[string]func(*Config){
		"dns.timeout":     func(c *Config) { c.DNS.Timeout = -1 },
		"spf.timeout":     func(c *Config) { c.SPF.Timeout = -time.Second },
		"iprev.max_names": func(c *Config) { c.IPRev.MaxNames = -1 },
		"min_rsa_bits":    func(c *Config) { c.DKIM.MinRSABits = 512 },
		"dmarc.enable":    func(c *Config) { c.DKIM.Enable = false },
		"not a domain":    func(c *Config) { c.DNSBL.Zones = []dnsbl.Zone{{Zone: "nodot"}} },
	}
	for want, mod := range cases {
		cfg := DefaultConfig()
		mod(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", want, err)
		}
		if _, err := New(cfg, nil); err == nil {
			t.Errorf("%s: New accepted it", want)
		}
	}
	if _, err := New(DefaultConfig(), nil); err == nil {
		t.Error("New without a resolver")
	}
}

func BenchmarkClient(b *testing.B) {
	f := newFixture(b, listsConfig())
	ctx := context.Background()
	ip := netip.MustParseAddr("192.0.2.1")
	f.suite.Client(ctx, ip)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if rev, _ := f.suite.Client(ctx, ip); rev.Result != "pass" {
				b.Fatalf("%+v", rev)
			}
		}
	})
}

func BenchmarkMessage(b *testing.B) {
	f := newFixture(b, listsConfig())
	ctx := context.Background()
	signed := []byte(f.sign(b, testMessage))
	spfRes := f.suite.SPF(ctx, netip.MustParseAddr("192.0.2.1"), "mx.example.test", "alice@example.test")
	b.ReportAllocs()
	b.SetBytes(int64(len(signed)))
	for b.Loop() {
		m := f.suite.Message()
		m.Write(signed)
		if _, dm := m.Finish(ctx, spfRes); dm.Result != "pass" {
			b.Fatalf("%+v", dm)
		}
		m.Close()
	}
}
