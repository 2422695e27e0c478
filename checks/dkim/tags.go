package dkim

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// parseTags reads an RFC 6376 section 3.2 tag=value list. Values keep
// inner white space; the caller strips it where the grammar allows FWS.
func parseTags(s string) (map[string]string, error) {
	tags := map[string]string{}
	for spec := range strings.SplitSeq(s, ";") {
		if strings.TrimSpace(spec) == "" {
			continue // an empty spec after the last ";" is allowed
		}
		name, value, ok := strings.Cut(spec, "=")
		if !ok {
			return tags, fmt.Errorf("tag %q has no '='", clip(strings.TrimSpace(spec)))
		}
		name = trimFWS(name)
		if !validTagName(name) {
			return tags, fmt.Errorf("bad tag name %q", clip(name))
		}
		if _, dup := tags[name]; dup {
			return tags, fmt.Errorf("tag %q appears twice", name)
		}
		tags[name] = trimFWS(value)
	}
	return tags, nil
}

// validTagName is ALPHA *(ALPHA / DIGIT / "_").
func validTagName(s string) bool {
	if s == "" || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isAlpha(c) && !(c >= '0' && c <= '9') && c != '_' {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

func trimFWS(s string) string { return strings.Trim(s, " \t\r\n") }

// stripFWS removes all folding white space, as base64 and list values allow.
func stripFWS(s string) string {
	if !strings.ContainsAny(s, " \t\r\n") {
		return s
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, s)
}

// clip keeps error messages short when the input is hostile.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// Signature is what a DKIM-Signature header field says, parsed far enough
// to report on it and to apply local policy before verifying.
type Signature struct {
	Version    string
	Algorithm  string // a=, lower-cased
	Domain     string // d=, lower-cased
	Selector   string // s=
	Identifier string // i=, or "@" + d= when absent
	Headers    []string
	Canon      string // c=
	B          string // b= without white space
	BodyHash   string // bh= without white space
	HasLength  bool   // l= present
	Timestamp  time.Time
	Expiration time.Time // zero when there is no x=
}

// ParseSignature parses the value of a DKIM-Signature header field (the
// text after the colon). It returns what it could read even on error, so
// a broken signature can still be reported by domain and selector.
func ParseSignature(value string) (*Signature, error) {
	sig := &Signature{}
	tags, err := parseTags(value)
	// Fill in what is there before judging it.
	sig.Version = tags["v"]
	sig.Algorithm = strings.ToLower(stripFWS(tags["a"]))
	sig.Domain = strings.ToLower(strings.TrimSuffix(stripFWS(tags["d"]), "."))
	sig.Selector = stripFWS(tags["s"])
	sig.B = stripFWS(tags["b"])
	sig.BodyHash = stripFWS(tags["bh"])
	sig.Canon = stripFWS(tags["c"])
	_, sig.HasLength = tags["l"]
	if i, ok := tags["i"]; ok {
		sig.Identifier = stripFWS(i)
	} else if sig.Domain != "" {
		sig.Identifier = "@" + sig.Domain
	}
	if h := stripFWS(tags["h"]); h != "" {
		sig.Headers = strings.Split(h, ":")
	}
	if err != nil {
		return sig, fmt.Errorf("malformed signature: %w", err)
	}
	for _, t := range []string{"v", "a", "b", "bh", "d", "h", "s"} {
		if _, ok := tags[t]; !ok {
			return sig, fmt.Errorf("signature has no %s= tag", t)
		}
	}
	if sig.Version != "1" {
		return sig, fmt.Errorf("signature version %q is not 1", clip(sig.Version))
	}
	if sig.Domain == "" || sig.Selector == "" {
		return sig, errors.New("signature has an empty d= or s=")
	}
	if _, err := base64.StdEncoding.DecodeString(sig.B); err != nil || sig.B == "" {
		return sig, errors.New("signature b= is not base64")
	}
	if _, err := base64.StdEncoding.DecodeString(sig.BodyHash); err != nil || sig.BodyHash == "" {
		return sig, errors.New("signature bh= is not base64")
	}
	if t, ok := tags["t"]; ok {
		if sig.Timestamp, err = parseUnix(t); err != nil {
			return sig, fmt.Errorf("signature t=: %w", err)
		}
	}
	if x, ok := tags["x"]; ok {
		if sig.Expiration, err = parseUnix(x); err != nil {
			return sig, fmt.Errorf("signature x=: %w", err)
		}
	}
	return sig, nil
}

func parseUnix(s string) (time.Time, error) {
	s = stripFWS(s)
	if s == "" || len(s) > 12 {
		return time.Time{}, fmt.Errorf("%q is not a time stamp", clip(s))
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not a time stamp", clip(s))
	}
	return time.Unix(int64(n), 0), nil
}

// Key is a DKIM key record (RFC 6376 section 3.6.1), as far as local
// policy needs it.
type Key struct {
	Type    string // k=: "rsa" (the default) or "ed25519"
	Bits    int    // RSA modulus size; 256 for Ed25519
	Revoked bool   // p= is empty
}

// ParseKey parses a key record. A revoked key parses without error.
func ParseKey(txt string) (*Key, error) {
	tags, err := parseTags(txt)
	if err != nil {
		return nil, fmt.Errorf("malformed key record: %w", err)
	}
	if v, ok := tags["v"]; ok && v != "DKIM1" {
		return nil, fmt.Errorf("key record version %q is not DKIM1", clip(v))
	}
	k := &Key{Type: strings.ToLower(stripFWS(tags["k"]))}
	switch k.Type {
	case "":
		k.Type = "rsa"
	case "rsa", "ed25519":
	default:
		return nil, fmt.Errorf("key type %q is not supported", clip(k.Type))
	}
	p, ok := tags["p"]
	if !ok {
		return nil, errors.New("key record has no p= tag")
	}
	p = stripFWS(p)
	if p == "" {
		k.Revoked = true
		return k, nil
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, errors.New("key record p= is not base64")
	}
	switch k.Type {
	case "rsa":
		n, err := rsaBits(der)
		if err != nil {
			return nil, fmt.Errorf("key record p=: %w", err)
		}
		k.Bits = n
	case "ed25519":
		if len(der) != 32 {
			return nil, fmt.Errorf("Ed25519 key is %d bytes, not 32", len(der))
		}
		k.Bits = 256
	}
	return k, nil
}

// rsaBits returns the modulus size of an RSA public key in either of the
// encodings found in the wild (SubjectPublicKeyInfo, or RSAPublicKey as
// RFC 6376 erratum 3017 allows).
func rsaBits(der []byte) (int, error) {
	if pub, err := x509.ParsePKIXPublicKey(der); err == nil {
		rk, ok := pub.(*rsa.PublicKey)
		if !ok {
			return 0, errors.New("not an RSA public key")
		}
		return rk.N.BitLen(), nil
	}
	rk, err := x509.ParsePKCS1PublicKey(der)
	if err != nil {
		return 0, errors.New("not an RSA public key")
	}
	return rk.N.BitLen(), nil
}
