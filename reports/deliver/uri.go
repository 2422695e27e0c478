package deliver

import (
	"fmt"
	"math"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
)

// maxURILen bounds one rua URI; a DNS TXT record cannot hold much more.
const maxURILen = 2048

// ruaURI is one URI of a rua tag.
type ruaURI struct {
	raw     string // as published, size suffix included
	address string // the mailto address, domain lower-cased
	domain  string // its domain: the destination host
	limit   int64  // the "!size" limit in bytes; -1 when none
}

// parseURI reads one dmarc-uri (RFC 9989 section 4.7), with the obsolete
// size suffix "!" 1*DIGIT [ "k" / "m" / "g" / "t" ] that RFC 7489 defined.
// Only mailto URIs can be delivered to.
func parseURI(raw string) (ruaURI, error) {
	u := ruaURI{raw: raw, limit: -1}
	s := strings.TrimSpace(raw)
	if s == "" {
		return u, fmt.Errorf("empty URI")
	}
	if len(s) > maxURILen {
		return u, fmt.Errorf("URI longer than %d bytes", maxURILen)
	}
	if i := strings.LastIndexByte(s, '!'); i >= 0 {
		n, err := parseSize(s[i+1:])
		if err != nil {
			return u, fmt.Errorf("size limit %q: %v", s[i+1:], err)
		}
		u.limit = n
		s = s[:i]
	}
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || scheme == "" {
		return u, fmt.Errorf("not a URI: no scheme")
	}
	if !strings.EqualFold(scheme, "mailto") {
		return u, fmt.Errorf("scheme %q: only mailto URIs are supported", scheme)
	}
	// Header fields (?subject=...) are not ours to set.
	to, _, _ := strings.Cut(rest, "?")
	to, err := url.PathUnescape(to)
	if err != nil {
		return u, fmt.Errorf("bad percent-encoding: %v", err)
	}
	if strings.Contains(to, ",") {
		return u, fmt.Errorf("more than one address in one URI")
	}
	a, err := mail.ParseAddress(to)
	if err != nil || a.Name != "" {
		return u, fmt.Errorf("%q is not an email address", to)
	}
	local, domain, _ := strings.Cut(a.Address, "@")
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if domain == "" || strings.HasPrefix(domain, "[") || !strings.Contains(domain, ".") {
		return u, fmt.Errorf("%q: the address must be at a domain name", to)
	}
	u.address = local + "@" + domain
	u.domain = domain
	return u, nil
}

// parseSize reads 1*DIGIT [ "k" / "m" / "g" / "t" ] as bytes, the units
// powers of 1024.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	if s != "" {
		switch s[len(s)-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		case 't', 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			s = s[:len(s)-1]
		}
	}
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("want digits and an optional unit k, m, g or t")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		// Larger than anything we could send: no limit at all.
		return math.MaxInt64, nil
	}
	return n * mult, nil
}
