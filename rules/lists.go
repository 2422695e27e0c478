package rules

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
)

// List types.
const (
	listIP      = "ip"
	listDomain  = "domain"
	listAddress = "address"
	listRegexp  = "regexp"
)

var listNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]*$`)

// list is one named list, loaded and indexed for fast membership.
type list struct {
	name string
	kind string
	file string
	size int

	ips     ipSet
	domains domainSet // domain lists, and @domain entries of address lists
	addrs   map[string]struct{}
	re      *regexp.Regexp
}

// contains reports whether v is in the list. Domain lists take an address
// too and look up its domain.
func (l *list) contains(v string) bool {
	switch l.kind {
	case listIP:
		a, err := netip.ParseAddr(strings.Trim(strings.TrimSpace(v), "[]"))
		return err == nil && l.ips.contains(a)
	case listDomain:
		if strings.IndexByte(v, '@') >= 0 {
			v = v[strings.LastIndexByte(v, '@')+1:]
		}
		return l.domains.contains(v)
	case listAddress:
		v = strings.ToLower(strings.Trim(strings.TrimSpace(v), "<>"))
		if _, ok := l.addrs[v]; ok {
			return true
		}
		i := strings.LastIndexByte(v, '@')
		return i >= 0 && l.domains.contains(v[i+1:])
	case listRegexp:
		return l.re != nil && l.re.MatchString(v)
	}
	return false
}

// readList loads a list file; every bad line is a problem at file:line.
func readList(name, kind, path string, p *problems) *list {
	data, err := os.ReadFile(path)
	if err != nil {
		p.errorf(Pos{File: path}, "list %q: %v", name, err)
		return nil
	}
	return parseList(name, kind, path, data, p)
}

func parseList(name, kind, path string, data []byte, p *problems) *list {
	l := &list{name: name, kind: kind, file: path}
	var b listBuilder
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if kind != listRegexp {
			if i := strings.IndexByte(line, '#'); i >= 0 {
				line = strings.TrimSpace(line[:i])
			}
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := b.add(kind, line); err != nil {
			p.errorf(Pos{File: path, Line: n, Col: 1}, "list %q: %v", name, err)
			continue
		}
		l.size++
	}
	if err := sc.Err(); err != nil {
		p.errorf(Pos{File: path, Line: n + 1}, "list %q: reading: %v", name, err)
	}
	b.build(l)
	return l
}

// listBuilder gathers entries before they are indexed.
type listBuilder struct {
	ranges  []ipRange
	exact   map[string]struct{}
	wild    map[string]struct{}
	addrs   map[string]struct{}
	regexps []string
}

func (b *listBuilder) add(kind, entry string) error {
	switch kind {
	case listIP:
		r, err := parseRange(entry)
		if err != nil {
			return err
		}
		b.ranges = append(b.ranges, r)
	case listDomain:
		return b.addDomain(entry)
	case listAddress:
		entry = strings.ToLower(strings.Trim(entry, "<>"))
		i := strings.LastIndexByte(entry, '@')
		if i < 0 {
			return fmt.Errorf("%q is not an address: want user@domain, @domain or @*.domain", entry)
		}
		if i == 0 {
			return b.addDomain(entry[1:])
		}
		if dom := entry[i+1:]; strings.HasPrefix(dom, "*.") || checkDomain(dom) != nil {
			return fmt.Errorf("%q is not an address: want user@domain, @domain or @*.domain", entry)
		}
		if b.addrs == nil {
			b.addrs = map[string]struct{}{}
		}
		b.addrs[entry] = struct{}{}
	case listRegexp:
		if _, err := regexp.Compile(entry); err != nil {
			return fmt.Errorf("bad regular expression: %v", err)
		}
		b.regexps = append(b.regexps, entry)
	}
	return nil
}

func (b *listBuilder) addDomain(entry string) error {
	d := strings.TrimSuffix(strings.ToLower(entry), ".")
	wild := strings.HasPrefix(d, "*.")
	if wild {
		d = d[2:]
	}
	if err := checkDomain(d); err != nil {
		return fmt.Errorf("%q: %v", entry, err)
	}
	if wild {
		if b.wild == nil {
			b.wild = map[string]struct{}{}
		}
		b.wild[d] = struct{}{}
		return nil
	}
	if b.exact == nil {
		b.exact = map[string]struct{}{}
	}
	b.exact[d] = struct{}{}
	return nil
}

func (b *listBuilder) build(l *list) {
	l.ips = newIPSet(b.ranges)
	l.domains = domainSet{exact: b.exact, wild: b.wild}
	l.addrs = b.addrs
	if len(b.regexps) > 0 {
		// One alternation runs every pattern in a single pass.
		parts := make([]string, len(b.regexps))
		for i, r := range b.regexps {
			parts[i] = "(?:" + r + ")"
		}
		l.re = regexp.MustCompile(strings.Join(parts, "|"))
	}
}

// checkDomain accepts host names as mail uses them, underscores included.
func checkDomain(d string) error {
	if d == "" || len(d) > 253 {
		return fmt.Errorf("not a domain name")
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("not a domain name (empty or overlong label)")
		}
		for _, r := range label {
			ok := r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127
			if !ok {
				if r == '*' {
					return fmt.Errorf("a wildcard may only lead the name, as in *.example.com")
				}
				return fmt.Errorf("not a domain name (bad character %q)", r)
			}
		}
	}
	return nil
}

// domainSet holds exact names and wildcards (*.name, every name below
// name). A look-up costs one hash probe per label.
type domainSet struct {
	exact map[string]struct{}
	wild  map[string]struct{}
}

func (s domainSet) contains(d string) bool {
	d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
	if d == "" {
		return false
	}
	if _, ok := s.exact[d]; ok {
		return true
	}
	if len(s.wild) == 0 {
		return false
	}
	for i := strings.IndexByte(d, '.'); i >= 0; i = strings.IndexByte(d, '.') {
		d = d[i+1:]
		if _, ok := s.wild[d]; ok {
			return true
		}
	}
	return false
}

// addr128 is an address as a 128-bit number; IPv4 is IPv4-mapped IPv6.
type addr128 struct{ hi, lo uint64 }

func toAddr128(a netip.Addr) addr128 {
	b := a.Unmap().WithZone("").As16()
	return addr128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func (a addr128) cmp(b addr128) int {
	if c := cmp.Compare(a.hi, b.hi); c != 0 {
		return c
	}
	return cmp.Compare(a.lo, b.lo)
}

type ipRange struct{ first, last addr128 }

func parseRange(s string) (ipRange, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return ipRange{}, fmt.Errorf("%q is not an address or CIDR", s)
		}
		p = p.Masked()
		bits := p.Bits()
		if p.Addr().Is4() {
			bits += 96
		}
		first := toAddr128(p.Addr())
		last := first
		// Set every host bit of the prefix.
		if bits < 64 {
			last.hi |= ^uint64(0) >> bits
			last.lo = ^uint64(0)
		} else if bits < 128 {
			last.lo |= ^uint64(0) >> (bits - 64)
		}
		return ipRange{first, last}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return ipRange{}, fmt.Errorf("%q is not an address or CIDR", s)
	}
	x := toAddr128(a)
	return ipRange{x, x}, nil
}

// ipSet is sorted, merged ranges: a look-up is one binary search.
type ipSet []ipRange

func newIPSet(rs []ipRange) ipSet {
	if len(rs) == 0 {
		return nil
	}
	slices.SortFunc(rs, func(a, b ipRange) int { return a.first.cmp(b.first) })
	out := ipSet{rs[0]}
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if r.first.cmp(last.last) <= 0 || (last.last.lo+1 == r.first.lo && last.last.hi == r.first.hi && last.last.lo != ^uint64(0)) {
			if r.last.cmp(last.last) > 0 {
				last.last = r.last
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

func (s ipSet) contains(a netip.Addr) bool {
	if !a.IsValid() || len(s) == 0 {
		return false
	}
	x := toAddr128(a)
	// The first range starting after x; the one before it may hold x.
	i, _ := slices.BinarySearchFunc(s, x, func(r ipRange, x addr128) int {
		if r.first.cmp(x) <= 0 {
			return -1
		}
		return 1
	})
	return i > 0 && s[i-1].last.cmp(x) >= 0
}
