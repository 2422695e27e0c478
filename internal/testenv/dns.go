package testenv

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// DNSServer is an authoritative DNS server for fixture zones, on loopback,
// over UDP and TCP on the same port. Tests can make single names misbehave
// (SERVFAIL, no answer, truncation, delay, REFUSED) and count the queries
// each name received.
type DNSServer struct {
	addr string
	udp  *dns.Server
	tcp  *dns.Server
	done chan struct{} // closed by Close, to release dropped and delayed queries

	mu      sync.RWMutex
	zone    *zoneData
	faults  map[string]*fault
	queries map[queryKey]int
	closed  bool
}

type fault struct {
	servFail, drop, truncate, refuse, ad bool
	delay                                time.Duration
	dropTypes                            map[uint16]bool
}

type queryKey struct {
	name  string
	qtype uint16
}

// zoneData is the parsed zone: records by lower-cased owner name.
type zoneData struct {
	rrs   map[string][]dns.RR
	names map[string]bool // owner names and empty non-terminals
	soas  []*dns.SOA
}

// StartDNS serves zone (RFC 1035 master file text; $ORIGIN and $TTL allowed,
// records without a TTL get 3600) on 127.0.0.1 until the test ends.
func StartDNS(t testing.TB, zone string) *DNSServer {
	t.Helper()
	s, err := NewDNSServer("127.0.0.1:0", zone)
	if err != nil {
		t.Fatalf("starting fixture DNS server: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// NewDNSServer serves zone on addr ("host:port"; port 0 picks a port free
// for both UDP and TCP). Close stops it.
func NewDNSServer(addr, zone string) (*DNSServer, error) {
	z, err := parseZone(zone)
	if err != nil {
		return nil, err
	}
	s := &DNSServer{
		done:    make(chan struct{}),
		zone:    z,
		faults:  map[string]*fault{},
		queries: map[queryKey]int{},
	}
	pc, ln, err := listenBoth(addr)
	if err != nil {
		return nil, err
	}
	s.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(s.serve)
	s.udp = &dns.Server{PacketConn: pc, Handler: h}
	s.tcp = &dns.Server{Listener: ln, Handler: h}
	var started sync.WaitGroup
	started.Add(2)
	s.udp.NotifyStartedFunc = started.Done
	s.tcp.NotifyStartedFunc = started.Done
	go s.udp.ActivateAndServe()
	go s.tcp.ActivateAndServe()
	started.Wait()
	return s, nil
}

// listenBoth opens UDP and TCP on one port. With port 0 the kernel picks
// the UDP port, which may be taken for TCP: try a few times.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing DNS listen address %q: %w", addr, err)
	}
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(host, port))
		if err != nil {
			return nil, nil, fmt.Errorf("listening on udp %s: %w", addr, err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
		if port != "0" {
			break
		}
	}
	return nil, nil, fmt.Errorf("listening on tcp %s: %w", addr, lastErr)
}

// Addr returns "127.0.0.1:PORT", for resolver.Config.Servers.
func (s *DNSServer) Addr() string { return s.addr }

// Close stops the server. It is safe to call more than once.
func (s *DNSServer) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.done)
	s.mu.Unlock()
	s.udp.Shutdown()
	s.tcp.Shutdown()
}

// SetZone replaces the served data while running. Faults and counters stay.
func (s *DNSServer) SetZone(zone string) error {
	z, err := parseZone(zone)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.zone = z
	s.mu.Unlock()
	return nil
}

// ServFail makes queries for name (any type) answer SERVFAIL.
func (s *DNSServer) ServFail(name string) { s.setFault(name, func(f *fault) { f.servFail = true }) }

// Drop makes queries for name go unanswered, so clients time out.
func (s *DNSServer) Drop(name string) { s.setFault(name, func(f *fault) { f.drop = true }) }

// DropType makes queries for name and qtype only go unanswered.
func (s *DNSServer) DropType(name string, qtype uint16) {
	s.setFault(name, func(f *fault) {
		if f.dropTypes == nil {
			f.dropTypes = map[uint16]bool{}
		}
		f.dropTypes[qtype] = true
	})
}

// Truncate makes UDP answers for name come back with TC set and no records;
// TCP answers stay complete.
func (s *DNSServer) Truncate(name string) { s.setFault(name, func(f *fault) { f.truncate = true }) }

// Delay holds answers for name back by d.
func (s *DNSServer) Delay(name string, d time.Duration) {
	s.setFault(name, func(f *fault) { f.delay = d })
}

// Refuse makes queries for name answer REFUSED.
func (s *DNSServer) Refuse(name string) { s.setFault(name, func(f *fault) { f.refuse = true }) }

// Authenticated sets the AD bit on answers for name, as a validating
// resolver would for DNSSEC-signed data.
func (s *DNSServer) Authenticated(name string) { s.setFault(name, func(f *fault) { f.ad = true }) }

// Reset undoes ServFail, Drop, DropType, Truncate, Delay, Refuse and Authenticated for name.
func (s *DNSServer) Reset(name string) {
	s.mu.Lock()
	delete(s.faults, canonical(name))
	s.mu.Unlock()
}

// Queries returns how many queries for name and qtype the server received.
func (s *DNSServer) Queries(name string, qtype uint16) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.queries[queryKey{canonical(name), qtype}]
}

func (s *DNSServer) setFault(name string, set func(*fault)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := canonical(name)
	f := s.faults[n]
	if f == nil {
		f = &fault{}
		s.faults[n] = f
	}
	set(f)
}

// canonical lower-cases name and spells its escapes one way, by packing
// and unpacking it: "\032" and "\ " are the same byte.
func canonical(name string) string {
	fq := dns.Fqdn(name)
	buf := make([]byte, 256)
	if off, err := dns.PackDomainName(fq, buf, 0, nil, false); err == nil {
		if s, _, err := dns.UnpackDomainName(buf[:off], 0); err == nil {
			fq = s
		}
	}
	return strings.ToLower(fq)
}

func (s *DNSServer) serve(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := canonical(q.Name)

	s.mu.Lock()
	s.queries[queryKey{name, q.Qtype}]++
	var f fault
	if p := s.faults[name]; p != nil {
		f = *p
	}
	z := s.zone
	s.mu.Unlock()

	if f.drop || f.dropTypes[q.Qtype] {
		return
	}
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-s.done:
			return
		}
	}

	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), false)
		size = max(int(opt.UDPSize()), dns.MinMsgSize)
	}
	_, udp := w.RemoteAddr().(*net.UDPAddr)
	switch {
	case f.servFail:
		m.Rcode = dns.RcodeServerFailure
	case f.refuse:
		m.Rcode = dns.RcodeRefused
	case f.truncate && udp:
		m.Truncated = true
	default:
		z.answer(m, name, q.Qtype)
		m.AuthenticatedData = f.ad
		if udp {
			m.Truncate(size)
		}
	}
	w.WriteMsg(m)
}

// answer fills m for name and qtype: records (following CNAMEs inside the
// data, and wildcards), or NXDOMAIN / NODATA with the SOA in authority.
func (z *zoneData) answer(m *dns.Msg, name string, qtype uint16) {
	for range 16 {
		rrs, ok := z.lookup(name)
		if !ok {
			m.Rcode = dns.RcodeNameError
			z.addSOA(m, name)
			return
		}
		var found bool
		var cname *dns.CNAME
		for _, rr := range rrs {
			if rr.Header().Rrtype == qtype || qtype == dns.TypeANY {
				m.Answer = append(m.Answer, withOwner(rr, name))
				found = true
			}
			if c, ok := rr.(*dns.CNAME); ok {
				cname = c
			}
		}
		if found {
			return
		}
		if cname == nil {
			z.addSOA(m, name)
			return
		}
		m.Answer = append(m.Answer, withOwner(cname, name))
		target := canonical(cname.Target)
		if _, ok := z.lookup(target); !ok && !z.inZone(target) {
			// Out of our data: a resolver chases it elsewhere.
			return
		}
		name = target
	}
	m.Rcode = dns.RcodeServerFailure // CNAME loop
}

// lookup returns the records at name, or at the wildcard covering it
// (RFC 4592); ok is false when the name does not exist.
func (z *zoneData) lookup(name string) (rrs []dns.RR, ok bool) {
	if z.names[name] {
		return z.rrs[name], true
	}
	for n := name; ; {
		i := strings.IndexByte(n, '.')
		if i < 0 || i == len(n)-1 {
			return nil, false
		}
		n = n[i+1:]
		if z.names[n] {
			// n is the closest encloser: only its wildcard child can match.
			rrs, ok := z.rrs["*."+n]
			return rrs, ok
		}
	}
}

func (z *zoneData) inZone(name string) bool {
	for _, soa := range z.soas {
		if dns.IsSubDomain(soa.Hdr.Name, name) {
			return true
		}
	}
	return false
}

// addSOA puts the closest enclosing zone's SOA in the authority section,
// as negative answers need (RFC 2308).
func (z *zoneData) addSOA(m *dns.Msg, name string) {
	var best *dns.SOA
	for _, soa := range z.soas {
		if dns.IsSubDomain(soa.Hdr.Name, name) && (best == nil || dns.CountLabel(soa.Hdr.Name) > dns.CountLabel(best.Hdr.Name)) {
			best = soa
		}
	}
	if best == nil {
		// Outside every zone served: answer as a recursive server would,
		// with the root's SOA, so that the answer can be cached.
		best = rootSOA
	}
	m.Ns = append(m.Ns, best)
}

var rootSOA = &dns.SOA{
	Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 300},
	Ns:  "a.root-servers.invalid.", Mbox: "hostmaster.invalid.", Serial: 1,
	Refresh: 1800, Retry: 900, Expire: 604800, Minttl: 300,
}

func withOwner(rr dns.RR, name string) dns.RR {
	if strings.EqualFold(rr.Header().Name, name) {
		return rr
	}
	c := dns.Copy(rr)
	c.Header().Name = name
	return c
}

func parseZone(zone string) (*zoneData, error) {
	z := &zoneData{rrs: map[string][]dns.RR{}, names: map[string]bool{}}
	zp := dns.NewZoneParser(strings.NewReader(zone), ".", "fixture")
	zp.SetIncludeAllowed(false)
	zp.SetDefaultTTL(3600) // records with no TTL and no $TTL: an hour, as usual, not 0 (uncacheable)
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		name := canonical(rr.Header().Name)
		rr.Header().Name = name
		z.rrs[name] = append(z.rrs[name], rr)
		if soa, ok := rr.(*dns.SOA); ok {
			z.soas = append(z.soas, soa)
		}
		// The name and every ancestor exist (empty non-terminals answer NODATA).
		for n := name; n != "."; {
			z.names[n] = true
			i := strings.IndexByte(n, '.')
			n = n[i+1:]
			if n == "" {
				break
			}
		}
	}
	if err := zp.Err(); err != nil {
		return nil, fmt.Errorf("parsing fixture zone: %w", err)
	}
	return z, nil
}
