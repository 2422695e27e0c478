package dnsbl

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/mailward/mailward/internal/config"
)

// Namer names a list's answers: exact codes ("127.0.0.2": sbl) and bits
// of the answer's last octet (2: black, 4: grey), as the IP lists and the
// URI lists (checks/uribl) both configure them.
type Namer struct {
	exact map[netip.Addr]string
	bits  []bitName
}

type bitName struct {
	mask byte
	name string
}

// NewNamer checks codes and bitmask, adding what is wrong to ps under at
// ("zones[0]"), and returns what it could make of them.
func NewNamer(codes map[string]string, bitmask map[int]string, at string, ps *config.Problems) Namer {
	n := Namer{exact: map[netip.Addr]string{}}
	for _, code := range slices.Sorted(maps.Keys(codes)) {
		label := codes[code]
		a, err := netip.ParseAddr(code)
		if err != nil || !a.Is4() {
			ps.Add(at+".codes."+code, "%q is not an IPv4 address", code)
			continue
		}
		if strings.TrimSpace(label) == "" {
			ps.Add(at+".codes."+code, "empty name")
			continue
		}
		n.exact[a] = label
	}
	for _, mask := range slices.Sorted(maps.Keys(bitmask)) {
		key := fmt.Sprintf("%s.bitmask.%d", at, mask)
		if mask < 1 || mask > 255 {
			ps.Add(key, "%d is not a bitmask of the last octet (1 to 255)", mask)
			continue
		}
		if strings.TrimSpace(bitmask[mask]) == "" {
			ps.Add(key, "empty name")
			continue
		}
		n.bits = append(n.bits, bitName{mask: byte(mask), name: bitmask[mask]})
	}
	return n
}

// Names appends to names what a names: the exact code's name, then the
// name of every configured bitmask sharing a bit with the last octet,
// each name once.
func (n Namer) Names(names []string, a netip.Addr) []string {
	add := func(name string) {
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	if name, ok := n.exact[a]; ok {
		add(name)
	}
	if a.Is4() {
		last := a.As4()[3]
		for _, b := range n.bits {
			if last&b.mask != 0 {
				add(b.name)
			}
		}
	}
	return names
}

// Refused reports whether a is no listing but a list telling this
// resolver something else: only answers in 127.0.0.0/8 are listings (RFC
// 5782 section 2.1), and 127.255.255.0/24 is what Spamhaus and others
// send to resolvers they refuse (such as public ones).
func Refused(a netip.Addr) bool {
	if !a.Is4() {
		return true
	}
	b := a.As4()
	return b[0] != 127 || (b[1] == 255 && b[2] == 255)
}

// Answer turns one zone's A records for one query into a Result: the
// codes and their names, or an error when an answer is no listing.
// refused says which answers are errors (Refused, or stricter).
func Answer(zone, query string, addrs []netip.Addr, n Namer, refused func(netip.Addr) bool) Result {
	res := Result{Zone: zone, Query: query}
	for _, a := range addrs {
		if refused(a) {
			return Result{Zone: zone, Query: query, Error: fmt.Sprintf("%s answered %s, which is not a listing (the list may be refusing this resolver)", zone, a)}
		}
		res.Codes = append(res.Codes, a.String())
		res.Names = n.Names(res.Names, a)
	}
	return res
}
