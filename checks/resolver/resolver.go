// Package resolver is the DNS stub resolver every check uses: UDP with TCP
// fallback, EDNS0, retries, an in-process cache by TTL (negative answers
// too), and one look-up for concurrent identical queries. It keeps
// NXDOMAIN, NODATA, SERVFAIL and timeouts apart, because the checks map
// them to different results.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Config configures a Resolver. Zero values pick the defaults.
type Config struct {
	Servers   []string      `yaml:"servers"`    // "host:port" or "host" (port 53); empty: read /etc/resolv.conf
	Timeout   time.Duration `yaml:"timeout"`    // per attempt; 0 means 2s
	Retries   int           `yaml:"retries"`    // extra attempts after a timeout; 0 means 2 (negative: none)
	CacheSize int           `yaml:"cache_size"` // max cached answers; 0 means 10000, negative disables the cache
	// CacheBytes is the cache's memory budget (estimated); 0 means 64 MiB.
	// Answers over 16 KiB (or a sixteenth of the budget) are not cached.
	CacheBytes int64 `yaml:"cache_bytes"`
}

// The defaults zero fields of Config take.
const (
	DefaultTimeout    = defaultTimeout
	DefaultRetries    = defaultRetries
	DefaultCacheSize  = defaultCacheSize
	DefaultCacheBytes = defaultCacheBytes
)

const (
	defaultTimeout    = 2 * time.Second
	defaultRetries    = 2
	defaultCacheSize  = 10000
	defaultCacheBytes = 64 << 20
	ednsSize          = 1232 // the DNS flag day 2020 size: avoids IP fragmentation
	maxCNAMEs         = 8
	// maxTTL caps how long anything stays cached, whatever the zone says.
	maxTTL = 24 * time.Hour
	// resolvConf is where the system's servers are read from.
	resolvConf = "/etc/resolv.conf"
)

// Resolver sends queries to the configured recursive servers. It is safe
// for concurrent use.
type Resolver struct {
	servers []string
	timeout time.Duration
	retries int
	cache   *cache // nil when disabled
	flights flightGroup
	now     func() time.Time
	shared  Shared // nil unless SetShared
	// observe, if set, is told of every query sent to the servers.
	observe atomic.Pointer[QueryObserver]
	// silent, with SkipSilentServers, holds the servers that let every
	// attempt of a query time out: they are not asked again.
	silent *sync.Map
}

// Answer is the result of a successful query.
type Answer struct {
	RRs []dns.RR // answer records of the asked type (after following CNAMEs); shared, do not modify
	TTL uint32   // the smallest TTL of RRs (or SOA minimum for negative answers)
	AD  bool     // DNSSEC authenticated data bit
}

// New returns a resolver for cfg.
func New(cfg Config) (*Resolver, error) {
	r := &Resolver{
		timeout: cfg.Timeout,
		retries: cfg.Retries,
		now:     time.Now,
	}
	if r.timeout < 0 {
		return nil, fmt.Errorf("dns timeout %v is negative", cfg.Timeout)
	}
	if r.timeout == 0 {
		r.timeout = defaultTimeout
	}
	switch {
	case r.retries == 0:
		r.retries = defaultRetries
	case r.retries < 0:
		r.retries = 0
	}
	if cfg.CacheBytes < 0 {
		return nil, fmt.Errorf("dns cache_bytes %d is negative", cfg.CacheBytes)
	}
	budget := cfg.CacheBytes
	if budget == 0 {
		budget = defaultCacheBytes
	}
	switch {
	case cfg.CacheSize == 0:
		r.cache = newCache(defaultCacheSize, budget)
	case cfg.CacheSize > 0:
		r.cache = newCache(cfg.CacheSize, budget)
	}
	servers := cfg.Servers
	if len(servers) == 0 {
		cc, err := dns.ClientConfigFromFile(resolvConf)
		if err != nil {
			return nil, fmt.Errorf("reading DNS servers from %s: %w", resolvConf, err)
		}
		for _, s := range cc.Servers {
			servers = append(servers, net.JoinHostPort(s, cc.Port))
		}
		if len(servers) == 0 {
			return nil, fmt.Errorf("no DNS servers in %s", resolvConf)
		}
	}
	for _, s := range servers {
		addr, err := serverAddr(s)
		if err != nil {
			return nil, err
		}
		r.servers = append(r.servers, addr)
	}
	return r, nil
}

// CacheStats reports the cache's size and its evictions; zero when the
// cache is disabled.
func (r *Resolver) CacheStats() CacheStats {
	if r.cache == nil {
		return CacheStats{}
	}
	return r.cache.stats()
}

// serverAddr turns "host", "host:port", "v6addr" or "[v6addr]:port" into "host:port".
func serverAddr(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", fmt.Errorf("empty DNS server address")
	}
	if host, port, err := net.SplitHostPort(s); err == nil {
		if host == "" || port == "" {
			return "", fmt.Errorf("DNS server address %q: host and port must not be empty", s)
		}
		return s, nil
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return netip.AddrPortFrom(a, 53).String(), nil
	}
	if strings.ContainsAny(s, ":[]/ ") {
		return "", fmt.Errorf("DNS server address %q is not host or host:port", s)
	}
	return net.JoinHostPort(s, "53"), nil
}

// Query asks for name's records of qtype. Failures wrap ErrNXDomain,
// ErrNoData, ErrServFail, ErrTimeout, ErrRefused or ErrNetwork.
func (r *Resolver) Query(ctx context.Context, name string, qtype uint16) (*Answer, error) {
	fq, err := normalize(name, qtype)
	if err != nil {
		return nil, err
	}
	var ans Answer
	ttl := uint32(maxTTL / time.Second)
	first := true
	asked := fq
	for range maxCNAMEs {
		out, err := r.lookup(ctx, fq, qtype)
		if err != nil {
			if fq != asked {
				return nil, fmt.Errorf("following CNAME of %s: %w", strings.TrimSuffix(asked, "."), err)
			}
			return nil, err
		}
		if out.kind != nil {
			// A negative answer lasts as long as its SOA says (RFC 2308).
			recordTTL(ctx, min(ttl, out.ttl))
			e := &lookupError{name: strings.TrimSuffix(asked, "."), qtype: dns.TypeToString[qtype], kind: out.kind}
			if fq != asked {
				e.cause = fmt.Errorf("CNAME target %s", strings.TrimSuffix(fq, "."))
			}
			return nil, e
		}
		ttl = min(ttl, out.ttl)
		ans.AD = out.ad && (first || ans.AD)
		first = false
		if out.chase == "" {
			ans.RRs = out.rrs
			ans.TTL = ttl
			recordTTL(ctx, ttl)
			return &ans, nil
		}
		// The server gave a CNAME leading out of its data: ask for the target.
		fq = out.chase
	}
	return nil, &lookupError{name: strings.TrimSuffix(fq, "."), qtype: dns.TypeToString[qtype], kind: ErrServFail, cause: fmt.Errorf("more than %d CNAMEs", maxCNAMEs)}
}

// normalize returns name lower-cased, fully qualified, and in the
// presentation form answers come back in (special bytes escaped), or
// ErrNXDomain for something that cannot be a domain name.
func normalize(name string, qtype uint16) (string, error) {
	bad := func() error {
		return &lookupError{name: fmt.Sprintf("%q", name), qtype: dns.TypeToString[qtype], kind: ErrNXDomain, cause: fmt.Errorf("invalid domain name")}
	}
	if name == "" {
		return "", bad()
	}
	fq := asciiLower(dns.Fqdn(name))
	if plainName(fq) {
		if len(fq) > 254 || strings.Contains(fq, "..") || (fq[0] == '.' && fq != ".") {
			return "", bad()
		}
		for l := range strings.SplitSeq(strings.TrimSuffix(fq, "."), ".") {
			if len(l) > 63 {
				return "", bad()
			}
		}
		return fq, nil
	}
	var buf [256]byte
	off, err := dns.PackDomainName(fq, buf[:], 0, nil, false)
	if err != nil {
		return "", bad()
	}
	fq, _, err = dns.UnpackDomainName(buf[:off], 0)
	if err != nil {
		return "", bad()
	}
	return asciiLower(fq), nil
}

// asciiLower folds only A-Z: DNS names are bytes, not UTF-8 (RFC 4343).
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= 'A' && s[i] <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// plainName reports whether name holds only bytes that need no escaping.
func plainName(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '*') {
			return false
		}
	}
	return true
}

// outcome is what one exchange established about one name and type. It is
// what the cache holds.
type outcome struct {
	rrs   []dns.RR
	ttl   uint32
	ad    bool
	chase string // CNAME target to ask for next, when the answer stopped there
	kind  error  // ErrNXDomain or ErrNoData for negative answers
}

type cacheKey struct {
	name  string
	qtype uint16
}

// lookup returns the outcome for one name, from the cache or from a shared
// exchange. Temporary failures come back as errors and are not cached.
func (r *Resolver) lookup(ctx context.Context, fq string, qtype uint16) (outcome, error) {
	key := cacheKey{fq, qtype}
	if err := ctx.Err(); err != nil {
		return outcome{}, &lookupError{name: strings.TrimSuffix(fq, "."), qtype: dns.TypeToString[qtype], kind: ErrTimeout, cause: err}
	}
	if r.cache != nil {
		if out, ok := r.cache.get(key, r.now()); ok {
			return out, nil
		}
	}
	return r.flights.do(ctx, key, func() (outcome, error) {
		// The exchange serves every caller waiting on it, so it must not die
		// with the first caller's context; its own time is bounded anyway.
		budget := r.timeout*time.Duration((r.retries+1)*len(r.servers)) + time.Second
		xctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), budget)
		defer cancel()
		out, ok := r.fromShared(xctx, key)
		if !ok {
			var err error
			start := time.Now()
			out, err = r.exchange(xctx, fq, qtype)
			if fn := r.observe.Load(); fn != nil {
				(*fn)(dns.TypeToString[qtype], time.Since(start), err)
			}
			if err != nil {
				return out, err
			}
			r.toShared(xctx, key, out)
		}
		if r.cache != nil && out.ttl > 0 {
			r.cache.put(key, out, r.now().Add(min(time.Duration(out.ttl)*time.Second, maxTTL)))
		}
		return out, nil
	})
}

// exchange asks the servers in turn. A timeout or network failure moves to
// the next server and, after the last, starts another round (up to
// retries); SERVFAIL and REFUSED move to the next server only.
func (r *Resolver) exchange(ctx context.Context, fq string, qtype uint16) (outcome, error) {
	m := new(dns.Msg)
	m.SetQuestion(fq, qtype)
	m.RecursionDesired = true
	m.AuthenticatedData = true // RFC 6840 section 5.7: ask for the AD bit
	m.SetEdns0(ednsSize, false)

	var lastErr error
	timeouts := map[string]int{}
	for try := 0; try <= r.retries; try++ {
		retry := false
		for _, srv := range r.servers {
			if r.silent != nil {
				if _, down := r.silent.Load(srv); down {
					lastErr = &lookupError{name: strings.TrimSuffix(fq, "."), qtype: dns.TypeToString[qtype], kind: ErrTimeout, cause: fmt.Errorf("%s did not answer earlier queries", srv)}
					continue
				}
			}
			resp, err := r.exchangeOne(ctx, srv, m)
			if err != nil {
				lastErr = r.errorFor(fq, qtype, srv, err)
				if ctx.Err() != nil {
					return outcome{}, lastErr
				}
				if errors.Is(lastErr, ErrTimeout) {
					if timeouts[srv]++; timeouts[srv] > r.retries && r.silent != nil {
						r.silent.Store(srv, true)
					}
				}
				retry = true
				continue
			}
			switch resp.Rcode {
			case dns.RcodeSuccess, dns.RcodeNameError:
				return parse(resp, fq, qtype), nil
			case dns.RcodeRefused:
				lastErr = &lookupError{name: strings.TrimSuffix(fq, "."), qtype: dns.TypeToString[qtype], kind: ErrRefused, cause: fmt.Errorf("from %s", srv)}
			default:
				lastErr = &lookupError{name: strings.TrimSuffix(fq, "."), qtype: dns.TypeToString[qtype], kind: ErrServFail, cause: fmt.Errorf("%s from %s", dns.RcodeToString[resp.Rcode], srv)}
			}
		}
		if !retry {
			break
		}
	}
	return outcome{}, lastErr
}

func (r *Resolver) errorFor(fq string, qtype uint16, srv string, err error) error {
	kind := ErrNetwork
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		kind = ErrTimeout
	}
	return &lookupError{name: strings.TrimSuffix(fq, "."), qtype: dns.TypeToString[qtype], kind: kind, cause: fmt.Errorf("asking %s: %w", srv, err)}
}

// exchangeOne sends m to srv over UDP, and again over TCP if the answer was truncated.
func (r *Resolver) exchangeOne(ctx context.Context, srv string, m *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	m = m.Copy()
	m.Id = dns.Id()
	c := &dns.Client{Net: "udp", UDPSize: ednsSize, Timeout: r.timeout}
	resp, _, err := c.ExchangeContext(ctx, m, srv)
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, _, err = c.ExchangeContext(ctx, m, srv)
	}
	if err != nil {
		return nil, err
	}
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, m.Question[0].Name) || resp.Question[0].Qtype != m.Question[0].Qtype {
		return nil, fmt.Errorf("answer is for another question")
	}
	if resp.Truncated {
		return nil, fmt.Errorf("answer truncated over TCP")
	}
	return resp, nil
}

// parse reads an answer: records of qtype at fq or at the end of its CNAME
// chain, or a negative answer with its SOA-derived TTL (RFC 2308 section 5).
func parse(resp *dns.Msg, fq string, qtype uint16) outcome {
	out := outcome{ad: resp.AuthenticatedData, ttl: uint32(maxTTL / time.Second)}
	cur := fq
	for range maxCNAMEs + 1 {
		var cname string
		for _, rr := range resp.Answer {
			h := rr.Header()
			if !strings.EqualFold(h.Name, cur) {
				continue
			}
			if h.Rrtype == qtype {
				out.rrs = append(out.rrs, rr)
				out.ttl = min(out.ttl, h.Ttl)
			} else if c, ok := rr.(*dns.CNAME); ok && cname == "" {
				cname = asciiLower(c.Target)
				out.ttl = min(out.ttl, h.Ttl)
			}
		}
		if len(out.rrs) > 0 || cname == "" {
			break
		}
		cur = cname
	}
	if len(out.rrs) > 0 {
		return out
	}
	soa := findSOA(resp)
	if resp.Rcode == dns.RcodeSuccess && cur != fq && soa == nil {
		// A CNAME to data this server did not give: chase the target.
		out.chase = cur
		return out
	}
	out.kind = ErrNoData
	if resp.Rcode == dns.RcodeNameError {
		out.kind = ErrNXDomain
	}
	out.ttl = 0 // without a SOA a negative answer is not cached (RFC 2308 section 5)
	if soa != nil {
		out.ttl = min(soa.Hdr.Ttl, soa.Minttl)
	}
	return out
}

func findSOA(resp *dns.Msg) *dns.SOA {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return soa
		}
	}
	return nil
}

// LookupTXT returns one string per TXT record, its character-strings concatenated.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	ans, err := r.Query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ans.RRs))
	for _, rr := range ans.RRs {
		if t, ok := rr.(*dns.TXT); ok {
			var b strings.Builder
			for _, part := range t.Txt {
				unescape(&b, part)
			}
			out = append(out, b.String())
		}
	}
	return out, nil
}

// unescape writes the bytes of a character-string as miekg/dns presents
// it ("\"" for a quote, "\\" for a backslash, "\DDD" for other bytes).
func unescape(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			n := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0')
			if n <= 255 {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i+1])
		i++
	}
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// LookupIP returns host's IPv4 then IPv6 addresses, asking for both at
// once. If either family has addresses they are returned without error;
// otherwise a temporary failure wins over not-found, and NXDOMAIN over NODATA.
func (r *Resolver) LookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	var (
		wg     sync.WaitGroup
		a, aaa []netip.Addr
		aErr   error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		a, aErr = r.LookupAddrs(ctx, host, dns.TypeA)
	}()
	aaa, aaaErr := r.LookupAddrs(ctx, host, dns.TypeAAAA)
	wg.Wait()
	if len(a)+len(aaa) > 0 {
		return append(a, aaa...), nil
	}
	switch {
	case IsTemporary(aErr):
		return nil, aErr
	case IsTemporary(aaaErr):
		return nil, aaaErr
	case aErr != nil && (errors.Is(aErr, ErrNXDomain) || aaaErr == nil):
		return nil, aErr
	case aaaErr != nil:
		return nil, aaaErr
	}
	return nil, &lookupError{name: host, qtype: "A/AAAA", kind: ErrNoData}
}

// LookupAddrs returns host's addresses of one family: qtype is dns.TypeA or dns.TypeAAAA.
func (r *Resolver) LookupAddrs(ctx context.Context, host string, qtype uint16) ([]netip.Addr, error) {
	ans, err := r.Query(ctx, host, qtype)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(ans.RRs))
	for _, rr := range ans.RRs {
		var ip net.IP
		switch rr := rr.(type) {
		case *dns.A:
			ip = rr.A
		case *dns.AAAA:
			ip = rr.AAAA
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			if qtype == dns.TypeA {
				a = a.Unmap()
			}
			out = append(out, a)
		}
	}
	return out, nil
}

// LookupAddr returns the PTR names of ip, without the trailing dot.
func (r *Resolver) LookupAddr(ctx context.Context, ip netip.Addr) ([]string, error) {
	if !ip.IsValid() {
		return nil, &lookupError{name: "invalid address", qtype: "PTR", kind: ErrNXDomain}
	}
	name, err := dns.ReverseAddr(ip.Unmap().String())
	if err != nil {
		return nil, &lookupError{name: ip.String(), qtype: "PTR", kind: ErrNXDomain, cause: err}
	}
	ans, err := r.Query(ctx, name, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ans.RRs))
	for _, rr := range ans.RRs {
		if p, ok := rr.(*dns.PTR); ok {
			out = append(out, trimDot(p.Ptr))
		}
	}
	return out, nil
}

// LookupMX returns name's MX records by preference, hosts without the
// trailing dot (a null MX, RFC 7505, has host ".").
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	ans, err := r.Query(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	out := make([]*net.MX, 0, len(ans.RRs))
	for _, rr := range ans.RRs {
		if mx, ok := rr.(*dns.MX); ok {
			out = append(out, &net.MX{Host: trimDot(mx.Mx), Pref: mx.Preference})
		}
	}
	slices.SortStableFunc(out, func(a, b *net.MX) int { return int(a.Pref) - int(b.Pref) })
	return out, nil
}

func trimDot(s string) string {
	if len(s) > 1 {
		return strings.TrimSuffix(s, ".")
	}
	return s
}
