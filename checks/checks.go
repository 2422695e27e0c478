// Package checks puts the authentication and reputation checks together
// behind policy.Checker: reverse DNS and IP lists at connect, domain lists
// and SPF as names arrive, DKIM and DMARC as the message streams. Every
// DNS problem comes out as a temperror (or error) result, never as a Go
// error or a pass.
package checks

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/dmarc"
	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/checks/iprev"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/checks/spf"
	"github.com/mailward/mailward/checks/uribl"
	"github.com/mailward/mailward/internal/config"
	"github.com/mailward/mailward/policy"
)

// Config holds the checks' config sections.
type Config struct {
	Sections `yaml:",inline"`
	DMARC    DMARCConfig `yaml:"dmarc"`
	// Hostname names this host in SPF explanations (%{r}); not a key of
	// its own: it comes from the top-level hostname.
	Hostname string `yaml:"-"`
}

// Sections are the checks' sections that the config file holds as they
// are, inlined at its top level (cmd/mailward): a new check's section
// added here is a key of the file. The dmarc section stands apart, since
// the file adds the engine's keys to it.
type Sections struct {
	DNS   resolver.Config `yaml:"dns"`
	SPF   SPFConfig       `yaml:"spf"`
	IPRev IPRevConfig     `yaml:"iprev"`
	DNSBL dnsbl.Config    `yaml:"dnsbl"`
	URIBL uribl.Config    `yaml:"uribl"`
	DKIM  DKIMConfig      `yaml:"dkim"`
}

// SPFConfig is the spf section.
type SPFConfig struct {
	Enable bool `yaml:"enable"`
	// Timeout bounds one whole SPF evaluation; 0 means 20s.
	Timeout time.Duration `yaml:"timeout"`
	// VoidLookupLimit: look-ups finding nothing before permerror; 0 means 2, negative none.
	VoidLookupLimit int `yaml:"void_lookup_limit"`
}

// IPRevConfig is the iprev section.
type IPRevConfig struct {
	Enable bool `yaml:"enable"`
	// MaxNames is how many PTR names are confirmed forward; 0 means 10.
	MaxNames int `yaml:"max_names"`
}

// DKIMConfig is the dkim section.
type DKIMConfig struct {
	Enable       bool `yaml:"enable"`
	dkim.Options `yaml:",inline"`
}

// DMARCConfig is the dmarc section. DMARC needs DKIM enabled.
type DMARCConfig struct {
	Enable        bool `yaml:"enable"`
	dmarc.Options `yaml:",inline"`
}

// DefaultConfig turns every check on, with the system's resolvers and no
// lists. Every limit is spelled out, though zero takes the same, so that
// the example config can be held to the true defaults.
func DefaultConfig() Config {
	return Config{Sections: Sections{
		DNS:   resolver.Config{Timeout: resolver.DefaultTimeout, Retries: resolver.DefaultRetries, CacheSize: resolver.DefaultCacheSize, CacheBytes: resolver.DefaultCacheBytes},
		SPF:   SPFConfig{Enable: true, Timeout: spf.DefaultTimeout, VoidLookupLimit: spf.DefaultVoidLookupLimit},
		IPRev: IPRevConfig{Enable: true, MaxNames: iprev.DefaultMaxNames},
		DKIM: DKIMConfig{Enable: true, Options: dkim.Options{
			MaxSignatures: dkim.DefaultMaxSignatures, MaxSize: dkim.DefaultMaxSize, MinRSABits: dkim.DefaultMinRSABits, ClockSkew: dkim.DefaultClockSkew,
		}},
	},
		DMARC: DMARCConfig{Enable: true, Options: dmarc.Options{MaxAuthorDomains: dmarc.DefaultMaxAuthorDomains}},
	}
}

// Validate reports every bad value as config.Problems keyed from the top
// of the config file ("dns.timeout"), since these are several sections.
func (c Config) Validate() error {
	var ps config.Problems
	bad := ps.Add
	section := func(name string, err error) {
		var sub config.Problems
		if errors.As(err, &sub) {
			ps = append(ps, sub.Under(name)...)
		}
	}
	if c.DNS.Timeout < 0 {
		bad("dns.timeout", "must not be negative")
	}
	if c.DNS.CacheBytes < 0 {
		bad("dns.cache_bytes", "must not be negative")
	}
	if c.SPF.Timeout < 0 {
		bad("spf.timeout", "must not be negative")
	}
	if c.IPRev.MaxNames < 0 {
		bad("iprev.max_names", "must not be negative")
	}
	section("dkim", c.DKIM.Options.Validate())
	section("dmarc", c.DMARC.Options.Validate())
	if c.DMARC.Enable && !c.DKIM.Enable {
		bad("dmarc.enable", "DMARC needs dkim.enable: true (it reads DKIM results and the From field)")
	}
	section("dnsbl", c.DNSBL.Validate())
	section("uribl", c.URIBL.Validate())
	return ps.Err()
}

// Suite runs the enabled checks. It implements policy.Checker and is safe
// for concurrent use.
type Suite struct {
	spf   *spf.Checker
	iprev *iprev.Checker
	lists *dnsbl.Checker
	uris  *uribl.Checker // nil without zones
	dkim  *dkim.Checker
	dmarc *dmarc.Checker
}

var _ policy.Checker = (*Suite)(nil)

// New builds the checks of cfg over r (see resolver.New(cfg.DNS)).
func New(cfg Config, r *resolver.Resolver) (*Suite, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if r == nil {
		return nil, errors.New("checks need a resolver")
	}
	s := &Suite{}
	if cfg.SPF.Enable {
		s.spf = spf.New(r, spf.Options{Hostname: cfg.Hostname, Timeout: cfg.SPF.Timeout, VoidLookupLimit: cfg.SPF.VoidLookupLimit})
	}
	if cfg.IPRev.Enable {
		s.iprev = iprev.New(r, iprev.Options{MaxNames: cfg.IPRev.MaxNames})
	}
	var err error
	if s.lists, err = dnsbl.New(r, cfg.DNSBL); err != nil {
		return nil, err
	}
	if s.uris, err = uribl.New(r, cfg.URIBL); err != nil {
		return nil, err
	}
	if cfg.DKIM.Enable {
		s.dkim = dkim.New(r, cfg.DKIM.Options)
	}
	if cfg.DMARC.Enable {
		s.dmarc = dmarc.New(r, cfg.DMARC.Options)
	}
	return s, nil
}

// Client runs reverse DNS and the IP lists at once. A disabled iprev gives nil.
func (s *Suite) Client(ctx context.Context, ip netip.Addr) (*iprev.Result, []dnsbl.Result) {
	var (
		rev *iprev.Result
		wg  sync.WaitGroup
	)
	if s.iprev != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rev = s.iprev.Check(ctx, ip)
		}()
	}
	listed := s.lists.CheckIP(ctx, ip)
	wg.Wait()
	return rev, listed
}

// Domains runs the domain lists over names.
func (s *Suite) Domains(ctx context.Context, names ...string) []dnsbl.Result {
	return s.lists.CheckDomains(ctx, names...)
}

// URLs runs the URI lists over the links' registrable domains and
// IP-literal hosts (Facts.URLs, end of message).
func (s *Suite) URLs(ctx context.Context, urls []policy.URL) []uribl.Result {
	if s.uris == nil {
		return nil
	}
	return s.uris.Check(ctx, uriNames(urls))
}

// uriNames are what URI lists are asked about: a link's registrable
// domain, or its host when that is an IP address. A host that is
// neither (a bare public suffix, a single label) is not asked about.
func uriNames(urls []policy.URL) []string {
	out := make([]string, 0, len(urls))
	for _, u := range urls {
		if u.Domain != "" {
			out = append(out, u.Domain)
		} else if _, err := netip.ParseAddr(strings.Trim(u.Host, "[]")); err == nil {
			out = append(out, u.Host)
		}
	}
	return out
}

// SPFHelo checks the HELO identity; nil when SPF is disabled.
func (s *Suite) SPFHelo(ctx context.Context, ip netip.Addr, helo string) *spf.Result {
	if s.spf == nil {
		return nil
	}
	return s.spf.CheckHelo(ctx, ip, helo)
}

// SPF checks the MAIL FROM identity; nil when SPF is disabled.
func (s *Suite) SPF(ctx context.Context, ip netip.Addr, helo, sender string) *spf.Result {
	if s.spf == nil {
		return nil
	}
	return s.spf.CheckMailFrom(ctx, ip, helo, sender)
}

// Message starts verifying one message.
func (s *Suite) Message() policy.MessageVerifier {
	m := &message{s: s}
	if s.dkim != nil {
		// Key look-ups made while the body streams are bounded by the
		// resolver's timeouts; Finish's context bounds the wait at the end
		// and Close stops them.
		m.v = s.dkim.NewVerifier(context.Background())
	}
	return m
}

type message struct {
	s *Suite
	v *dkim.Verifier // nil when DKIM is disabled
}

func (m *message) Write(p []byte) (int, error) {
	if m.v == nil {
		return io.Discard.Write(p)
	}
	return m.v.Write(p)
}

// Finish gives the DKIM results and, when enabled, DMARC's.
func (m *message) Finish(ctx context.Context, spfResult *spf.Result) ([]dkim.Result, *dmarc.Result) {
	if m.v == nil {
		return nil, nil
	}
	sigs := m.v.Finish(ctx)
	if m.s.dmarc == nil {
		return sigs, nil
	}
	if !m.v.FromComplete() {
		// A From past what was read could be the one readers show.
		return sigs, &dmarc.Result{Result: "permerror", Reason: "header block too large to read to its end: not every From field was seen"}
	}
	return sigs, m.s.dmarc.Check(ctx, m.v.From(), spfResult, sigs)
}

func (m *message) Close() {
	if m.v != nil {
		m.v.Close()
	}
}
