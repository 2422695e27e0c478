// Package signing adds DKIM signatures (RFC 6376, RFC 8301, RFC 8463) to
// outbound mail: a key table maps From domains to selectors and keys, and a
// Message hashes a body as it streams and signs the header as it will be
// delivered, once every other header edit is known.
package signing

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/mailward/mailward/internal/config"
)

// Config is the signing section of the config file.
type Config struct {
	// Keys is the key table; signing is off while it is empty.
	Keys []KeyConfig `yaml:"keys"`
	// InternalNetworks are the client networks whose mail is signed
	// without authentication, as OpenDKIM's InternalHosts.
	InternalNetworks []string `yaml:"internal_networks"`
	// Canonicalization is header/body: relaxed/relaxed (the default),
	// relaxed/simple, simple/relaxed or simple/simple.
	Canonicalization string `yaml:"canonicalization"`
	// Headers replaces the list of header fields signed unless empty.
	Headers []string `yaml:"headers"`
	// Oversign names fields signed once more than they occur, so that
	// none can be added in transit; From, To, Subject, Date and
	// Message-ID always are.
	Oversign []string `yaml:"oversign"`
	// Expire sets x= that long after t=; 0 leaves x= out.
	Expire time.Duration `yaml:"expire"`
	// OnMissingKey is what happens to mail to be signed whose key table
	// entry has no usable key: "unsigned" (sent on, logged and counted)
	// or "tempfail".
	OnMissingKey string `yaml:"on_missing_key"`
}

// KeyConfig is one key table entry.
type KeyConfig struct {
	// Domain is the From domain the entry serves: "example.com", every
	// subdomain with "*.example.com" (or ".example.com"), any domain
	// with "*", or one address "user@example.com".
	Domain   string `yaml:"domain"`
	Selector string `yaml:"selector"`
	// KeyFile is a PEM private key (PKCS#8, or PKCS#1 RSA as
	// opendkim-genkey writes), relative to the config file's directory.
	KeyFile string `yaml:"key_file"`
	// SigningDomain is d=; by default the entry's domain, the parent for
	// a subdomain pattern, the From domain for "*".
	SigningDomain string `yaml:"signing_domain"`
}

// Missing-key choices.
const (
	MissingUnsigned = "unsigned"
	MissingTempfail = "tempfail"
)

// DefaultHeaders are the fields signed unless Config.Headers says
// otherwise: RFC 6376 section 5.4.1's list and the MIME and list fields
// whose change alters what a reader sees.
var DefaultHeaders = []string{
	"From", "Reply-To", "Subject", "Date", "To", "Cc", "Message-ID",
	"In-Reply-To", "References", "MIME-Version", "Content-Type",
	"Content-Transfer-Encoding", "Content-Disposition", "Content-ID",
	"Resent-Date", "Resent-From", "Resent-To", "Resent-Cc", "Resent-Message-ID",
	"List-Id", "List-Help", "List-Unsubscribe", "List-Unsubscribe-Post",
	"List-Subscribe", "List-Post", "List-Owner", "List-Archive",
	"Sender", "Feedback-ID",
}

// DefaultOversign are always signed once more than they occur.
var DefaultOversign = []string{"From", "To", "Subject", "Date", "Message-ID"}

// DefaultInternalNetworks is what OpenDKIM's InternalHosts defaults to.
var DefaultInternalNetworks = []string{"127.0.0.0/8", "::1/128"}

// DefaultConfig is the section with nothing set: no keys, so no signing.
func DefaultConfig() Config {
	return Config{
		InternalNetworks: append([]string(nil), DefaultInternalNetworks...),
		Canonicalization: "relaxed/relaxed",
		OnMissingKey:     MissingUnsigned,
	}
}

// Problems lists every bad value, keys relative to the signing section, so the config loader can point at each.
// Key files are read by Load, not here.
func (c Config) Problems() config.Problems {
	var out config.Problems
	bad := out.Add
	for _, n := range c.InternalNetworks {
		if _, err := parseNetwork(n); err != nil {
			bad("internal_networks", "%v", err)
		}
	}
	if _, _, err := parseCanon(c.Canonicalization); err != nil {
		bad("canonicalization", "%v", err)
	}
	for _, list := range []struct {
		key   string
		names []string
	}{{"headers", c.Headers}, {"oversign", c.Oversign}} {
		for _, h := range list.names {
			if !validFieldName(h) {
				bad(list.key, "%q is not a header field name", h)
			} else if strings.EqualFold(h, "DKIM-Signature") {
				bad(list.key, "DKIM-Signature cannot be signed by its own signature")
			}
		}
	}
	if len(c.Headers) > 0 && !containsFold(c.Headers, "From") {
		bad("headers", "must include From (RFC 6376 section 5.4)")
	}
	if c.Expire < 0 {
		bad("expire", "must not be negative (0 leaves x= out)")
	}
	switch c.OnMissingKey {
	case "", MissingUnsigned, MissingTempfail:
	default:
		bad("on_missing_key", "%q: want unsigned or tempfail", c.OnMissingKey)
	}
	for i, k := range c.Keys {
		key := fmt.Sprintf("keys[%d]", i)
		if _, err := parsePattern(k.Domain); err != nil {
			bad(key+".domain", "%v", err)
		}
		if k.Selector == "" {
			bad(key+".selector", "required")
		} else if !validDomain(k.Selector) {
			bad(key+".selector", "%q is not a DNS label sequence", k.Selector)
		}
		if k.KeyFile == "" {
			bad(key+".key_file", "required")
		}
		if k.SigningDomain != "" && !validDomain(k.SigningDomain) {
			bad(key+".signing_domain", "%q is not a domain name", k.SigningDomain)
		}
	}
	return out
}

func parseNetwork(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR network", s)
}

// Canonicalization names.
const (
	simple  = "simple"
	relaxed = "relaxed"
)

func parseCanon(s string) (header, body string, err error) {
	if s == "" {
		return relaxed, relaxed, nil
	}
	h, b, ok := strings.Cut(s, "/")
	if !ok {
		b = simple // RFC 6376 3.5: "c=relaxed" means relaxed/simple
	}
	for _, v := range []string{h, b} {
		if v != simple && v != relaxed {
			return "", "", fmt.Errorf("%q: want relaxed/relaxed, relaxed/simple, simple/relaxed or simple/simple", s)
		}
	}
	return h, b, nil
}

func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' || s[i] == ':' {
			return false
		}
	}
	return true
}

func validDomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}
