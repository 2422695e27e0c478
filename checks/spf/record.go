package spf

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

type mechanism int

const (
	mechAll mechanism = iota
	mechInclude
	mechA
	mechMX
	mechPTR
	mechIP4
	mechIP6
	mechExists
)

// directive is one parsed mechanism with its qualifier.
type directive struct {
	result  string      // what a match yields: pass, fail, softfail, neutral
	mech    mechanism   //
	domain  macroString // domain-spec; nil means the current domain
	cidr4   int         // a, mx: prefix length for IPv4 addresses (32 when absent)
	cidr6   int         // a, mx: prefix length for IPv6 addresses (128 when absent)
	network netip.Prefix
	term    string // as written, for Reason
}

// record is a parsed SPF record (RFC 7208 section 4.6).
type record struct {
	directives []directive
	redirect   macroString // nil when absent
	exp        macroString // nil when absent
}

var errSyntax = errors.New("syntax error")

var (
	modifierName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9._-]*=`)
	cidr6Suffix  = regexp.MustCompile(`//(0|[1-9][0-9]{0,2})$`)
	cidr4Suffix  = regexp.MustCompile(`/(0|[1-9][0-9]?)$`)
	cidr6Plain   = regexp.MustCompile(`/(0|[1-9][0-9]{0,2})$`)
	toplabel     = regexp.MustCompile(`^(?:[0-9A-Za-z]*[A-Za-z][0-9A-Za-z]*|[0-9A-Za-z]+-[0-9A-Za-z-]*[0-9A-Za-z])$`)
)

// isSPFRecord reports whether a TXT string is an SPF version 1 record:
// "v=spf1" alone or followed by a space (section 4.5).
func isSPFRecord(txt string) bool {
	return len(txt) >= 6 && strings.EqualFold(txt[:6], "v=spf1") && (len(txt) == 6 || txt[6] == ' ')
}

// parseRecord checks the whole record's syntax before anything is
// evaluated: a syntax error anywhere is a permerror (section 4.6).
func parseRecord(txt string) (*record, error) {
	if !isSPFRecord(txt) {
		return nil, fmt.Errorf("%w: not an SPF record", errSyntax)
	}
	for i := 0; i < len(txt); i++ {
		if txt[i] < 0x20 || txt[i] > 0x7e {
			return nil, fmt.Errorf("%w: character %q (records are printable ASCII, terms separated by spaces)", errSyntax, txt[i])
		}
	}
	rec := &record{}
	for _, term := range strings.Split(txt[6:], " ") {
		if term == "" {
			continue
		}
		if m := modifierName.FindString(term); m != "" {
			name := strings.ToLower(m[:len(m)-1])
			value := term[len(m):]
			switch name {
			case "redirect", "exp":
				ds, err := parseDomainSpec(value)
				if err != nil {
					return nil, fmt.Errorf("%w: %s: %v", errSyntax, term, err)
				}
				slot := &rec.redirect
				if name == "exp" {
					slot = &rec.exp
				}
				if *slot != nil {
					return nil, fmt.Errorf("%w: %s= appears twice", errSyntax, name)
				}
				*slot = ds
			default:
				// Unknown modifiers are ignored, but must be well formed.
				if _, err := parseMacroString(value, false); err != nil {
					return nil, fmt.Errorf("%w: %s: %v", errSyntax, term, err)
				}
			}
			continue
		}
		d, err := parseDirective(term)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", errSyntax, term, err)
		}
		rec.directives = append(rec.directives, d)
	}
	return rec, nil
}

func parseDirective(term string) (directive, error) {
	d := directive{result: "pass", term: term, cidr4: 32, cidr6: 128}
	switch term[0] {
	case '+':
		term = term[1:]
	case '-':
		d.result, term = "fail", term[1:]
	case '~':
		d.result, term = "softfail", term[1:]
	case '?':
		d.result, term = "neutral", term[1:]
	}
	name, rest := term, ""
	if i := strings.IndexAny(term, ":/"); i >= 0 {
		name, rest = term[:i], term[i:]
	}
	var err error
	switch strings.ToLower(name) {
	case "all":
		d.mech = mechAll
		if rest != "" {
			return d, errors.New("all takes no argument")
		}
	case "include", "exists":
		d.mech = mechInclude
		if strings.EqualFold(name, "exists") {
			d.mech = mechExists
		}
		if !strings.HasPrefix(rest, ":") {
			return d, errors.New("a domain is required")
		}
		d.domain, err = parseDomainSpec(rest[1:])
	case "a", "mx":
		d.mech = mechA
		if strings.EqualFold(name, "mx") {
			d.mech = mechMX
		}
		if m := cidr6Suffix.FindStringSubmatchIndex(rest); m != nil {
			d.cidr6, _ = strconv.Atoi(rest[m[2]:m[3]])
			rest = rest[:m[0]]
		}
		if m := cidr4Suffix.FindStringSubmatchIndex(rest); m != nil {
			d.cidr4, _ = strconv.Atoi(rest[m[2]:m[3]])
			rest = rest[:m[0]]
		}
		if d.cidr4 > 32 || d.cidr6 > 128 {
			return d, errors.New("prefix length out of range")
		}
		if rest != "" {
			if rest[0] != ':' {
				return d, errors.New("bad prefix length")
			}
			d.domain, err = parseDomainSpec(rest[1:])
		}
	case "ptr":
		d.mech = mechPTR
		if rest != "" {
			if rest[0] != ':' {
				return d, errors.New("ptr takes no prefix length")
			}
			d.domain, err = parseDomainSpec(rest[1:])
		}
	case "ip4", "ip6":
		d.mech = mechIP4
		if strings.EqualFold(name, "ip6") {
			d.mech = mechIP6
		}
		if !strings.HasPrefix(rest, ":") {
			return d, errors.New("an address is required")
		}
		d.network, err = parseNetwork(rest[1:], d.mech == mechIP6)
	default:
		return d, errors.New("unknown mechanism")
	}
	return d, err
}

// parseNetwork parses ip4-network [ip4-cidr-length] or the ip6 equivalent.
func parseNetwork(s string, v6 bool) (netip.Prefix, error) {
	bits := 32
	re := cidr4Suffix
	if v6 {
		bits = 128
		re = cidr6Plain
	}
	if m := re.FindStringSubmatchIndex(s); m != nil {
		bits, _ = strconv.Atoi(s[m[2]:m[3]])
		s = s[:m[0]]
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.Is4() == v6 {
		return netip.Prefix{}, fmt.Errorf("bad address %q", s)
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad prefix length %d", bits)
	}
	return p, nil
}

// parseDomainSpec parses domain-spec = macro-string domain-end, where
// domain-end is "." toplabel ["."] or a macro (section 7.1).
func parseDomainSpec(s string) (macroString, error) {
	if s == "" {
		return nil, errors.New("empty domain")
	}
	ms, err := parseMacroString(s, false)
	if err != nil {
		return nil, err
	}
	if ms.endsInMacro() {
		return ms, nil
	}
	tail := strings.TrimSuffix(ms[len(ms)-1].literal, ".")
	i := strings.LastIndexByte(tail, '.')
	if i < 0 || !toplabel.MatchString(tail[i+1:]) {
		return nil, fmt.Errorf("domain %q does not end in a valid top label", s)
	}
	return ms, nil
}
