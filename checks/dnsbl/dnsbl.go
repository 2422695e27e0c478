// Package dnsbl queries DNS block and allow lists (RFC 5782): IP lists for
// the client's address (IPv4 reversed octets, IPv6 reversed nibbles) and
// domain lists for names such as the HELO and the sender's domain.
package dnsbl

import (
	"context"
	"fmt"
	"net/netip"
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
	// Bitmask names bits of the answer's last octet, e.g. {2: black,
	// 4: grey}, for lists that add up their sublists.
	Bitmask map[int]string `yaml:"bitmask"`
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
	names Namer
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
		name, ok := ZoneName(z.Zone, at, seen, ps)
		if !ok {
			continue
		}
		cz := list{name: name, allow: z.Allow, names: NewNamer(z.Codes, z.Bitmask, at, ps)}
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
	q := Reverse(ip.Unmap())
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
		if seen[d] || !Queryable(d) {
			continue
		}
		seen[d] = true
		out = append(out, c.query(ctx, c.domains, d, n)...)
	}
	return out
}

// ZoneName checks a configured zone name, adding what is wrong to ps
// under at ("zones[0]"), and returns it lower case without the trailing
// dot. seen holds the names already taken.
func ZoneName(zone, at string, seen map[string]bool, ps *config.Problems) (string, bool) {
	name := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(zone), "."))
	if _, ok := dns.IsDomainName(name); !ok || name == "" || strings.Contains(name, "..") || !strings.Contains(name, ".") {
		ps.Add(at+".zone", "%q is not a domain name", zone)
		return "", false
	}
	if seen[name] {
		ps.Add(at+".zone", "zone %s is listed twice", name)
		return "", false
	}
	seen[name] = true
	return name, true
}

// Queryable reports whether d (lower case, no trailing dot) is a domain
// name a domain list can be asked about: not a single label, an address
// literal or an IP address.
func Queryable(d string) bool {
	if !strings.Contains(d, ".") || strings.HasPrefix(d, "[") {
		return false
	}
	if _, err := netip.ParseAddr(d); err == nil {
		return false
	}
	_, ok := dns.IsDomainName(d)
	return ok && !strings.Contains(d, "..")
}

// Reverse is the RFC 5782 query label: reversed octets for IPv4,
// reversed nibbles for IPv6.
func Reverse(ip netip.Addr) string {
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
	res := Answer(z.name, shown, addrs, z.names, Refused)
	res.Allow = z.allow
	return &res
}
