package iprev

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
$TTL 300
$ORIGIN example.test.
@       IN SOA ns hostmaster 1 3600 600 86400 60
good    IN A    192.0.2.1
good    IN A    192.0.2.6
good    IN AAAA 2001:db8::1
four    IN A    192.0.2.4
other   IN A    198.51.100.1
alias   IN CNAME four
broken  IN A    192.0.2.99
sf      IN A    192.0.2.5
$ORIGIN 2.0.192.in-addr.arpa.
@       IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 60
1       IN PTR GOOD.example.test.
2       IN PTR other.example.test.
3       IN PTR nowhere.example.test.
4       IN PTR alias.example.test.
5       IN PTR sf.example.test.
6       IN PTR other.example.test.
6       IN PTR good.example.test.
7       IN TXT "no ptr here"
8       IN PTR sf.example.test.
8       IN PTR other.example.test.
$ORIGIN 8.b.d.0.1.0.0.2.ip6.arpa.
1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0 IN PTR good.example.test.
`

func start(t testing.TB) (*testenv.DNSServer, *Checker) {
	t.Helper()
	srv := testenv.StartDNS(t, zone)
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 200 * time.Millisecond, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	return srv, New(r, Options{})
}

func TestCheck(t *testing.T) {
	srv, c := start(t)
	srv.ServFail("sf.example.test")
	srv.ServFail("9.2.0.192.in-addr.arpa")
	srv.Drop("10.2.0.192.in-addr.arpa")
	cases := []struct {
		ip     string
		result string
		ptr    string
		fcrdns bool
		names  int
	}{
		{"192.0.2.1", "pass", "good.example.test", true, 1},
		{"::ffff:192.0.2.1", "pass", "good.example.test", true, 1},
		{"2001:db8::1", "pass", "good.example.test", true, 1},
		{"192.0.2.2", "fail", "other.example.test", false, 1},   // forward gives another address
		{"192.0.2.3", "fail", "nowhere.example.test", false, 1}, // forward NXDOMAIN
		{"192.0.2.4", "pass", "alias.example.test", true, 1},    // forward through a CNAME
		{"192.0.2.6", "pass", "good.example.test", true, 2},     // the second name confirms
		{"192.0.2.5", "temperror", "sf.example.test", false, 1}, // forward SERVFAIL: unknown
		{"192.0.2.8", "temperror", "sf.example.test", false, 2},
		{"192.0.2.7", "permerror", "", false, 0},   // NODATA
		{"192.0.2.200", "permerror", "", false, 0}, // NXDOMAIN
		{"192.0.2.9", "temperror", "", false, 0},   // PTR SERVFAIL
		{"192.0.2.10", "temperror", "", false, 0},  // PTR timeout
	}
	for _, tc := range cases {
		res := c.Check(context.Background(), netip.MustParseAddr(tc.ip))
		if res.Result != tc.result || res.PTR != tc.ptr || res.FCrDNS != tc.fcrdns || len(res.Names) != tc.names {
			t.Errorf("%s: %+v, want %s ptr=%q fcrdns=%v names=%d", tc.ip, res, tc.result, tc.ptr, tc.fcrdns, tc.names)
		}
	}
	if res := c.Check(context.Background(), netip.Addr{}); res.Result != "permerror" {
		t.Errorf("invalid IP: %+v", res)
	}
	// An IPv6 client is confirmed by AAAA only.
	if n := srv.Queries("good.example.test", dns.TypeAAAA); n != 1 {
		t.Errorf("AAAA queries for good = %d, want 1", n)
	}
}

func TestMaxNames(t *testing.T) {
	var z strings.Builder
	z.WriteString("$ORIGIN example.test.\n")
	for i := range 12 {
		fmt.Fprintf(&z, "n%d IN A 198.51.100.%d\n", i, 100+i)
		fmt.Fprintf(&z, "1.100.51.198.in-addr.arpa. IN PTR n%d.example.test.\n", i)
	}
	z.WriteString("n11 IN A 198.51.100.1\n") // only the 12th name confirms
	srv := testenv.StartDNS(t, z.String())
	r, _ := resolver.New(resolver.Config{Servers: []string{srv.Addr()}})
	ip := netip.MustParseAddr("198.51.100.1")
	if res := New(r, Options{}).Check(context.Background(), ip); res.Result != "fail" || len(res.Names) != 12 {
		t.Errorf("default limit 10: %+v", res)
	}
	if n := srv.Queries("n11.example.test", dns.TypeA); n != 0 {
		t.Errorf("12th name looked up %d times", n)
	}
	if res := New(r, Options{MaxNames: 12}).Check(context.Background(), ip); res.Result != "pass" || res.PTR != "n11.example.test" {
		t.Errorf("limit 12: %+v", res)
	}
}

func TestContextCancelled(t *testing.T) {
	srv, c := start(t)
	srv.Delay("1.2.0.192.in-addr.arpa", time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if res := c.Check(ctx, netip.MustParseAddr("192.0.2.1")); res.Result != "temperror" {
		t.Errorf("%+v", res)
	}
}

// FuzzServedPTR serves arbitrary PTR targets and checks the result is one
// of the four, with FCrDNS only on pass.
func FuzzServedPTR(f *testing.F) {
	srv := testenv.StartDNS(f, zone)
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, CacheSize: -1, Timeout: 200 * time.Millisecond, Retries: -1})
	if err != nil {
		f.Fatal(err)
	}
	c := New(r, Options{})
	f.Add("good.example.test.", "192.0.2.50")
	f.Add("x\\032y.example.test.", "192.0.2.50")
	f.Fuzz(func(t *testing.T, target, addr string) {
		rr := &dns.PTR{Hdr: dns.RR_Header{Name: "50.2.0.192.in-addr.arpa.", Rrtype: dns.TypePTR, Class: dns.ClassINET}, Ptr: target}
		a := &dns.A{Hdr: dns.RR_Header{Name: target, Rrtype: dns.TypeA, Class: dns.ClassINET}}
		if ip, err := netip.ParseAddr(addr); err == nil && ip.Is4() {
			a.A = ip.AsSlice()
		}
		text := zone + rr.String() + "\n"
		if a.A != nil {
			text += a.String() + "\n"
		}
		if srv.SetZone(text) != nil {
			return
		}
		res := c.Check(context.Background(), netip.MustParseAddr("192.0.2.50"))
		switch res.Result {
		case "pass":
			if !res.FCrDNS {
				t.Errorf("pass without FCrDNS: %+v", res)
			}
		case "fail", "temperror", "permerror":
			if res.FCrDNS {
				t.Errorf("%s with FCrDNS: %+v", res.Result, res)
			}
		default:
			t.Errorf("result %q", res.Result)
		}
	})
}

func BenchmarkCheck(b *testing.B) {
	_, c := start(b)
	ip := netip.MustParseAddr("192.0.2.1")
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if res := c.Check(ctx, ip); res.Result != "pass" {
				b.Fatalf("%+v", res)
			}
		}
	})
}
