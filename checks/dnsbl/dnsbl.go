// Package dnsbl queries DNS block and allow lists (RFC 5782): IP lists for
// the client's address (IPv4 reversed octets, IPv6 reversed nibbles) and
// domain lists for names such as the HELO and the sender's domain.
package dnsbl

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/miekg/dns"

	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/internal/config"
)

// Zone is one list.
type Zone struct {
	// Zone is the list's DNS zone, e.g. zen.spamhaus.org.
	Zone string `yaml:"zone"`
	// Codes name the answers, e.g. {"127.0.0.2": sbl}. Answers without a
	// name still mean listed.
	Codes map[string]string `yaml:"codes"`
	// Allow marks an allow list (DNSWL): a listing vouches for the client.
	Allow bool `yaml:"allow"`
}

// Config is the lists to query.
type Config struct {
	// Zones are queried with the client's IP address.
	Zones []Zone `yaml:"zones"`
	// DomainZones are queried with domain names (HELO, sender domain).
	DomainZones []Zone `yaml:"domain_zones"`
}

// Checker queries the configured lists. It is safe for concurrent use.
type Checker struct {
	r       *resolver.Resolver
	ips     []list
	domains []list
}

type list struct {
	name  string // without the trailing dot, lower case
	codes map[netip.Addr]string
	allow bool
}

// New checks cfg and returns a Checker that queries through r.
func New(r *resolver.Resolver, cfg Config) (*Checker, error) {
	var ps config.Problems
	c := &Checker{r: r, ips: compile(cfg.Zones, "zones", &ps), domains: compile(cfg.DomainZones, "domain_zones", &ps)}
	if err := ps.Err(); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate reports every bad list as config.Problems keyed within the
// dnsbl section ("zones[1].zone").
func (cfg Config) Validate() error {
	var ps config.Problems
	compile(cfg.Zones, "zones", &ps)
	compile(cfg.DomainZones, "domain_zones", &ps)
	return ps.Err()
}

func compile(zs []Zone, key string, ps *config.Problems) []list {
	seen := map[string]bool{}
	out := make([]list, 0, len(zs))
	for i, z := range zs {
		at := fmt.Sprintf("%s[%d]", key, i)
		name := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(z.Zone), "."))
		if _, ok := dns.IsDomainName(name); !ok || name == "" || strings.Contains(name, "..") || !strings.Contains(name, ".") {
			ps.Add(at+".zone", "%q is not a domain name", z.Zone)
			continue
		}
		if seen[name] {
			ps.Add(at+".zone", "zone %s is listed twice", name)
			continue
		}
		seen[name] = true
		cz := list{name: name, allow: z.Allow, codes: map[netip.Addr]string{}}
		for _, code := range slices.Sorted(maps.Keys(z.Codes)) {
			label := z.Codes[code]
			a, err := netip.ParseAddr(code)
			if err != nil || !a.Is4() {
				ps.Add(at+".codes."+code, "%q is not an IPv4 address", code)
				continue
			}
			if strings.TrimSpace(label) == "" {
				ps.Add(at+".codes."+code, "empty name")
				continue
			}
			cz.codes[a] = label
		}
		out = append(out, cz)
	}
	return out
}

// CheckIP queries every IP list for ip, at once. It returns, in
// configuration order, one Result per list that listed ip or failed;
// lists that do not list ip are left out.
func (c *Checker) CheckIP(ctx context.Context, ip netip.Addr) []Result {
	if !ip.IsValid() || len(c.ips) == 0 {
		return nil
	}
	q := reverse(ip.Unmap())
	return c.query(ctx, c.ips, q, ip.String())
}

// CheckDomains queries every domain list for each name. Names that cannot
// be domains (address literals, single labels) are skipped; so are repeats.
func (c *Checker) CheckDomains(ctx context.Context, names ...string) []Result {
	if len(c.domains) == 0 {
		return nil
	}
	var out []Result
	seen := map[string]bool{}
	for _, n := range names {
		d := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(n), "."))
		if seen[d] || !queryable(d) {
			continue
		}
		seen[d] = true
		out = append(out, c.query(ctx, c.domains, d, n)...)
	}
	return out
}

func queryable(d string) bool {
	if !strings.Contains(d, ".") || strings.HasPrefix(d, "[") {
		return false
	}
	if _, err := netip.ParseAddr(d); err == nil {
		return false
	}
	_, ok := dns.IsDomainName(d)
	return ok && !strings.Contains(d, "..")
}

// reverse is the RFC 5782 query label: reversed octets for IPv4,
// reversed nibbles for IPv6.
func reverse(ip netip.Addr) string {
	if ip.Is4() {
		b := ip.As4()
		return fmt.Sprintf("%d.%d.%d.%d", b[3], b[2], b[1], b[0])
	}
	const hex = "0123456789abcdef"
	b := ip.As16()
	out := make([]byte, 0, 63)
	for i := 15; i >= 0; i-- {
		out = append(out, hex[b[i]&15], '.', hex[b[i]>>4], '.')
	}
	return string(out[:len(out)-1])
}

func (c *Checker) query(ctx context.Context, zones []list, label, shown string) []Result {
	results := make([]*Result, len(zones))
	var wg sync.WaitGroup
	for i, z := range zones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = c.one(ctx, z, label, shown)
		}()
	}
	wg.Wait()
	var out []Result
	for _, r := range results {
		if r != nil {
			out = append(out, *r)
		}
	}
	return out
}

// one queries a single list; nil means not listed.
func (c *Checker) one(ctx context.Context, z list, label, shown string) *Result {
	addrs, err := c.r.LookupAddrs(ctx, label+"."+z.name, dns.TypeA)
	if err != nil {
		if resolver.IsNotFound(err) {
			return nil
		}
		return &Result{Zone: z.name, Query: shown, Allow: z.allow, Error: err.Error()}
	}
	res := &Result{Zone: z.name, Query: shown, Allow: z.allow}
	for _, a := range addrs {
		// RFC 5782 section 2.1: listings are in 127.0.0.0/8. Other answers,
		// and 127.255.255.0/24 (what some lists send to resolvers they
		// refuse), say the answer cannot be trusted, not that ip is listed.
		if !a.Is4() || a.As4()[0] != 127 || (a.As4()[1] == 255 && a.As4()[2] == 255) {
			return &Result{Zone: z.name, Query: shown, Allow: z.allow, Error: fmt.Sprintf("%s answered %s, which is not a listing (the list may be refusing this resolver)", z.name, a)}
		}
		res.Codes = append(res.Codes, a.String())
		if name, ok := z.codes[a]; ok && !slices.Contains(res.Names, name) {
			res.Names = append(res.Names, name)
		}
	}
	return res
}
