package signing

import (
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"time"
)

// patternKind orders patterns from the most specific.
type patternKind int

const (
	patAddress patternKind = iota // user@example.com
	patDomain                     // example.com
	patSub                        // *.example.com: every subdomain, not the domain itself
	patAny                        // *
)

type pattern struct {
	kind  patternKind
	value string // lower case: address, domain or parent domain
}

func parsePattern(s string) (pattern, error) {
	v := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
	switch {
	case v == "":
		return pattern{}, errors.New("required: a domain, *.domain, * or an address")
	case v == "*":
		return pattern{kind: patAny}, nil
	case strings.HasPrefix(v, "*@"):
		// OpenDKIM's SigningTable writes a domain as *@example.com.
		return parsePattern(v[2:])
	case strings.Contains(v, "@"):
		local, dom, _ := strings.Cut(v, "@")
		if local == "" || strings.Contains(dom, "@") || !validDomain(dom) {
			return pattern{}, fmt.Errorf("%q is not an address", s)
		}
		return pattern{kind: patAddress, value: v}, nil
	case strings.HasPrefix(v, "*."), strings.HasPrefix(v, "."):
		parent := strings.TrimPrefix(strings.TrimPrefix(v, "*"), ".")
		if !validDomain(parent) {
			return pattern{}, fmt.Errorf("%q: %q is not a domain name", s, parent)
		}
		return pattern{kind: patSub, value: parent}, nil
	case !validDomain(v):
		return pattern{}, fmt.Errorf("%q is not a domain name", s)
	}
	return pattern{kind: patDomain, value: v}, nil
}

// match reports whether the pattern serves the address and how closely:
// a smaller score is more specific.
func (p pattern) match(addr, domain string) (score int, ok bool) {
	switch p.kind {
	case patAddress:
		return 0, addr == p.value
	case patDomain:
		return 1, domain == p.value
	case patSub:
		// The longer the parent, the closer the match.
		if strings.HasSuffix(domain, "."+p.value) {
			return 1000 - len(p.value), true
		}
		return 0, false
	}
	return 10000, true
}

// Key is one loaded key table entry.
type Key struct {
	pat      pattern
	Domain   string // as configured
	Selector string
	File     string
	sdid     string // signing_domain, "" for the default
	signer   crypto.Signer
	// Err says why the key could not be loaded; the entry then has no key.
	Err error
}

// SDID is the d= this entry signs a From domain with.
func (k *Key) SDID(fromDomain string) string {
	switch {
	case k.sdid != "":
		return k.sdid
	case k.pat.kind == patSub:
		return k.pat.value
	case k.pat.kind == patAddress:
		_, d, _ := strings.Cut(k.pat.value, "@")
		return d
	case k.pat.kind == patAny:
		return fromDomain
	}
	return k.pat.value
}

// Usable reports whether the entry has a key to sign with.
func (k *Key) Usable() bool { return k.signer != nil }

// Signer is the private key, nil when it could not be loaded.
func (k *Key) Signer() crypto.Signer { return k.signer }

// Algorithm is "rsa" or "ed25519".
func (k *Key) Algorithm() string { return algorithm(k.signer) }

func (k *Key) String() string { return k.Selector + "._domainkey (" + k.Domain + ")" }

// Table is the key table and signing options in force. It does not change
// once loaded; a reload builds a new one.
type Table struct {
	keys      []*Key
	internal  []netip.Prefix
	headerCan string
	bodyCan   string
	headers   []string
	oversign  []string
	expire    time.Duration
	tempfail  bool
}

// Load reads every key file of cfg (relative paths from baseDir). A key
// file that cannot be read keeps prev's key from the same file, if any;
// otherwise the entry stays without a key (mail for it is a missing key)
// and the problem is logged. Only config problems are errors.
func Load(cfg Config, baseDir string, prev *Table, log *slog.Logger) (*Table, error) {
	if err := cfg.Problems().Under("signing").Err(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	t := &Table{expire: cfg.Expire, tempfail: cfg.OnMissingKey == MissingTempfail}
	t.headerCan, t.bodyCan, _ = parseCanon(cfg.Canonicalization)
	for _, n := range cfg.InternalNetworks {
		p, _ := parseNetwork(n)
		t.internal = append(t.internal, p)
	}
	// Each name once: listed twice, its fields would be hashed twice.
	for _, h := range cfg.Headers {
		if !containsFold(t.headers, h) {
			t.headers = append(t.headers, h)
		}
	}
	if len(t.headers) == 0 {
		t.headers = DefaultHeaders
	}
	t.oversign = append(append([]string(nil), DefaultOversign...), cfg.Oversign...)
	for _, h := range t.oversign {
		if !containsFold(t.headers, h) {
			t.headers = append(append([]string(nil), t.headers...), h)
		}
	}
	for _, kc := range cfg.Keys {
		pat, _ := parsePattern(kc.Domain)
		file := kc.KeyFile
		if !filepath.IsAbs(file) {
			file = filepath.Join(baseDir, file)
		}
		k := &Key{pat: pat, Domain: kc.Domain, Selector: strings.ToLower(kc.Selector), File: file, sdid: strings.ToLower(kc.SigningDomain)}
		k.signer, k.Err = ReadKey(file)
		if k.Err != nil {
			if old := prev.keyFrom(file); old != nil {
				k.signer = old
				log.Error("DKIM key file cannot be read; keeping the key loaded before", "domain", kc.Domain, "selector", kc.Selector, "err", k.Err)
				k.Err = nil
			} else {
				log.Error("DKIM key file cannot be read; mail for its domain has no key", "domain", kc.Domain, "selector", kc.Selector, "err", k.Err)
			}
		}
		t.keys = append(t.keys, k)
	}
	return t, nil
}

// keyFrom returns the key loaded from file, if any.
func (t *Table) keyFrom(file string) crypto.Signer {
	if t == nil {
		return nil
	}
	for _, k := range t.keys {
		if k.File == file && k.signer != nil {
			return k.signer
		}
	}
	return nil
}

// Enabled reports whether there is any key table entry.
func (t *Table) Enabled() bool { return t != nil && len(t.keys) > 0 }

// Keys returns every entry, in config order.
func (t *Table) Keys() []*Key { return t.keys }

// Internal reports whether a client address is in signing.internal_networks.
func (t *Table) Internal(ip netip.Addr) bool {
	if t == nil || !ip.IsValid() {
		return false
	}
	ip = ip.Unmap()
	for _, p := range t.internal {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// TempfailOnMissingKey reports whether a missing key defers the message.
func (t *Table) TempfailOnMissingKey() bool { return t != nil && t.tempfail }

// Lookup returns the entries that serve a From address: every entry of
// the most specific pattern that matches, so one domain can have an RSA
// and an Ed25519 key at once. None: the domain is not in the table.
func (t *Table) Lookup(from string) []*Key {
	if t == nil {
		return nil
	}
	addr := strings.ToLower(strings.TrimSuffix(strings.Trim(strings.TrimSpace(from), "<>"), "."))
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return nil
	}
	domain := addr[at+1:]
	best := -1
	var out []*Key
	for _, k := range t.keys {
		score, ok := k.pat.match(addr, domain)
		switch {
		case !ok:
		case best < 0 || score < best:
			best, out = score, []*Key{k}
		case score == best && k.pat == out[0].pat:
			out = append(out, k)
		}
	}
	return out
}
