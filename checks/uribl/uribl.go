// Package uribl queries URI blocklists (SURBL, URIBL and Spamhaus DBL
// style) about the links of a message: each distinct registrable domain
// as <domain>.<zone>, each IP-literal host reversed as for IP lists.
package uribl

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/miekg/dns"

	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/internal/config"
)

// DefaultMaxQueries is how many names one zone is asked about per
// message when max_queries is not set.
const DefaultMaxQueries = 20

// parallel bounds the look-ups of one message in flight at once.
const parallel = 8

// Zone is one URI list.
type Zone struct {
	// Zone is the list's DNS zone, e.g. multi.surbl.org.
	Zone string `yaml:"zone"`
	// Codes name exact answers, e.g. {"127.0.1.2": spam}.
	Codes map[string]string `yaml:"codes"`
	// Bitmask names bits of the answer's last octet, e.g. {2: black}.
	Bitmask map[int]string `yaml:"bitmask"`
	// MaxQueries is how many names of one message this zone is asked
	// about at most, in order of first appearance; 0 means
	// DefaultMaxQueries.
	MaxQueries int `yaml:"max_queries"`
}

// Config is the uribl section.
type Config struct {
	Zones []Zone `yaml:"zones"`
}

// Checker queries the configured lists. It is safe for concurrent use.
type Checker struct {
	r     *resolver.Resolver
	zones []list
}

type list struct {
	name  string
	names dnsbl.Namer
	max   int
}

// New checks cfg and returns a Checker that queries through r; nil when
// no zone is configured.
func New(r *resolver.Resolver, cfg Config) (*Checker, error) {
	var ps config.Problems
	zones := compile(cfg, &ps)
	if err := ps.Err(); err != nil {
		return nil, err
	}
	if len(zones) == 0 {
		return nil, nil
	}
	return &Checker{r: r, zones: zones}, nil
}

// Validate reports every bad zone as config.Problems keyed within the
// uribl section ("zones[1].zone").
func (cfg Config) Validate() error {
	var ps config.Problems
	compile(cfg, &ps)
	return ps.Err()
}

func compile(cfg Config, ps *config.Problems) []list {
	seen := map[string]bool{}
	var out []list
	for i, z := range cfg.Zones {
		at := fmt.Sprintf("zones[%d]", i)
		name, ok := dnsbl.ZoneName(z.Zone, at, seen, ps)
		if !ok {
			continue
		}
		if z.MaxQueries < 0 {
			ps.Add(at+".max_queries", "must not be negative")
			continue
		}
		out = append(out, list{name: name, names: dnsbl.NewNamer(z.Codes, z.Bitmask, at, ps), max: cmp.Or(z.MaxQueries, DefaultMaxQueries)})
	}
	return out
}

// Check asks every list about names: registrable domains (as URI lists
// expect them, not hosts) and IP addresses. Repeats, and names that are
// neither, are skipped; each list is asked about its first max_queries
// names. It returns, in configuration order, one Result per listed name
// and zone, and at most one error Result per zone that failed (SERVFAIL,
// timeout, or an answer that is no listing such as 127.255.255.254).
func (c *Checker) Check(ctx context.Context, names []string) []Result {
	if c == nil {
		return nil
	}
	most := 0
	for _, z := range c.zones {
		most = max(most, z.max)
	}
	qs := queries(names, most)
	if len(qs) == 0 {
		return nil
	}
	type job struct{ zone, name int }
	answers := make([][]*Result, len(c.zones))
	var jobs []job
	for zi, z := range c.zones {
		answers[zi] = make([]*Result, min(len(qs), z.max))
		for ni := range answers[zi] {
			jobs = append(jobs, job{zi, ni})
		}
	}
	work := make(chan job)
	var wg sync.WaitGroup
	for range min(parallel, len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				answers[j.zone][j.name] = c.one(ctx, c.zones[j.zone], qs[j.name])
			}
		}()
	}
	for _, j := range jobs {
		work <- j
	}
	close(work)
	wg.Wait()
	var out []Result
	for _, zone := range answers {
		failed := false
		for _, r := range zone {
			switch {
			case r == nil:
			case r.Error == "":
				out = append(out, *r)
			case !failed:
				// One error says the zone failed; the rest would repeat it.
				failed = true
				out = append(out, *r)
			}
		}
	}
	return out
}

// query is one name to ask about: the label to put before the zone and
// the name as results show it.
type query struct{ label, shown string }

// queries are the distinct names to ask about, the first most of them.
func queries(names []string, most int) []query {
	var out []query
	seen := map[string]bool{}
	for _, n := range names {
		if len(out) == most {
			break
		}
		d := strings.ToLower(strings.TrimSuffix(strings.Trim(strings.TrimSpace(n), "[]"), "."))
		q := query{label: d, shown: d}
		if ip, err := netip.ParseAddr(d); err == nil {
			if ip.Zone() != "" {
				continue
			}
			ip = ip.Unmap()
			if !ip.IsGlobalUnicast() || ip.IsPrivate() {
				// Loopback, private, link-local: no list knows them, and
				// 127.0.0.2 is the lists' test entry, listed by design.
				continue
			}
			q = query{label: dnsbl.Reverse(ip), shown: ip.String()}
		} else if !dnsbl.Queryable(d) {
			continue
		}
		if !seen[q.shown] {
			seen[q.shown] = true
			out = append(out, q)
		}
	}
	return out
}

// one asks one list about one name; nil means not listed.
func (c *Checker) one(ctx context.Context, z list, q query) *Result {
	addrs, err := c.r.LookupAddrs(ctx, q.label+"."+z.name, dns.TypeA)
	if err != nil {
		if resolver.IsNotFound(err) {
			return nil
		}
		return &Result{Zone: z.name, Query: q.shown, Error: fmt.Sprintf("asking %s about %s: %v", z.name, q.shown, err)}
	}
	if slices.Contains(addrs, noIPQueries) {
		return nil
	}
	r := dnsbl.Answer(z.name, q.shown, addrs, z.names, refused)
	return &r
}

// refused adds 127.0.0.1 to dnsbl.Refused: URIBL and SURBL answer it to
// resolvers whose queries they refuse, and no list uses it as a listing.
func refused(a netip.Addr) bool {
	return dnsbl.Refused(a) || a == netip.AddrFrom4([4]byte{127, 0, 0, 1})
}

// noIPQueries is Spamhaus DBL's answer to an IP-literal host ("IP
// queries prohibited"): for good, so not an error to retry on, and no
// listing either.
var noIPQueries = netip.AddrFrom4([4]byte{127, 0, 1, 255})
