package cache

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/mailward/mailward/internal/config"
)

// GreylistConfig is the `greylist:` section of the config file.
type GreylistConfig struct {
	// Delay is how long a new triplet is refused (tempfail).
	Delay Duration `yaml:"delay"`
	// RetryWindow is how long after first sight a retry is accepted;
	// later, the triplet starts over.
	RetryWindow Duration `yaml:"retry_window"`
	// Expiry is how long a triplet that passed, and a network's count of
	// successful retries, are kept after last use.
	Expiry Duration `yaml:"expiry"`
	// AutoAllow passes every triplet of a client network whose triplets
	// passed greylisting this many times; 0 turns it off.
	AutoAllow int `yaml:"auto_allow"`
	// NetmaskV4 and NetmaskV6 group clients: an MTA retries from another
	// address of the same pool.
	NetmaskV4 int `yaml:"netmask_v4"`
	NetmaskV6 int `yaml:"netmask_v6"`
}

// DefaultGreylistConfig: 5 minutes' delay, 4 hours to retry, 36 days of
// memory, auto-allow after 5 successful retries, /24 and /64 networks.
func DefaultGreylistConfig() GreylistConfig {
	return GreylistConfig{
		Delay:       Duration(5 * time.Minute),
		RetryWindow: Duration(4 * time.Hour),
		Expiry:      Duration(36 * 24 * time.Hour),
		AutoAllow:   5,
		NetmaskV4:   24,
		NetmaskV6:   64,
	}
}

// withDefaults fills zero fields except AutoAllow, where 0 means off.
func (c GreylistConfig) withDefaults() GreylistConfig {
	d := DefaultGreylistConfig()
	c.Delay = cmp.Or(c.Delay, d.Delay)
	c.RetryWindow = cmp.Or(c.RetryWindow, d.RetryWindow)
	c.Expiry = cmp.Or(c.Expiry, d.Expiry)
	c.NetmaskV4 = cmp.Or(c.NetmaskV4, d.NetmaskV4)
	c.NetmaskV6 = cmp.Or(c.NetmaskV6, d.NetmaskV6)
	return c
}

// Validate reports every bad setting as config.Problems, keys relative
// to the section; zero fields are fine (defaults).
func (c GreylistConfig) Validate() error {
	c = c.withDefaults()
	var ps config.Problems
	bad := ps.Add
	if c.Delay < 0 {
		bad("delay", "must be a positive duration such as 5m")
	}
	if c.RetryWindow <= c.Delay {
		bad("retry_window", "%s: must be longer than delay (%s): it is counted from first sight", c.RetryWindow, c.Delay)
	}
	if c.Expiry <= 0 {
		bad("expiry", "must be a positive duration such as 36d")
	}
	if c.AutoAllow < 0 {
		bad("auto_allow", "must not be negative (0 turns it off)")
	}
	if c.NetmaskV4 < 1 || c.NetmaskV4 > 32 {
		bad("netmask_v4", "%d: want 1 to 32", c.NetmaskV4)
	}
	if c.NetmaskV6 < 1 || c.NetmaskV6 > 128 {
		bad("netmask_v6", "%d: want 1 to 128", c.NetmaskV6)
	}
	return ps.Err()
}

// checkTimes guards CheckTriplet against settings that would make the
// state machine meaningless.
func (c GreylistConfig) checkTimes() error {
	if c.Delay < 0 || c.RetryWindow <= c.Delay || c.Expiry <= 0 || c.AutoAllow < 0 {
		return fmt.Errorf("bad greylisting times: delay %s, retry window %s, expiry %s, auto-allow %d",
			c.Delay, c.RetryWindow, c.Expiry, c.AutoAllow)
	}
	return nil
}

// Reason says why greylisting decided as it did.
type Reason string

const (
	// ReasonNew: first sight of the triplet (or its retry window ran out).
	ReasonNew Reason = "new"
	// ReasonEarly: retried before the delay was over.
	ReasonEarly Reason = "early"
	// ReasonRetried: retried after the delay and within the window; the
	// triplet is now known.
	ReasonRetried Reason = "retried"
	// ReasonKnown: the triplet passed before and has not expired.
	ReasonKnown Reason = "known"
	// ReasonAutoAllowed: the client's network retried successfully often enough.
	ReasonAutoAllowed Reason = "auto-allowed"
)

// Decision is greylisting's answer for one recipient.
type Decision struct {
	// Pass is false for a tempfail.
	Pass   bool
	Reason Reason
	// RetryAfter, on a tempfail, is how long until a retry would pass.
	RetryAfter time.Duration
}

// RetrySeconds is RetryAfter in whole seconds, rounded up, for the SMTP reply.
func (d Decision) RetrySeconds() int {
	return int((d.RetryAfter + time.Second - 1) / time.Second)
}

// Greylist refuses (tempfails) the first delivery attempt of each
// (client network, sender, recipient) triplet and accepts a retry made
// after Delay and within RetryWindow: real MTAs retry, most spam
// software does not.
//
// Each Check is one atomic step in the cache (a Lua script in Redis), so
// a fleet sharing one Redis greylists as one. Errors, ErrUnavailable
// among them, are the caller's to handle: the engine skips greylisting
// when the cache is unavailable rather than refuse or delay mail.
type Greylist struct {
	cache Cache
	cfg   GreylistConfig
}

// NewGreylist greylists on top of c; zero settings take their defaults.
func NewGreylist(c Cache, cfg GreylistConfig) (*Greylist, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("greylist config: %w", err)
	}
	return &Greylist{cache: c, cfg: cfg}, nil
}

// Config returns the settings in use, defaults filled in.
func (g *Greylist) Config() GreylistConfig { return g.cfg }

// Check decides for one recipient of a message from ip with envelope
// sender (empty for the null sender).
func (g *Greylist) Check(ctx context.Context, ip netip.Addr, sender, rcpt string) (Decision, error) {
	network, err := g.Network(ip)
	if err != nil {
		return Decision{}, err
	}
	d, err := g.cache.CheckTriplet(ctx, network, Triplet(sender, rcpt), g.cfg)
	if err != nil {
		return Decision{}, fmt.Errorf("greylisting %s to %s from %s: %w", sender, rcpt, network, err)
	}
	return d, nil
}

// Network is the client network ip belongs to, e.g. "192.0.2.0/24".
func (g *Greylist) Network(ip netip.Addr) (string, error) {
	if !ip.IsValid() {
		return "", errors.New("greylisting: no client address")
	}
	ip = ip.Unmap().WithZone("")
	bits := g.cfg.NetmaskV4
	if ip.Is6() {
		bits = g.cfg.NetmaskV6
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return "", fmt.Errorf("greylisting %s: %w", ip, err)
	}
	return p.String(), nil
}

// Triplet names a sender and recipient pair: a hash, so that keys stay
// short whatever the addresses. Addresses compare case-insensitively and
// a BATV tag (prvs=TAG=user@domain) is ignored, since it changes with
// every attempt.
func Triplet(sender, rcpt string) string {
	h := sha256.New()
	h.Write([]byte(normAddr(sender)))
	h.Write([]byte{0})
	h.Write([]byte(normAddr(rcpt)))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func normAddr(a string) string {
	a = strings.ToLower(strings.TrimSpace(a))
	a = strings.TrimSuffix(strings.TrimPrefix(a, "<"), ">")
	if rest, ok := strings.CutPrefix(a, "prvs="); ok {
		// prvs=KKKDDDSSSSSS=user@domain (draft-levine-smtp-batv)
		if _, addr, ok := strings.Cut(rest, "="); ok && strings.Contains(addr, "@") {
			a = addr
		}
	}
	return a
}
