package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/checks"
	"github.com/mailward/mailward/checks/dmarc"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/internal/config"
	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/rules"
	"github.com/mailward/mailward/signing"
)

// parts are what a config builds for the engine; a reload builds new ones.
type parts struct {
	checker policy.Checker
	rules   *rules.Holder
	cache   cache.Cache
	grey    *cache.Greylist
	signing *signing.Table
	closers []func()
	// dnsStats reads the resolver's cache, for metrics.
	dnsStats func() resolver.CacheStats
	// resolver is the one every check asks.
	resolver *resolver.Resolver
	// rateLimits counts the outcomes of ratelimit() in these rules.
	rateLimits rules.RateLimitCounts
	// health checks shared dependencies, for /healthz: mail flows past
	// them, so they are not part of readiness.
	health []func(context.Context) string
}

// ruleSet is the compiled rule set in force (nil rules when there are none).
func (p *parts) ruleSet() policy.Rules {
	if s := p.rules.Current(); s != nil {
		return s
	}
	return nil
}

func (p *parts) summary() string { return fmt.Sprintf("%d rules", p.ruleCount()) }

// ruleCount is how many rules are loaded.
func (p *parts) ruleCount() int {
	if s := p.rules.Current(); s != nil {
		return s.Len()
	}
	return 0
}

func (p *parts) close() {
	for _, c := range p.closers {
		c()
	}
}

// ready reports a part without which mail cannot be taken.
func (p *parts) ready(context.Context) error {
	if p.rules.Current() == nil {
		return fmt.Errorf("no rules loaded")
	}
	return nil
}

// healthLines says how each shared dependency is doing.
func (p *parts) healthLines(ctx context.Context) []string {
	var out []string
	for _, h := range p.health {
		out = append(out, h(ctx))
	}
	return out
}

// settings are the engine's settings for cfg with these parts.
func (p *parts) settings(cfg *Config) policy.Settings {
	s := cfg.settings()
	s.Signing = p.signing
	return s
}

// keyErrors names the signing key files that could not be loaded, each
// at its place in the config.
func (p *parts) keyErrors(cfg *Config) config.Errors {
	var errs config.Errors
	for i, k := range p.signing.Keys() {
		if k.Err != nil {
			errs = append(errs, cfg.doc.Errorf(fmt.Sprintf("signing.keys[%d].key_file", i), "%v", k.Err))
		}
	}
	return errs
}

// buildParts compiles rules and sets up the checks for cfg. Nothing is
// kept if any part fails.
func buildParts(ctx context.Context, cfg *Config, c cache.Cache, log *slog.Logger) (*parts, error) {
	return rebuildParts(ctx, cfg, c, log, nil)
}

// rebuildParts is buildParts for a reload: a signing key file that
// cannot be read keeps prev's key.
func rebuildParts(ctx context.Context, cfg *Config, c cache.Cache, log *slog.Logger, prev *parts) (*parts, error) {
	p := &parts{}
	var prevKeys *signing.Table
	if prev != nil {
		prevKeys = prev.signing
	}
	keys, err := signing.Load(cfg.Signing, cfg.baseDir(), prevKeys, log)
	if err != nil {
		return nil, fmt.Errorf("loading signing keys: %w", err)
	}
	p.signing = keys
	grey, err := cache.NewGreylist(c, cfg.Greylist)
	if err != nil {
		return nil, fmt.Errorf("setting up greylisting: %w", err)
	}
	p.cache, p.grey = c, grey
	if cfg.Cache.Type == cache.TypeRedis {
		p.health = append(p.health, func(ctx context.Context) string {
			if err := c.Ping(ctx); err != nil {
				return fmt.Sprintf("redis: down, mail flows uncached past the breaker: %v", err)
			}
			return "redis: ok"
		})
	}
	res, err := resolver.New(cfg.DNS)
	if err != nil {
		return nil, fmt.Errorf("setting up DNS: %w", err)
	}
	p.dnsStats = res.CacheStats
	p.resolver = res
	if cfg.Cache.Type == cache.TypeRedis {
		// A fleet looks each SPF and DMARC record and DKIM key up once per TTL.
		res.SetShared(c)
	}
	suite, err := checks.New(cfg.checks(), res)
	if err != nil {
		return nil, fmt.Errorf("setting up checks: %w", err)
	}
	p.checker = suite
	if ttl := time.Duration(cfg.Cache.CheckTTL); ttl > 0 {
		p.checker = checks.Cached(suite, c, checks.CacheOptions{MaxTTL: ttl, Scope: checks.ConfigScope(cfg.checks())})
	}
	dm := dmarc.New(res, cfg.DMARC.Options)
	p.rules = rules.NewHolder(cfg.rulesConfig(), rules.Options{
		BaseDir: cfg.baseDir(), Logger: log, OrgDomain: orgDomain(dm), DomainZones: cfg.domainZones(),
		Functions: []rules.Func{rules.CountedRateLimitFunc(c, log, &p.rateLimits)},
	})
	if err := p.rules.Load(cfg.rulesConfig()); err != nil {
		return nil, fmt.Errorf("loading rules:\n%w", err)
	}
	for _, w := range p.rules.Current().Warnings() {
		log.Warn("rule warning", "at", w.String())
	}
	return p, nil
}

// orgDomain gives rules the DMARC tree walk's organizational domain,
// which falls back to the public suffix list when DNS cannot answer.
func orgDomain(dm *dmarc.Checker) func(context.Context, string) string {
	return func(ctx context.Context, domain string) string {
		org, _ := dm.OrgDomain(ctx, domain)
		return org
	}
}

// domainZones are the DNS lists queried with domain names, whose answers
// rules can only see from mail on.
func (c *Config) domainZones() []string {
	var out []string
	for _, z := range c.DNSBL.DomainZones {
		out = append(out, z.Zone)
	}
	return out
}
