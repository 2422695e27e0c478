// Package dkim verifies DKIM signatures (RFC 6376) as a message streams
// in, with the algorithm rules of RFC 8301 and RFC 8463: rsa-sha256 and
// ed25519-sha256 are verified, rsa-sha1 is refused by policy, RSA keys
// under the configured minimum (never less than 1024 bits) fail.
//
// Canonicalization, header selection and hashing are done here, in one
// pass each over what the sender wrote (the body while it arrives);
// cryptography is the standard library's; keys are looked up through our
// resolver and read by one parser, ParseKey.
package dkim

import (
	"context"
	"time"

	"github.com/mailward/mailward/internal/config"
)

// TXTResolver looks up TXT records; *resolver.Resolver satisfies it.
// Errors must wrap the resolver's sentinels so that temporary failures
// (resolver.IsTemporary) can be told from missing keys.
type TXTResolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// Defaults for Options fields left zero.
const (
	DefaultMaxSignatures = 10
	DefaultMaxSize       = 64 << 20
	DefaultMinRSABits    = 1024
	// DefaultClockSkew is how far in the future a signature's t= may be.
	DefaultClockSkew = time.Hour
	// maxHeader bounds the header block kept while it is parsed.
	maxHeader = 1 << 20
)

// Options tune verification. Zero values pick the defaults.
type Options struct {
	// MaxSignatures is how many DKIM-Signature fields are verified, in
	// header order; the rest are reported with result "none".
	MaxSignatures int `yaml:"max_signatures"`
	// MaxSize is the largest message (header and body, bytes) verified;
	// past it signatures are reported "neutral".
	MaxSize int64 `yaml:"max_size"`
	// MinRSABits is the smallest RSA key accepted; RFC 8301 forbids less than 1024.
	MinRSABits int `yaml:"min_rsa_bits"`
	// ClockSkew is how far in the future a signature's time stamp (t=)
	// may be, for the signer's clock being ahead of ours; beyond it the
	// signature is permerror (RFC 6376 section 3.5).
	ClockSkew time.Duration `yaml:"clock_skew"`
}

// Validate reports option values that make no sense, as config.Problems
// keyed by option.
func (o Options) Validate() error {
	var ps config.Problems
	if o.MaxSignatures < 0 {
		ps.Add("max_signatures", "%d: must not be negative", o.MaxSignatures)
	}
	if o.MaxSize < 0 {
		ps.Add("max_size", "%d: must not be negative", o.MaxSize)
	}
	switch {
	case o.MinRSABits < 0:
		ps.Add("min_rsa_bits", "%d: must not be negative", o.MinRSABits)
	case o.MinRSABits > 0 && o.MinRSABits < 1024:
		ps.Add("min_rsa_bits", "%d is under 1024, which RFC 8301 forbids", o.MinRSABits)
	case o.MinRSABits > 16384:
		ps.Add("min_rsa_bits", "%d is over 16384", o.MinRSABits)
	}
	if o.ClockSkew < 0 {
		ps.Add("clock_skew", "%s: must not be negative", o.ClockSkew)
	}
	return ps.Err()
}

func (o Options) withDefaults() Options {
	if o.MaxSignatures <= 0 {
		o.MaxSignatures = DefaultMaxSignatures
	}
	if o.MaxSize <= 0 {
		o.MaxSize = DefaultMaxSize
	}
	if o.MinRSABits < DefaultMinRSABits {
		o.MinRSABits = DefaultMinRSABits
	}
	if o.ClockSkew <= 0 {
		o.ClockSkew = DefaultClockSkew
	}
	return o
}

// Checker holds the settings shared by every message. It is safe for
// concurrent use.
type Checker struct {
	r    TXTResolver
	opts Options
}

// New returns a Checker that looks keys up through r. Invalid options are
// raised to their defaults; call Options.Validate first to report them.
func New(r TXTResolver, opts Options) *Checker {
	return &Checker{r: r, opts: opts.withDefaults()}
}

// Options returns the options in force, defaults filled in.
func (c *Checker) Options() Options { return c.opts }

// Verify verifies a whole message held in memory (header and body, CRLF
// line ends), as a Verifier fed in one write would.
func (c *Checker) Verify(ctx context.Context, msg []byte) []Result {
	v := c.NewVerifier(ctx)
	defer v.Close()
	v.Write(msg)
	return v.Finish(ctx)
}
