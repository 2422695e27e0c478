package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
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
// to report on it, to apply local policy and to verify it.
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
	Methods    []string  // q=, lower-cased; nil when absent (dns/txt)

	// Decoded for verification.
	headerCanon, bodyCanon string
	sig, bodyHash          []byte
}

// MaxSignedHeaders is the most entries an h= tag may list. Real signers
// list a few dozen; a longer list only makes verification cost more.
const MaxSignedHeaders = 100

// ParseSignature parses the value of a DKIM-Signature header field (the
// text after the colon). It returns what it could read even on error, so
// a broken signature can still be reported by domain and selector.
// Unknown tags are ignored (RFC 6376 section 3.2).
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
	i, hasI := tags["i"]
	if hasI {
		sig.Identifier = stripFWS(i)
	} else if sig.Domain != "" {
		sig.Identifier = "@" + sig.Domain
	}
	h := stripFWS(tags["h"])
	if n := strings.Count(h, ":") + 1; n > MaxSignedHeaders {
		// Before splitting: the list is the sender's.
		if err == nil {
			err = fmt.Errorf("h= lists %d header fields, more than %d", n, MaxSignedHeaders)
		}
		h = ""
	}
	if h != "" {
		sig.Headers = strings.Split(h, ":")
	}
	if q, ok := tags["q"]; ok {
		sig.Methods = strings.Split(strings.ToLower(stripFWS(q)), ":")
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
	if sig.sig, err = base64.StdEncoding.DecodeString(sig.B); err != nil || sig.B == "" {
		return sig, errors.New("signature b= is not base64")
	}
	if sig.bodyHash, err = base64.StdEncoding.DecodeString(sig.BodyHash); err != nil || sig.BodyHash == "" {
		return sig, errors.New("signature bh= is not base64")
	}
	if hasI {
		if err := checkIdentifier(sig.Identifier, sig.Domain); err != nil {
			return sig, err
		}
	}
	if sig.headerCanon, sig.bodyCanon, err = parseCanon(sig.Canon); err != nil {
		return sig, err
	}
	signsFrom := false
	for _, name := range sig.Headers {
		signsFrom = signsFrom || strings.EqualFold(name, "from")
	}
	if !signsFrom {
		return sig, errors.New("From field not signed (h=)")
	}
	if sig.Methods != nil && !slices.Contains(sig.Methods, "dns/txt") {
		return sig, fmt.Errorf("query method q=%s is not supported", clip(strings.Join(sig.Methods, ":")))
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

// checkIdentifier checks that i= is [local-part] "@" domain, its domain
// d= or a subdomain of it, compared without regard to case (RFC 4343).
func checkIdentifier(id, d string) error {
	at := strings.LastIndexByte(id, '@')
	if at < 0 {
		return fmt.Errorf("signature i=%s has no '@'", clip(id))
	}
	dom := strings.ToLower(strings.TrimSuffix(id[at+1:], "."))
	if dom != d && !strings.HasSuffix(dom, "."+d) {
		return fmt.Errorf("signature i= domain %s is not d=%s or below it (domain mismatch)", clip(dom), clip(d))
	}
	return nil
}

// parseCanon reads c=: header/body, each simple (the default) or relaxed.
func parseCanon(c string) (header, body string, err error) {
	header, body, _ = strings.Cut(strings.ToLower(c), "/")
	if header == "" {
		header = "simple"
	}
	if body == "" {
		body = "simple"
	}
	for _, v := range []string{header, body} {
		if v != "simple" && v != "relaxed" {
			return "", "", fmt.Errorf("canonicalization c=%s is not supported", clip(c))
		}
	}
	return header, body, nil
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

// Key is a DKIM key record (RFC 6376 section 3.6.1). It is the only
// reading of key records: the size checked against min_rsa_bits is the
// size of the key that verifies.
type Key struct {
	Type    string // k=: "rsa" (the default) or "ed25519"
	Bits    int    // RSA modulus size; 256 for Ed25519
	Revoked bool   // p= is empty
	// Hashes is h=, lower-cased; nil when absent (any hash).
	Hashes []string
	// Services is s=, lower-cased; nil when absent (any service).
	Services []string
	// Strict is t=s: i= must have exactly the domain d=.
	Strict bool

	pub crypto.PublicKey // *rsa.PublicKey or ed25519.PublicKey
}

// ParseKey parses a key record. White space around tags and "=", a
// trailing ";", unknown tags and folding white space inside p= are all
// allowed (RFC 6376 sections 3.2 and 3.6.1); anything else malformed is an
// error, so that a record is either read whole or refused. A revoked key
// parses without error.
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
	if h, ok := tags["h"]; ok {
		k.Hashes = strings.Split(strings.ToLower(stripFWS(h)), ":")
	}
	if s, ok := tags["s"]; ok {
		k.Services = strings.Split(strings.ToLower(stripFWS(s)), ":")
	}
	if t, ok := tags["t"]; ok {
		k.Strict = slices.Contains(strings.Split(strings.ToLower(stripFWS(t)), ":"), "s")
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
		rk, err := rsaKey(der)
		if err != nil {
			return nil, fmt.Errorf("key record p=: %w", err)
		}
		k.Bits, k.pub = rk.N.BitLen(), rk
	case "ed25519":
		if len(der) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("Ed25519 key is %d bytes, not 32", len(der))
		}
		k.Bits, k.pub = 256, ed25519.PublicKey(der)
	}
	return k, nil
}

// rsaKey reads an RSA public key in either of the encodings found in the
// wild (SubjectPublicKeyInfo, or RSAPublicKey as RFC 6376 erratum 3017
// allows).
func rsaKey(der []byte) (*rsa.PublicKey, error) {
	if pub, err := x509.ParsePKIXPublicKey(der); err == nil {
		rk, ok := pub.(*rsa.PublicKey)
		if !ok {
			return nil, errors.New("not an RSA public key")
		}
		return rk, nil
	}
	rk, err := x509.ParsePKCS1PublicKey(der)
	if err != nil {
		return nil, errors.New("not an RSA public key")
	}
	return rk, nil
}
