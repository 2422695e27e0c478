package dnsbl

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

// Each list holds the RFC 5782 section 5 test entries: 127.0.0.2 (and
// ::FFFF:7F00:2 in nibble form) listed, 127.0.0.1 not; TEST listed and
// INVALID not on domain lists.
const zone = `
$TTL 300
$ORIGIN bl.test.
@ IN SOA ns hostmaster 1 3600 600 86400 60
2.0.0.127 IN A 127.0.0.2
2.0.0.127 IN TXT "test entry"
2.0.0.0.0.0.f.7.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0 IN A 127.0.0.2
10.2.0.192 IN A 127.0.0.2
10.2.0.192 IN A 127.0.0.4
10.2.0.192 IN A 127.0.0.9
2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2 IN A 127.0.0.3
20.2.0.192 IN A 127.255.255.254
21.2.0.192 IN A 192.0.2.1
$ORIGIN wl.test.
@ IN SOA ns hostmaster 1 3600 600 86400 60
2.0.0.127 IN A 127.0.0.2
11.2.0.192 IN A 127.0.10.1
$ORIGIN dbl.test.
@ IN SOA ns hostmaster 1 3600 600 86400 60
test IN A 127.0.1.2
spam.example IN A 127.0.1.2
$ORIGIN slow.test.
@ IN SOA ns hostmaster 1 3600 600 86400 60
`

func start(t testing.TB, cfg Config) (*testenv.DNSServer, *Checker) {
	t.Helper()
	srv := testenv.StartDNS(t, zone)
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 200 * time.Millisecond, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(r, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return srv, c
}

var cfg = Config{
	Zones: []Zone{
		{Zone: "bl.test", Codes: map[string]string{"127.0.0.2": "sbl", "127.0.0.4": "xbl", "127.0.0.3": "v6"}},
		{Zone: "WL.test.", Allow: true},
	},
	DomainZones: []Zone{{Zone: "dbl.test", Codes: map[string]string{"127.0.1.2": "spam-domain"}}},
}

func TestReverse(t *testing.T) {
	// RFC 5782 section 2.4's form, on the section 5 test address.
	got := Reverse(netip.MustParseAddr("::FFFF:7F00:2"))
	if want := "2.0.0.0.0.0.f.7.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0"; got != want {
		t.Errorf("reverse = %s", got)
	}
	if got := Reverse(netip.MustParseAddr("192.0.2.99")); got != "99.2.0.192" {
		t.Errorf("reverse v4 = %s", got)
	}
}

func TestCheckIP(t *testing.T) {
	_, c := start(t, cfg)
	ctx := context.Background()
	cases := []struct {
		ip   string
		want string
	}{
		{"127.0.0.2", "bl.test=[127.0.0.2] [sbl] allow=false; wl.test=[127.0.0.2] [] allow=true"},
		{"127.0.0.1", ""},
		{"::ffff:127.0.0.2", "bl.test=[127.0.0.2] [sbl] allow=false; wl.test=[127.0.0.2] [] allow=true"},
		{"192.0.2.10", "bl.test=[127.0.0.2 127.0.0.4 127.0.0.9] [sbl xbl] allow=false"},
		{"192.0.2.11", "wl.test=[127.0.10.1] [] allow=true"},
		{"2001:db8::2", "bl.test=[127.0.0.3] [v6] allow=false"},
		{"2001:db8::3", ""},
	}
	for _, tc := range cases {
		res := c.CheckIP(ctx, netip.MustParseAddr(tc.ip))
		var parts []string
		for _, r := range res {
			if r.Error != "" {
				t.Errorf("%s: %s: %s", tc.ip, r.Zone, r.Error)
			}
			if r.Query != tc.ip {
				t.Errorf("%s: Query = %q", tc.ip, r.Query)
			}
			parts = append(parts, fmt.Sprintf("%s=%v %v allow=%v", r.Zone, r.Codes, r.Names, r.Allow))
		}
		if got := strings.Join(parts, "; "); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.ip, got, tc.want)
		}
	}
	if res := c.CheckIP(ctx, netip.Addr{}); res != nil {
		t.Errorf("invalid IP: %v", res)
	}
}

func TestUntrustworthyAnswersAreErrors(t *testing.T) {
	_, c := start(t, cfg)
	for _, ip := range []string{"192.0.2.20", "192.0.2.21"} {
		res := c.CheckIP(context.Background(), netip.MustParseAddr(ip))
		if len(res) != 1 || res[0].Error == "" || len(res[0].Codes) != 0 {
			t.Errorf("%s: %+v, want one error result", ip, res)
		}
	}
}

func TestDNSTroubleIsAnError(t *testing.T) {
	srv, c := start(t, cfg)
	srv.ServFail("5.2.0.192.bl.test")
	srv.Drop("5.2.0.192.wl.test")
	res := c.CheckIP(context.Background(), netip.MustParseAddr("192.0.2.5"))
	if len(res) != 2 {
		t.Fatalf("%+v", res)
	}
	for _, r := range res {
		if r.Error == "" || len(r.Codes) != 0 {
			t.Errorf("%+v: want an error and no codes", r)
		}
	}
	if !strings.Contains(res[0].Error, "server failure") || !strings.Contains(res[1].Error, "timed out") {
		t.Errorf("errors: %q, %q", res[0].Error, res[1].Error)
	}
}

func TestCheckDomains(t *testing.T) {
	srv, c := start(t, cfg)
	res := c.CheckDomains(context.Background(), "TEST", "test.", "invalid", "Spam.Example.", "[192.0.2.1]", "192.0.2.1", "localhost", "ok.example", "spam.example", "a..b")
	var parts []string
	for _, r := range res {
		parts = append(parts, fmt.Sprintf("%s:%s=%v%v", r.Query, r.Zone, r.Codes, r.Names))
	}
	// "TEST" is a single label: only real domains are asked about.
	if got, want := strings.Join(parts, " "), "Spam.Example.:dbl.test=[127.0.1.2][spam-domain]"; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if n := srv.Queries("spam.example.dbl.test", dns.TypeA); n != 1 {
		t.Errorf("spam.example asked %d times, want 1 (repeats skipped)", n)
	}
	if n := srv.Queries("1.2.0.192.dbl.test", dns.TypeA) + srv.Queries("192.0.2.1.dbl.test", dns.TypeA); n != 0 {
		t.Errorf("an address literal was queried")
	}
	// The RFC 5782 section 5 entries of a domain list: TEST listed, INVALID
	// not (CheckDomains never sends single labels, so ask the list directly).
	if r := c.one(context.Background(), c.domains[0], "test", "test"); r == nil || len(r.Codes) != 1 {
		t.Errorf("TEST: %+v", r)
	}
	if r := c.one(context.Background(), c.domains[0], "invalid", "invalid"); r != nil {
		t.Errorf("INVALID: %+v", r)
	}
}

func TestZonesAreQueriedAtOnce(t *testing.T) {
	var zs []Zone
	var text strings.Builder
	for i := range 5 {
		name := fmt.Sprintf("z%d.test", i)
		zs = append(zs, Zone{Zone: name})
		fmt.Fprintf(&text, "2.0.0.127.%s. 300 IN A 127.0.0.2\n", name)
	}
	srv := testenv.StartDNS(t, text.String())
	for _, z := range zs {
		srv.Delay("2.0.0.127."+z.Zone, 300*time.Millisecond)
	}
	r, _ := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 2 * time.Second})
	c, err := New(r, Config{Zones: zs})
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	res := c.CheckIP(context.Background(), netip.MustParseAddr("127.0.0.2"))
	// One after another would take at least 1.5s.
	if d := time.Since(begin); d > 1200*time.Millisecond {
		t.Errorf("5 lists delayed 300ms each took %v", d)
	}
	if len(res) != 5 || res[0].Zone != "z0.test" || res[4].Zone != "z4.test" {
		t.Errorf("results not in config order: %+v", res)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, bad := range []Config{
		{Zones: []Zone{{Zone: ""}}},
		{Zones: []Zone{{Zone: "nodot"}}},
		{Zones: []Zone{{Zone: "a..b"}}},
		{Zones: []Zone{{Zone: "x.test"}, {Zone: "X.test."}}},
		{Zones: []Zone{{Zone: "x.test", Codes: map[string]string{"not-an-ip": "x"}}}},
		{Zones: []Zone{{Zone: "x.test", Codes: map[string]string{"::1": "x"}}}},
		{DomainZones: []Zone{{Zone: "x.test", Codes: map[string]string{"127.0.0.2": " "}}}},
	} {
		if _, err := New(nil, bad); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

// FuzzServedAnswer serves arbitrary A records as a list's answer and
// arbitrary names to the domain list: codes only ever come from 127/8,
// anything else is an error result.
func FuzzServedAnswer(f *testing.F) {
	srv := testenv.StartDNS(f, zone)
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, CacheSize: -1, Timeout: 200 * time.Millisecond, Retries: -1})
	if err != nil {
		f.Fatal(err)
	}
	c, err := New(r, cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{127, 0, 0, 2, 127, 255, 255, 254}, "example.com")
	f.Add([]byte{10, 0, 0, 1}, "[1.2.3.4]")
	f.Fuzz(func(t *testing.T, answers []byte, name string) {
		var text strings.Builder
		text.WriteString(zone)
		for i := 0; i+4 <= len(answers) && i < 64; i += 4 {
			fmt.Fprintf(&text, "77.2.0.192.bl.test. 300 IN A %d.%d.%d.%d\n", answers[i], answers[i+1], answers[i+2], answers[i+3])
		}
		if srv.SetZone(text.String()) != nil {
			t.Fatal("zone rejected")
		}
		for _, res := range c.CheckIP(context.Background(), netip.MustParseAddr("192.0.2.77")) {
			if res.Error != "" && len(res.Codes) > 0 {
				t.Errorf("error with codes: %+v", res)
			}
			for _, code := range res.Codes {
				if !strings.HasPrefix(code, "127.") || strings.HasPrefix(code, "127.255.255.") {
					t.Errorf("code %s reported as a listing", code)
				}
			}
		}
		c.CheckDomains(context.Background(), name)
	})
}

func BenchmarkCheckIP(b *testing.B) {
	_, c := start(b, cfg)
	ip := netip.MustParseAddr("192.0.2.10")
	ctx := context.Background()
	c.CheckIP(ctx, ip)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if res := c.CheckIP(ctx, ip); len(res) != 1 {
				b.Fatalf("%+v", res)
			}
		}
	})
}

func BenchmarkCheckDomains(b *testing.B) {
	_, c := start(b, cfg)
	ctx := context.Background()
	c.CheckDomains(ctx, "mail.example.org", "spam.example")
	b.ReportAllocs()
	for b.Loop() {
		if res := c.CheckDomains(ctx, "mail.example.org", "spam.example"); len(res) != 1 {
			b.Fatalf("%+v", res)
		}
	}
}

// A bitmask names bits of the last octet, after the exact code's name;
// each name once.
func TestBitmaskNames(t *testing.T) {
	_, c := start(t, Config{Zones: []Zone{{Zone: "bl.test", Codes: map[string]string{"127.0.0.2": "sbl"}, Bitmask: map[int]string{1: "odd", 8: "eight", 2: "two"}}}})
	res := c.CheckIP(context.Background(), netip.MustParseAddr("192.0.2.10"))
	if len(res) != 1 {
		t.Fatalf("%+v", res)
	}
	// 127.0.0.2: sbl, then bit 2; 127.0.0.4: none; 127.0.0.9: bits 1 and 8.
	if got, want := strings.Join(res[0].Names, ","), "sbl,two,odd,eight"; got != want {
		t.Errorf("names %s, want %s", got, want)
	}
	if err := (Config{Zones: []Zone{{Zone: "x.test", Bitmask: map[int]string{0: "x"}}}}).Validate(); err == nil || !strings.Contains(err.Error(), "zones[0].bitmask.0") {
		t.Errorf("bitmask 0: %v", err)
	}
}
