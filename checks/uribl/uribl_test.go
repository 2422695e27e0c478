package uribl

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/internal/config"
	"github.com/mailward/mailward/internal/testenv"
)

// multi.test adds up its sublists in the last octet, as SURBL and URIBL
// do; dbl.test names exact codes, as Spamhaus DBL does.
const zone = `
$TTL 300
$ORIGIN multi.test.
@ IN SOA ns hostmaster 1 3600 600 86400 60
test IN A 127.0.0.2
spam.example IN A 127.0.0.2
both.example IN A 127.0.0.6
odd.example IN A 127.0.0.64
refused.example IN A 127.255.255.254
blocked.example IN A 127.0.0.1
9.2.0.192 IN A 127.0.1.255
public.example IN A 192.0.2.1
10.2.0.192 IN A 127.0.0.4
2.0.0.127 IN A 127.0.0.2
1.0.0.10 IN A 127.0.0.2
$ORIGIN dbl.test.
@ IN SOA ns hostmaster 1 3600 600 86400 60
spam.example IN A 127.0.1.2
phish.example IN A 127.0.1.4
$ORIGIN slow.test.
@ IN SOA ns hostmaster 1 3600 600 86400 60
`

var cfg = Config{Zones: []Zone{
	{Zone: "multi.test", Bitmask: map[int]string{2: "black", 4: "grey", 8: "red"}},
	{Zone: "DBL.test.", Codes: map[string]string{"127.0.1.2": "spam", "127.0.1.4": "phish"}},
}}

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

func show(rs []Result) string {
	var parts []string
	for _, r := range rs {
		if r.Error != "" {
			parts = append(parts, fmt.Sprintf("%s:%s!", r.Query, r.Zone))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s:%s=%v%v", r.Query, r.Zone, r.Codes, r.Names))
	}
	return strings.Join(parts, " ")
}

func TestListedDomains(t *testing.T) {
	srv, c := start(t, cfg)
	res := c.Check(context.Background(), []string{"ok.example", "Spam.Example.", "spam.example", "both.example", "odd.example", "phish.example"})
	want := "spam.example:multi.test=[127.0.0.2][black] both.example:multi.test=[127.0.0.6][black grey] " +
		"odd.example:multi.test=[127.0.0.64][] spam.example:dbl.test=[127.0.1.2][spam] phish.example:dbl.test=[127.0.1.4][phish]"
	if got := show(res); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if n := srv.Queries("spam.example.multi.test", dns.TypeA); n != 1 {
		t.Errorf("spam.example asked %d times, want 1 (repeats skipped)", n)
	}
	if n := srv.Queries("ok.example.dbl.test", dns.TypeA); n != 1 {
		t.Errorf("ok.example asked %d times of dbl.test, want 1", n)
	}
}

func TestListedIPLiteral(t *testing.T) {
	srv, c := start(t, cfg)
	res := c.Check(context.Background(), []string{"192.0.2.10", "[192.0.2.10]", "::ffff:192.0.2.10", "localhost", "a..b"})
	if got, want := show(res), "192.0.2.10:multi.test=[127.0.0.4][grey]"; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if n := srv.Queries("10.2.0.192.multi.test", dns.TypeA); n != 1 {
		t.Errorf("the address was asked %d times, want 1", n)
	}
	if n := srv.Queries("localhost.multi.test", dns.TypeA); n != 0 {
		t.Errorf("a single label was asked about")
	}
}

// Loopback, private and link-local addresses are on no one's network
// but the reader's: a link to one is not asked about (2.0.0.127 is every
// list's test entry, listed by design).
func TestLocalIPLiteralsNotAsked(t *testing.T) {
	srv, c := start(t, cfg)
	res := c.Check(context.Background(), []string{"127.0.0.2", "10.0.0.1", "169.254.1.1", "::1", "fd00::1", "0.0.0.0"})
	if len(res) != 0 {
		t.Errorf("got %s", show(res))
	}
	if n := srv.Queries("2.0.0.127.multi.test", dns.TypeA) + srv.Queries("1.0.0.10.multi.test", dns.TypeA); n != 0 {
		t.Errorf("local addresses asked about %d times", n)
	}
}

// 127.255.255.254 (Spamhaus: public resolver refused), 127.0.0.1
// (URIBL, SURBL: queries refused) and anything outside 127/8 say the
// list would not answer: an error, never a listing.
func TestRefusedAnswersAreErrors(t *testing.T) {
	for _, name := range []string{"refused.example", "blocked.example", "public.example"} {
		_, c := start(t, cfg)
		res := c.Check(context.Background(), []string{name})
		if len(res) != 1 || res[0].Error == "" || len(res[0].Codes) != 0 || len(res[0].Names) != 0 {
			t.Errorf("%s: %+v, want one error result", name, res)
			continue
		}
		if !strings.Contains(res[0].Error, "not a listing") {
			t.Errorf("%s: error %q", name, res[0].Error)
		}
	}
}

// 127.0.1.255 is Spamhaus DBL refusing IP queries for good: no listing,
// and no error to defer mail on.
func TestNoIPQueriesIsNotListed(t *testing.T) {
	_, c := start(t, cfg)
	if res := c.Check(context.Background(), []string{"192.0.2.9"}); len(res) != 0 {
		t.Errorf("%+v", res)
	}
}

func TestDNSTroubleIsAnError(t *testing.T) {
	srv, c := start(t, Config{Zones: []Zone{{Zone: "slow.test"}, {Zone: "multi.test"}}})
	for _, n := range []string{"a.example", "b.example", "c.example"} {
		srv.Drop(n + ".slow.test")
	}
	srv.ServFail("a.example.multi.test")
	res := c.Check(context.Background(), []string{"a.example", "b.example", "c.example", "spam.example"})
	// One error per failed zone, whichever name failed first; listings
	// from a zone that failed for another name still count.
	if got, want := show(res), "a.example:slow.test! a.example:multi.test! spam.example:multi.test=[127.0.0.2][]"; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if !strings.Contains(res[0].Error, "timed out") || !strings.Contains(res[1].Error, "server failure") {
		t.Errorf("errors: %q, %q", res[0].Error, res[1].Error)
	}
}

func TestQueryCap(t *testing.T) {
	srv, c := start(t, Config{Zones: []Zone{{Zone: "multi.test", MaxQueries: 3}, {Zone: "dbl.test"}}})
	var names []string
	for i := range 30 {
		names = append(names, fmt.Sprintf("d%d.example", i))
	}
	names = append(names, "spam.example")
	res := c.Check(context.Background(), names)
	// multi.test is asked about the first three only; dbl.test about its
	// default of 20, so neither reaches spam.example.
	if len(res) != 0 {
		t.Errorf("%s", show(res))
	}
	count := func(zone string) int {
		n := 0
		for _, d := range names {
			n += srv.Queries(d+"."+zone, dns.TypeA)
		}
		return n
	}
	if n := count("multi.test"); n != 3 {
		t.Errorf("multi.test asked %d times, want 3", n)
	}
	if n := count("dbl.test"); n != DefaultMaxQueries {
		t.Errorf("dbl.test asked %d times, want %d", n, DefaultMaxQueries)
	}
	if n := srv.Queries("d0.example.multi.test", dns.TypeA); n != 1 {
		t.Errorf("the first name was asked %d times", n)
	}
}

func TestNoZones(t *testing.T) {
	c, err := New(nil, Config{})
	if err != nil || c != nil {
		t.Fatalf("%v %v", c, err)
	}
	if res := c.Check(context.Background(), []string{"spam.example"}); res != nil {
		t.Errorf("%+v", res)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		key string
	}{
		{Config{Zones: []Zone{{Zone: "nodot"}}}, "zones[0].zone"},
		{Config{Zones: []Zone{{Zone: "a.test"}, {Zone: "A.test."}}}, "zones[1].zone"},
		{Config{Zones: []Zone{{Zone: "a.test", MaxQueries: -1}}}, "zones[0].max_queries"},
		{Config{Zones: []Zone{{Zone: "a.test", Codes: map[string]string{"::1": "x"}}}}, "zones[0].codes.::1"},
		{Config{Zones: []Zone{{Zone: "a.test", Bitmask: map[int]string{256: "x"}}}}, "zones[0].bitmask.256"},
		{Config{Zones: []Zone{{Zone: "a.test", Bitmask: map[int]string{2: " "}}}}, "zones[0].bitmask.2"},
	} {
		err := tc.cfg.Validate()
		var ps config.Problems
		if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Key != tc.key {
			t.Errorf("%+v: %v, want a problem at %s", tc.cfg, err, tc.key)
		}
		if _, err := New(nil, tc.cfg); err == nil {
			t.Errorf("%+v: New took it", tc.cfg)
		}
	}
}
