package testenv

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const fixtureZone = `
$ORIGIN example.test.
$TTL 300
@      IN SOA ns hostmaster 1 3600 600 86400 60
@      IN TXT "v=spf1 -all"
www    IN CNAME host
host   IN A 192.0.2.1
a.b.c  IN A 192.0.2.2
*.w    IN TXT "wild"
`

func ask(t *testing.T, s *DNSServer, net, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: net, Timeout: 2 * time.Second}
	resp, _, err := c.Exchange(m, s.Addr())
	if err != nil {
		t.Fatalf("%s %s over %s: %v", name, dns.TypeToString[qtype], net, err)
	}
	return resp
}

func TestDNSServerAnswers(t *testing.T) {
	s := StartDNS(t, fixtureZone)
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
		t.Fatalf("Addr = %s", s.Addr())
	}
	for _, netw := range []string{"udp", "tcp"} {
		r := ask(t, s, netw, "WWW.example.test", dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) != 2 {
			t.Fatalf("%s: CNAME chase: %v", netw, r)
		}
		if _, ok := r.Answer[0].(*dns.CNAME); !ok || r.Answer[1].(*dns.A).A.String() != "192.0.2.1" {
			t.Errorf("%s: answer = %v", netw, r.Answer)
		}
	}

	r := ask(t, s, "udp", "missing.example.test", dns.TypeA)
	if r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA {
		t.Errorf("NXDOMAIN: %v", r)
	}
	r = ask(t, s, "udp", "host.example.test", dns.TypeMX)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 {
		t.Errorf("NODATA: %v", r)
	}
	r = ask(t, s, "udp", "b.c.example.test", dns.TypeA) // empty non-terminal
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("empty non-terminal: %v", r)
	}
	r = ask(t, s, "udp", "x.y.w.example.test", dns.TypeTXT)
	if len(r.Answer) != 1 || r.Answer[0].Header().Name != "x.y.w.example.test." {
		t.Errorf("wildcard: %v", r)
	}
	if n := s.Queries("www.EXAMPLE.test.", dns.TypeA); n != 2 {
		t.Errorf("Queries = %d, want 2", n)
	}
}

func TestDNSServerFaults(t *testing.T) {
	s := StartDNS(t, fixtureZone)
	name := "host.example.test"

	s.ServFail(name)
	if r := ask(t, s, "udp", name, dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("ServFail: %v", dns.RcodeToString[r.Rcode])
	}
	s.Reset(name)
	s.Refuse(name)
	if r := ask(t, s, "udp", name, dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Errorf("Refuse: %v", dns.RcodeToString[r.Rcode])
	}
	s.Reset(name)
	s.Truncate(name)
	if r := ask(t, s, "udp", name, dns.TypeA); !r.Truncated || len(r.Answer) != 0 {
		t.Errorf("Truncate over UDP: %v", r)
	}
	if r := ask(t, s, "tcp", name, dns.TypeA); r.Truncated || len(r.Answer) != 1 {
		t.Errorf("Truncate over TCP: %v", r)
	}
	s.Reset(name)
	s.Delay(name, 150*time.Millisecond)
	begin := time.Now()
	ask(t, s, "udp", name, dns.TypeA)
	if d := time.Since(begin); d < 150*time.Millisecond {
		t.Errorf("Delay: answered after %v", d)
	}
	s.Reset(name)
	s.Drop(name)
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	if _, _, err := c.ExchangeContext(context.Background(), m, s.Addr()); err == nil {
		t.Error("Drop: got an answer")
	}
	s.Reset(name)
	s.DropType(name, dns.TypeAAAA)
	if _, _, err := c.ExchangeContext(context.Background(), m, s.Addr()); err != nil {
		t.Errorf("DropType(AAAA) dropped an A query: %v", err)
	}
	m.SetQuestion(dns.Fqdn(name), dns.TypeAAAA)
	if _, _, err := c.ExchangeContext(context.Background(), m, s.Addr()); err == nil {
		t.Error("DropType(AAAA): got an answer")
	}
	s.Reset(name)
	s.Authenticated(name)
	if r := ask(t, s, "udp", name, dns.TypeA); !r.AuthenticatedData {
		t.Error("Authenticated: no AD bit")
	}
}

func TestDNSServerSetZone(t *testing.T) {
	s := StartDNS(t, fixtureZone)
	if err := s.SetZone("example.test. 60 IN A 192.0.2.99\n"); err != nil {
		t.Fatal(err)
	}
	if r := ask(t, s, "udp", "example.test", dns.TypeA); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.99" {
		t.Errorf("after SetZone: %v", r)
	}
	if r := ask(t, s, "udp", "host.example.test", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("old data still served: %v", r)
	}
	if err := s.SetZone("this is not a zone"); err == nil {
		t.Error("SetZone accepted garbage")
	}
	if _, err := NewDNSServer("127.0.0.1:0", "$ORIGIN\n@ IN A"); err == nil {
		t.Error("NewDNSServer accepted garbage")
	}
}

func TestDNSServerClose(t *testing.T) {
	s, err := NewDNSServer("127.0.0.1:0", fixtureZone)
	if err != nil {
		t.Fatal(err)
	}
	s.Drop("host.example.test")
	s.Close()
	s.Close() // twice is fine
}
