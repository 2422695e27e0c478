package signing

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// MinRSABits is the smallest RSA key mailward signs with: RFC 8301 makes
// 1024 the floor for verifiers and asks signers for 2048.
const MinRSABits = 2048

// ParseKey reads a PEM private key: PKCS#8 (RSA or Ed25519), or PKCS#1
// RSA as opendkim-genkey writes it. It also takes the bare base64
// Ed25519 seed that dkimpy's dknewkey writes.
func ParseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
		if err == nil && len(seed) == ed25519.SeedSize {
			return ed25519.NewKeyFromSeed(seed), nil
		}
		return nil, errors.New("no PEM block found")
	}
	var key any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key (want PRIVATE KEY or RSA PRIVATE KEY)", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", block.Type, err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if n := k.N.BitLen(); n < MinRSABits {
			return nil, fmt.Errorf("RSA key of %d bits: at least %d are needed (make a new one with mailward dkim keygen)", n, MinRSABits)
		}
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("unsupported key type %T (want RSA or Ed25519)", key)
}

// ReadKey reads and parses a key file.
func ReadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading key: %w", err)
	}
	k, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// algorithm is the a= tag's key part and the DNS record's k=.
func algorithm(k crypto.Signer) string {
	if _, ok := k.Public().(ed25519.PublicKey); ok {
		return "ed25519"
	}
	return "rsa"
}

// PublicKeyData is the p= value of a key's DNS record: the DER
// SubjectPublicKeyInfo for RSA, the raw 32 bytes for Ed25519 (RFC 8463).
func PublicKeyData(k crypto.Signer) string {
	switch pub := k.Public().(type) {
	case ed25519.PublicKey:
		return base64.StdEncoding.EncodeToString(pub)
	default:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return ""
		}
		return base64.StdEncoding.EncodeToString(der)
	}
}

// Record is the TXT record that publishes a key.
func Record(k crypto.Signer) string {
	return "v=DKIM1; k=" + algorithm(k) + "; p=" + PublicKeyData(k)
}

// ZoneLine renders the record for a zone file, in strings of at most 255
// bytes as a TXT record needs.
func ZoneLine(selector, domain string, k crypto.Signer) string {
	rec := Record(k)
	var parts []string
	for len(rec) > 250 {
		parts = append(parts, rec[:250])
		rec = rec[250:]
	}
	parts = append(parts, rec)
	return fmt.Sprintf("%s._domainkey.%s. IN TXT ( \"%s\" )", selector, strings.TrimSuffix(domain, "."), strings.Join(parts, "\"\n\t\""))
}

// GenerateKey makes a new key: Ed25519, or RSA of bits (0: 2048).
func GenerateKey(ed bool, bits int) (crypto.Signer, error) {
	if ed {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	if bits == 0 {
		bits = MinRSABits
	}
	if bits < MinRSABits {
		return nil, fmt.Errorf("RSA keys need at least %d bits", MinRSABits)
	}
	return rsa.GenerateKey(rand.Reader, bits)
}

// MarshalKey renders a key as PKCS#8 PEM.
func MarshalKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encoding key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// TXTLookup returns the TXT strings of name, each record's strings joined.
type TXTLookup func(ctx context.Context, name string) ([]string, error)

// CheckPublished checks that DNS publishes k under selector._domainkey.domain,
// as opendkim-testkey does: one key record, its k= matching the key's
// algorithm and its p= the key's public half.
func CheckPublished(ctx context.Context, lookup TXTLookup, k crypto.Signer, selector, domain string) error {
	name := selector + "._domainkey." + strings.TrimSuffix(domain, ".")
	txts, err := lookup(ctx, name)
	if err != nil {
		return fmt.Errorf("looking up %s: %w", name, err)
	}
	var recs []map[string]string
	for _, txt := range txts {
		tags := parseTags(txt)
		if v, ok := tags["v"]; ok && v != "DKIM1" {
			continue
		}
		if _, ok := tags["p"]; ok {
			recs = append(recs, tags)
		}
	}
	switch {
	case len(recs) == 0:
		return fmt.Errorf("%s has no DKIM key record", name)
	case len(recs) > 1:
		return fmt.Errorf("%s has %d key records; verifiers need exactly one", name, len(recs))
	}
	rec := recs[0]
	kt := rec["k"]
	if kt == "" {
		kt = "rsa"
	}
	if kt != algorithm(k) {
		return fmt.Errorf("%s publishes a k=%s key, the key file holds %s", name, kt, algorithm(k))
	}
	p := strings.Join(strings.Fields(rec["p"]), "")
	switch {
	case p == "":
		return fmt.Errorf("%s publishes an empty p=: the key is revoked", name)
	case p != PublicKeyData(k):
		return fmt.Errorf("%s publishes a different public key than the key file's", name)
	}
	return nil
}

// parseTags reads a tag=value list loosely, enough for a key record.
func parseTags(s string) map[string]string {
	out := map[string]string{}
	for _, part := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(part, "=")
		if ok {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}
