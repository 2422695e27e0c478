package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mailward/mailward/internal/testenv"
)

const zone = `
$ORIGIN example.test.
$TTL 300
@        3600 IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 60
@        IN NS   ns
@        IN MX   20 mx2
@        IN MX   10 mx1
@        IN TXT  "v=spf1 " "ip4:192.0.2.0/24 " "-all"
@        IN TXT  "other"
host     IN A    192.0.2.1
host     IN AAAA 2001:db8::1
v6only   IN AAAA 2001:db8::2
short 5  IN A    192.0.2.5
alias    IN CNAME host
alias2   IN CNAME alias
away     IN CNAME target.elsewhere.invalid.
deep.ent.sub IN A 192.0.2.9
*.wild   IN A    192.0.2.7
mx1      IN A    192.0.2.10
mx2      IN A    192.0.2.20
signed   IN A    192.0.2.30
slow     IN A    192.0.2.40
esc      IN TXT  "a\"b\\c\195\175\000d" "e f"
`

const reverse = `
$ORIGIN 2.0.192.in-addr.arpa.
@  3600 IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 60
1  300  IN PTR host.example.test.
1  300  IN PTR other.example.test.
`

func start(t testing.TB, extra string) (*testenv.DNSServer, *Resolver) {
	t.Helper()
	srv := testenv.StartDNS(t, zone+reverse+extra)
	r, err := New(Config{Servers: []string{srv.Addr()}, Timeout: 300 * time.Millisecond, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	return srv, r
}

func TestLookups(t *testing.T) {
	_, r := start(t, "")
	ctx := context.Background()

	txt, err := r.LookupTXT(ctx, "example.test")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(txt, "|") != "v=spf1 ip4:192.0.2.0/24 -all|other" && strings.Join(txt, "|") != "other|v=spf1 ip4:192.0.2.0/24 -all" {
		t.Errorf("TXT = %q", txt)
	}

	// TXT data are bytes: escapes in the answer's presentation form are undone.
	txt, err = r.LookupTXT(ctx, "esc.example.test")
	if err != nil || len(txt) != 1 || txt[0] != "a\"b\\c\xc3\xaf\x00de f" {
		t.Errorf("escaped TXT = %q, %v", txt, err)
	}

	ips, err := r.LookupIP(ctx, "HOST.example.test.")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}
	if fmt.Sprint(ips) != fmt.Sprint(want) {
		t.Errorf("LookupIP = %v, want %v", ips, want)
	}

	ips, err = r.LookupIP(ctx, "v6only.example.test")
	if err != nil || fmt.Sprint(ips) != "[2001:db8::2]" {
		t.Errorf("LookupIP(v6only) = %v, %v", ips, err)
	}

	mxs, err := r.LookupMX(ctx, "example.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(mxs) != 2 || mxs[0].Host != "mx1.example.test" || mxs[0].Pref != 10 || mxs[1].Host != "mx2.example.test" {
		t.Errorf("MX = %+v %+v", mxs[0], mxs[1])
	}

	names, err := r.LookupAddr(ctx, netip.MustParseAddr("192.0.2.1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 2 || names[0] != "host.example.test" || names[1] != "other.example.test" {
		t.Errorf("PTR = %q", names)
	}
	// A v4-mapped address is looked up as IPv4.
	if names, err := r.LookupAddr(ctx, netip.MustParseAddr("::ffff:192.0.2.1")); err != nil || len(names) != 2 {
		t.Errorf("PTR of mapped address = %q, %v", names, err)
	}

	ans, err := r.Query(ctx, "alias2.example.test", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if len(ans.RRs) != 1 || ans.RRs[0].(*dns.A).A.String() != "192.0.2.1" {
		t.Errorf("CNAME chain answer = %v", ans.RRs)
	}

	ans, err = r.Query(ctx, "anything.wild.example.test", dns.TypeA)
	if err != nil || len(ans.RRs) != 1 {
		t.Errorf("wildcard = %v, %v", ans, err)
	}
}

func TestNegativeAnswersStayDistinct(t *testing.T) {
	_, r := start(t, "")
	ctx := context.Background()
	cases := []struct {
		name  string
		qtype uint16
		kind  error
	}{
		{"nope.example.test", dns.TypeA, ErrNXDomain},
		{"host.example.test", dns.TypeMX, ErrNoData},
		{"ent.sub.example.test", dns.TypeA, ErrNoData}, // empty non-terminal
		{"v6only.example.test", dns.TypeA, ErrNoData},
		{"alias.example.test", dns.TypeTXT, ErrNoData},
		{"away.example.test", dns.TypeA, ErrNXDomain}, // CNAME chased to a name that does not exist
	}
	for _, c := range cases {
		_, err := r.Query(ctx, c.name, c.qtype)
		if !errors.Is(err, c.kind) {
			t.Errorf("%s %s: err = %v, want %v", c.name, dns.TypeToString[c.qtype], err, c.kind)
		}
		if !IsNotFound(err) || IsTemporary(err) {
			t.Errorf("%s: IsNotFound = %v, IsTemporary = %v", c.name, IsNotFound(err), IsTemporary(err))
		}
		if !strings.Contains(err.Error(), c.name) {
			t.Errorf("error %q does not name %s", err, c.name)
		}
	}
	// LookupIP: NXDOMAIN from both families stays NXDOMAIN; a name with
	// neither family is NODATA.
	if _, err := r.LookupIP(ctx, "nope.example.test"); !errors.Is(err, ErrNXDomain) {
		t.Errorf("LookupIP(nope) = %v", err)
	}
	if _, err := r.LookupIP(ctx, "example.test"); !errors.Is(err, ErrNoData) {
		t.Errorf("LookupIP(apex) = %v", err)
	}
}

func TestFailures(t *testing.T) {
	srv, r := start(t, "")
	ctx := context.Background()

	srv.ServFail("host.example.test")
	_, err := r.Query(ctx, "host.example.test", dns.TypeA)
	if !errors.Is(err, ErrServFail) || !IsTemporary(err) || IsNotFound(err) {
		t.Errorf("SERVFAIL: %v", err)
	}
	if _, err := r.LookupIP(ctx, "host.example.test"); !errors.Is(err, ErrServFail) {
		t.Errorf("LookupIP under SERVFAIL: %v", err)
	}
	// Temporary failures are not cached.
	srv.Reset("host.example.test")
	if _, err := r.Query(ctx, "host.example.test", dns.TypeA); err != nil {
		t.Errorf("after Reset: %v", err)
	}

	srv.Refuse("mx1.example.test")
	if _, err := r.Query(ctx, "mx1.example.test", dns.TypeA); !errors.Is(err, ErrRefused) || !IsTemporary(err) {
		t.Errorf("REFUSED: %v", err)
	}

	srv.Drop("mx2.example.test")
	begin := time.Now()
	_, err = r.Query(ctx, "mx2.example.test", dns.TypeA)
	if !errors.Is(err, ErrTimeout) || !IsTemporary(err) {
		t.Errorf("dropped: %v", err)
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("timeout took %v with a 300ms timeout and no retries", d)
	}
	if n := srv.Queries("mx2.example.test", dns.TypeA); n != 1 {
		t.Errorf("dropped name queried %d times, want 1 (retries: none)", n)
	}
}

func TestRetries(t *testing.T) {
	srv := testenv.StartDNS(t, zone)
	r, err := New(Config{Servers: []string{srv.Addr()}, Timeout: 100 * time.Millisecond, Retries: 2})
	if err != nil {
		t.Fatal(err)
	}
	srv.Drop("host.example.test")
	if _, err := r.Query(context.Background(), "host.example.test", dns.TypeA); !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v", err)
	}
	if n := srv.Queries("host.example.test", dns.TypeA); n != 3 {
		t.Errorf("queried %d times, want 1 + 2 retries", n)
	}
	// SERVFAIL is an answer: no retry against the same server.
	srv.ServFail("mx1.example.test")
	r.Query(context.Background(), "mx1.example.test", dns.TypeA)
	if n := srv.Queries("mx1.example.test", dns.TypeA); n != 1 {
		t.Errorf("SERVFAIL queried %d times, want 1", n)
	}
}

func TestFailoverToNextServer(t *testing.T) {
	srv := testenv.StartDNS(t, zone)
	// A UDP port with nothing behind it: the kernel answers port unreachable.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close()
	r, err := New(Config{Servers: []string{dead, srv.Addr()}, Timeout: 300 * time.Millisecond, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Query(context.Background(), "host.example.test", dns.TypeA); err != nil {
		t.Fatalf("second server not used: %v", err)
	}
	// Only the dead server: a network error, temporary.
	r2, _ := New(Config{Servers: []string{dead}, Timeout: 300 * time.Millisecond, Retries: -1})
	_, err = r2.Query(context.Background(), "host.example.test", dns.TypeA)
	if !IsTemporary(err) || IsNotFound(err) {
		t.Errorf("dead server: %v", err)
	}
}

func TestTruncationFallsBackToTCP(t *testing.T) {
	// A TXT set too big for a 1232-byte UDP answer.
	var big strings.Builder
	for i := range 20 {
		fmt.Fprintf(&big, "big.example.test. 300 IN TXT \"%s%02d\"\n", strings.Repeat("x", 100), i)
	}
	srv, r := start(t, big.String())
	ctx := context.Background()

	srv.Truncate("host.example.test")
	ans, err := r.Query(ctx, "host.example.test", dns.TypeA)
	if err != nil || len(ans.RRs) != 1 {
		t.Fatalf("truncated: %v, %v", ans, err)
	}
	if n := srv.Queries("host.example.test", dns.TypeA); n != 2 {
		t.Errorf("queries = %d, want 2 (UDP then TCP)", n)
	}

	txt, err := r.LookupTXT(ctx, "big.example.test")
	if err != nil || len(txt) != 20 {
		t.Fatalf("big TXT: %d records, %v", len(txt), err)
	}
	if n := srv.Queries("big.example.test", dns.TypeTXT); n != 2 {
		t.Errorf("big TXT queries = %d, want 2 (UDP truncated, then TCP)", n)
	}
}

func TestCacheByTTL(t *testing.T) {
	srv, r := start(t, "")
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	r.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	ctx := context.Background()

	ans, err := r.Query(ctx, "short.example.test", dns.TypeA)
	if err != nil || ans.TTL != 5 {
		t.Fatalf("first: %v, %v", ans, err)
	}
	advance(2 * time.Second)
	ans, err = r.Query(ctx, "short.example.test", dns.TypeA)
	if err != nil || ans.TTL != 3 {
		t.Fatalf("cached TTL = %v, %v; want 3 left", ans, err)
	}
	if n := srv.Queries("short.example.test", dns.TypeA); n != 1 {
		t.Errorf("queries = %d, want 1 (second from cache)", n)
	}
	advance(4 * time.Second)
	if _, err := r.Query(ctx, "short.example.test", dns.TypeA); err != nil {
		t.Fatal(err)
	}
	if n := srv.Queries("short.example.test", dns.TypeA); n != 2 {
		t.Errorf("queries = %d, want 2 after expiry", n)
	}

	// Names are case-insensitive and the trailing dot optional: one entry.
	r.Query(ctx, "SHORT.Example.Test.", dns.TypeA)
	if n := srv.Queries("short.example.test", dns.TypeA); n != 2 {
		t.Errorf("queries = %d, want 2 (same name, other spelling)", n)
	}
}

func TestNegativeCachingUsesSOAMinimum(t *testing.T) {
	srv, r := start(t, "")
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	r.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	ctx := context.Background()

	// SOA TTL 3600, minimum 60: negative answers live 60s (RFC 2308 section 5).
	for _, c := range []struct {
		name  string
		qtype uint16
		kind  error
	}{{"nope.example.test", dns.TypeA, ErrNXDomain}, {"host.example.test", dns.TypeMX, ErrNoData}} {
		for range 3 {
			if _, err := r.Query(ctx, c.name, c.qtype); !errors.Is(err, c.kind) {
				t.Fatalf("%s: %v", c.name, err)
			}
		}
		if n := srv.Queries(c.name, c.qtype); n != 1 {
			t.Errorf("%s queried %d times, want 1", c.name, n)
		}
	}
	advance(59 * time.Second)
	r.Query(ctx, "nope.example.test", dns.TypeA)
	if n := srv.Queries("nope.example.test", dns.TypeA); n != 1 {
		t.Errorf("queried %d times within the negative TTL", n)
	}
	advance(2 * time.Second)
	r.Query(ctx, "nope.example.test", dns.TypeA)
	if n := srv.Queries("nope.example.test", dns.TypeA); n != 2 {
		t.Errorf("queried %d times after the negative TTL, want 2", n)
	}
}

func TestCacheIsBounded(t *testing.T) {
	srv := testenv.StartDNS(t, zone)
	r, err := New(Config{Servers: []string{srv.Addr()}, CacheSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, n := range []string{"host", "mx1", "mx2", "mx2", "mx1"} {
		if _, err := r.Query(ctx, n+".example.test", dns.TypeA); err != nil {
			t.Fatal(err)
		}
	}
	if r.cache.len() != 2 {
		t.Errorf("cache holds %d, want 2", r.cache.len())
	}
	r.Query(ctx, "host.example.test", dns.TypeA) // evicted by mx2
	if n := srv.Queries("host.example.test", dns.TypeA); n != 2 {
		t.Errorf("host queried %d times, want 2 (evicted)", n)
	}
	if n := srv.Queries("mx1.example.test", dns.TypeA); n != 1 {
		t.Errorf("mx1 queried %d times, want 1 (kept)", n)
	}

	off, _ := New(Config{Servers: []string{srv.Addr()}, CacheSize: -1})
	off.Query(ctx, "signed.example.test", dns.TypeA)
	off.Query(ctx, "signed.example.test", dns.TypeA)
	if n := srv.Queries("signed.example.test", dns.TypeA); n != 2 {
		t.Errorf("cache disabled: queried %d times, want 2", n)
	}
}

func TestConcurrentQueriesShareOneLookup(t *testing.T) {
	srv := testenv.StartDNS(t, zone)
	r, err := New(Config{Servers: []string{srv.Addr()}, CacheSize: -1}) // no cache: only the flight can dedupe
	if err != nil {
		t.Fatal(err)
	}
	srv.Delay("slow.example.test", 200*time.Millisecond)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ans, err := r.Query(context.Background(), "slow.example.test", dns.TypeA)
			if err == nil && len(ans.RRs) != 1 {
				err = fmt.Errorf("answer %v", ans.RRs)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := srv.Queries("slow.example.test", dns.TypeA); n != 1 {
		t.Errorf("server saw %d queries, want 1", n)
	}
}

func TestContextIsHonoured(t *testing.T) {
	srv := testenv.StartDNS(t, zone)
	r, err := New(Config{Servers: []string{srv.Addr()}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv.Drop("host.example.test")

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	begin := time.Now()
	_, err = r.Query(ctx, "host.example.test", dns.TypeA)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: %v", err)
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("returned after %v, deadline was 100ms", d)
	}

	ctx, cancel = context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err = r.Query(ctx, "host.example.test", dns.TypeAAAA)
	if !errors.Is(err, context.Canceled) || !IsTemporary(err) {
		t.Errorf("cancel: %v", err)
	}
}

func TestADBit(t *testing.T) {
	srv, r := start(t, "")
	srv.Authenticated("signed.example.test")
	ans, err := r.Query(context.Background(), "signed.example.test", dns.TypeA)
	if err != nil || !ans.AD {
		t.Errorf("signed: %+v, %v", ans, err)
	}
	ans, err = r.Query(context.Background(), "host.example.test", dns.TypeA)
	if err != nil || ans.AD {
		t.Errorf("unsigned: %+v, %v", ans, err)
	}
}

func TestBadNames(t *testing.T) {
	srv, r := start(t, "")
	for _, name := range []string{"", "a..b", strings.Repeat("x", 64) + ".test", strings.Repeat("abcdefghi.", 30)} {
		_, err := r.Query(context.Background(), name, dns.TypeA)
		if !errors.Is(err, ErrNXDomain) {
			t.Errorf("%q: %v", name, err)
		}
	}
	if n := srv.Queries("a..b", dns.TypeA); n != 0 {
		t.Errorf("bad name was sent")
	}
	if _, err := r.LookupAddr(context.Background(), netip.Addr{}); !IsNotFound(err) {
		t.Errorf("zero address: %v", err)
	}
}

func TestConfig(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1":       "127.0.0.1:53",
		"127.0.0.1:5353":  "127.0.0.1:5353",
		"::1":             "[::1]:53",
		"[::1]:5353":      "[::1]:5353",
		"dns.example":     "dns.example:53",
		"dns.example:853": "dns.example:853",
	} {
		got, err := serverAddr(in)
		if err != nil || got != want {
			t.Errorf("serverAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", ":53", "a b", "1.2.3.4:"} {
		if _, err := New(Config{Servers: []string{bad}}); err == nil {
			t.Errorf("New accepted server %q", bad)
		}
	}
	if _, err := New(Config{Servers: []string{"127.0.0.1"}, Timeout: -time.Second}); err == nil {
		t.Error("New accepted a negative timeout")
	}
	r, err := New(Config{Servers: []string{"127.0.0.1"}})
	if err != nil || r.timeout != defaultTimeout || r.retries != defaultRetries || r.cache.max != defaultCacheSize {
		t.Errorf("defaults: %+v, %v", r, err)
	}
}

// FuzzParse feeds arbitrary answers to the answer parser: it must not panic
// and must classify every answer one way.
func FuzzParse(f *testing.F) {
	m := new(dns.Msg)
	m.SetQuestion("a.example.", dns.TypeA)
	m.Answer = append(m.Answer, &dns.CNAME{Hdr: dns.RR_Header{Name: "a.example.", Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 5}, Target: "b.example."})
	b, _ := m.Pack()
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		var m dns.Msg
		if m.Unpack(data) != nil || len(m.Question) == 0 {
			return
		}
		q := m.Question[0]
		out := parse(&m, strings.ToLower(q.Name), q.Qtype)
		if len(out.rrs) > 0 && (out.kind != nil || out.chase != "") {
			t.Errorf("records and a negative result: %+v", out)
		}
		if len(out.rrs) == 0 && out.kind == nil && out.chase == "" {
			t.Errorf("no records, no result: %+v", out)
		}
	})
}

// FuzzTXTRoundTrip serves arbitrary bytes as a TXT record: LookupTXT must
// give back exactly those bytes, whatever escaping the wire form needed.
func FuzzTXTRoundTrip(f *testing.F) {
	srv := testenv.StartDNS(f, zone)
	r, err := New(Config{Servers: []string{srv.Addr()}, CacheSize: -1})
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("v=spf1 -all"))
	f.Add([]byte("a\"b\\c\x00\xff\\065"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || len(data) > 2000 {
			return
		}
		var parts []string
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 255)
			var b strings.Builder
			b.WriteByte('"')
			for _, c := range rest[:n] {
				if c == '"' || c == '\\' || c < ' ' || c > '~' {
					fmt.Fprintf(&b, "\\%03d", c)
				} else {
					b.WriteByte(c)
				}
			}
			b.WriteByte('"')
			parts = append(parts, b.String())
			rest = rest[n:]
		}
		if err := srv.SetZone("rt.example.test. 60 IN TXT " + strings.Join(parts, " ") + "\n"); err != nil {
			t.Fatalf("zone: %v", err)
		}
		txt, err := r.LookupTXT(context.Background(), "rt.example.test")
		if err != nil {
			t.Fatal(err)
		}
		if len(txt) != 1 || txt[0] != string(data) {
			t.Errorf("got %q, want %q", txt, data)
		}
	})
}

func BenchmarkQueryCached(b *testing.B) {
	_, r := start(b, "")
	ctx := context.Background()
	if _, err := r.Query(ctx, "host.example.test", dns.TypeA); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.Query(ctx, "host.example.test", dns.TypeA); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkQueryUncached(b *testing.B) {
	srv := testenv.StartDNS(b, zone)
	r, err := New(Config{Servers: []string{srv.Addr()}, CacheSize: -1})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Query(ctx, "host.example.test", dns.TypeA); err != nil {
			b.Fatal(err)
		}
	}
}

func TestTTLs(t *testing.T) {
	_, r := start(t, "")
	ctx, ttls := WithTTLs(context.Background())
	if _, ok := ttls.Min(); ok {
		t.Fatal("TTLs before any answer")
	}
	if _, err := r.LookupTXT(ctx, "example.test"); err != nil {
		t.Fatal(err)
	}
	if d, ok := ttls.Min(); !ok || d != 300*time.Second {
		t.Fatalf("after a TXT of TTL 300: %s %v", d, ok)
	}
	if _, err := r.LookupAddrs(ctx, "short.example.test", dns.TypeA); err != nil {
		t.Fatal(err)
	}
	if d, _ := ttls.Min(); d != 5*time.Second {
		t.Fatalf("after an A of TTL 5: %s", d)
	}

	// A negative answer counts with its SOA's TTL (minimum 60 here); a
	// failure counts for nothing.
	ctx, ttls = WithTTLs(context.Background())
	if _, err := r.LookupTXT(ctx, "nothing.example.test"); !errors.Is(err, ErrNXDomain) {
		t.Fatal(err)
	}
	if d, ok := ttls.Min(); !ok || d != 60*time.Second {
		t.Fatalf("after NXDOMAIN: %s %v", d, ok)
	}
	ctx, ttls = WithTTLs(context.Background())
	if _, err := r.LookupTXT(ctx, "nothing.invalid..name"); err == nil {
		t.Fatal("a malformed name resolved")
	}
	if _, ok := ttls.Min(); ok {
		t.Fatal("a failure recorded a TTL")
	}

	// From the cache, what remains of the TTL.
	time.Sleep(1100 * time.Millisecond)
	ctx, ttls = WithTTLs(context.Background())
	if _, err := r.LookupAddrs(ctx, "short.example.test", dns.TypeA); err != nil {
		t.Fatal(err)
	}
	if d, _ := ttls.Min(); d >= 5*time.Second || d < 3*time.Second {
		t.Fatalf("a cached A of TTL 5 a second later: %s", d)
	}
}

// txtZone publishes names name0..name{n-1}, each with records TXT records
// of strings 255-byte strings.
func txtZone(prefix string, n, records, strs int) string {
	var z strings.Builder
	z.WriteString("$ORIGIN example.test.\n$TTL 86400\n@ IN SOA ns hostmaster 1 3600 600 86400 60\n")
	for i := 0; i < n; i++ {
		for j := 0; j < records; j++ {
			fmt.Fprintf(&z, "%s%d IN TXT", prefix, i)
			for k := 0; k < strs; k++ {
				fmt.Fprintf(&z, " \"%02d%s\"", j, strings.Repeat("x", 253))
			}
			z.WriteString("\n")
		}
	}
	return z.String()
}

// The cache has a byte budget: answers the senders choose (DKIM keys of
// 14 TXT records of 4 KB, a day's TTL) once grew it past a gigabyte
// within its entry limit.
func TestCacheByteBudget(t *testing.T) {
	srv := testenv.StartDNS(t, txtZone("big", 20, 14, 16)+strings.Join(strings.SplitN(txtZone("mid", 200, 1, 8), "\n", 4)[3:], ""))
	r, err := New(Config{Servers: []string{srv.Addr()}, CacheBytes: 128 << 10})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		txts, err := r.LookupTXT(ctx, fmt.Sprintf("big%d.example.test", i))
		if err != nil || len(txts) != 14 {
			t.Fatalf("big%d: %d records, %v", i, len(txts), err)
		}
	}
	st := r.CacheStats()
	if st.Oversized != 20 || st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("oversized answers: %+v; want all 20 refused and nothing held", st)
	}
	before := srv.Queries("big0.example.test", dns.TypeTXT)
	r.LookupTXT(ctx, "big0.example.test")
	if n := srv.Queries("big0.example.test", dns.TypeTXT) - before; n == 0 {
		t.Errorf("an oversized answer was served from the cache (%d queries)", n)
	}

	// 200 answers of about 2 KB each: the budget holds, the oldest go.
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	for i := 0; i < 200; i++ {
		if _, err := r.LookupTXT(ctx, fmt.Sprintf("mid%d.example.test", i)); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	st = r.CacheStats()
	if st.Bytes > 128<<10 || st.Bytes < 64<<10 || st.Evictions == 0 || st.Entries >= 200 {
		t.Errorf("after 200 answers of 2 KB under a 128 KiB budget: %+v", st)
	}
	// The estimate is close to what the heap holds.
	if grown := int64(ms1.HeapAlloc) - int64(ms0.HeapAlloc); grown > 2*st.Bytes+64<<10 {
		t.Errorf("the heap grew %d bytes for an estimated %d", grown, st.Bytes)
	}
	// (Each look-up of these is two queries: UDP, truncated, then TCP.)
	before = srv.Queries("mid199.example.test", dns.TypeTXT)
	r.LookupTXT(ctx, "mid199.example.test")
	if n := srv.Queries("mid199.example.test", dns.TypeTXT) - before; n != 0 {
		t.Errorf("the newest answer was not kept (%d queries): %+v", n, r.CacheStats())
	}
	if _, err := New(Config{Servers: []string{srv.Addr()}, CacheBytes: -1}); err == nil {
		t.Error("a negative cache_bytes was accepted")
	}
}
