package main

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mailward/mailward/admin"
	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/checks"
	"github.com/mailward/mailward/checks/content"
	"github.com/mailward/mailward/internal/config"
	"github.com/mailward/mailward/journal"
	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/proxy/milter"
	"github.com/mailward/mailward/proxy/policyd"
	smtpproxy "github.com/mailward/mailward/proxy/smtp"
	"github.com/mailward/mailward/reports"
	"github.com/mailward/mailward/rules"
	"github.com/mailward/mailward/signing"
)

// Config is the whole config file. Every key is documented in the README.
type Config struct {
	Hostname string           `yaml:"hostname"`
	OnError  string           `yaml:"on_error"`
	Log      LogConfig        `yaml:"log"`
	Milter   milter.Config    `yaml:"milter"`
	Policy   policyd.Config   `yaml:"policy"`
	SMTP     smtpproxy.Config `yaml:"smtp"`
	Admin    admin.Config     `yaml:"admin"`
	// The checks' sections: dns, spf, iprev, dnsbl, uribl, dkim.
	checks.Sections `yaml:",inline"`
	DMARC           DMARCConfig          `yaml:"dmarc"`
	Thresholds      Thresholds           `yaml:"thresholds"`
	ScoreHeader     string               `yaml:"score_header"`
	Timeouts        Timeouts             `yaml:"timeouts"`
	Limits          Limits               `yaml:"limits"`
	Content         ContentConfig        `yaml:"content"`
	Rules           rules.Config         `yaml:"rules"`
	Cache           cache.Config         `yaml:"cache"`
	Greylist        cache.GreylistConfig `yaml:"greylist"`
	Signing         signing.Config       `yaml:"signing"`
	Journal         journal.Config       `yaml:"journal"`
	Reports         reports.Config       `yaml:"reports"`
	// Lists may also stand at the top level, beside rules.
	Lists map[string]rules.ListConfig `yaml:"lists"`

	file string
	doc  *config.Doc
}

// LogConfig sets up log/slog.
type LogConfig struct {
	Format string `yaml:"format"` // text or json
	Level  string `yaml:"level"`  // debug, info, warn, error
}

// DMARCConfig holds the DMARC check's options and what the engine does
// with its results.
type DMARCConfig struct {
	checks.DMARCConfig `yaml:",inline"`
	Enforce            bool   `yaml:"enforce"`
	OnTemperror        string `yaml:"on_temperror"`
}

// Thresholds turn the message score into an action.
type Thresholds struct {
	Reject     float64 `yaml:"reject"`
	Quarantine float64 `yaml:"quarantine"`
	AddHeader  float64 `yaml:"add_header"`
}

// Timeouts bound every wait.
type Timeouts struct {
	Checks   time.Duration `yaml:"checks"`
	Milter   time.Duration `yaml:"milter"`
	Shutdown time.Duration `yaml:"shutdown"`
}

// Limits bound what one message may cost, whatever its sender wrote.
type Limits struct {
	MessageCPU time.Duration `yaml:"message_cpu"`
	MIMEDepth  int           `yaml:"mime_depth"`
	MIMEParts  int           `yaml:"mime_parts"`
}

// ContentConfig is the content scan's: the decoded text and the links
// rules read (checks/content).
type ContentConfig struct {
	Enabled      bool `yaml:"enabled"`
	MaxTextBytes int  `yaml:"max_text_bytes"`
	MaxURLs      int  `yaml:"max_urls"`
}

// defaultConfig is what runs with no config file: a milter on loopback,
// system DNS, memory cache, no rules.
func defaultConfig() *Config {
	def := checks.DefaultConfig()
	return &Config{
		Hostname: defaultHostname("/etc/hosts"),
		OnError:  "tempfail",
		Log:      LogConfig{Format: "text", Level: "info"},
		Milter:   milter.Config{Listen: "inet:127.0.0.1:8891", SocketMode: "0660"},
		Policy:   policyd.DefaultConfig(),
		SMTP:     smtpDefaults(),
		Cache:    cache.DefaultConfig(),
		Greylist: cache.DefaultGreylistConfig(),
		Signing:  signing.DefaultConfig(),
		Journal:  journal.DefaultConfig(),
		Reports:  reports.DefaultConfig(),
		Admin:    admin.Config{Listen: "127.0.0.1:9101"},
		Sections: def.Sections,
		DMARC:    DMARCConfig{DMARCConfig: def.DMARC, OnTemperror: "tempfail"},
		Timeouts: Timeouts{Checks: 30 * time.Second, Milter: 5 * time.Minute, Shutdown: 30 * time.Second},
		Limits:   Limits{MessageCPU: policy.DefaultMessageCPU, MIMEDepth: policy.DefaultMIMEDepth, MIMEParts: policy.DefaultMIMEParts},
		Content:  ContentConfig{Enabled: true, MaxTextBytes: content.DefaultMaxTextBytes, MaxURLs: content.DefaultMaxURLs},
		file:     "(defaults)",
		doc:      &config.Doc{File: "(defaults)"},
	}
}

// loadConfig reads file over the defaults; "" means defaults alone.
func loadConfig(file string) (*Config, error) {
	cfg := defaultConfig()
	if file == "" {
		return cfg, cfg.validate()
	}
	doc, err := config.Load(file, cfg)
	if err != nil {
		return nil, err
	}
	cfg.file, cfg.doc = file, doc
	cfg.resolve()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// resolve settles what depends on which keys the file sets and where it
// stands.
func (c *Config) resolve() {
	// Addresses for Redis mean Redis: two instances "sharing" it must not
	// each count rate limits alone in memory.
	if c.doc.Has("cache.redis.addrs") && !c.doc.Has("cache.type") {
		c.Cache.Type = cache.TypeRedis
	}
	c.Cache.Redis.PasswordFile = cache.CredentialPath(c.Cache.Redis.PasswordFile, c.baseDir())
}

// serving reports what only serve needs: something to serve.
func (c *Config) serving() error {
	if c.Milter.Listen == "" && c.Policy.Listen == "" && c.SMTP.Listen == "" && c.SMTP.ListenTLS == "" {
		return fmt.Errorf("%s: nothing to serve: set milter.listen, smtp.listen or policy.listen", c.file)
	}
	return nil
}

// warnings are settings that work but are likely not what was meant.
func (c *Config) warnings() []string {
	var out []string
	if !strings.Contains(c.Hostname, ".") {
		out = append(out, fmt.Sprintf("%s: hostname %q has no dot: Authentication-Results name this host by it (authserv-id), so set it to the fully qualified name", c.doc.Pos("hostname"), c.Hostname))
	}
	return append(out, c.reportWarnings()...)
}

func (c *Config) validate() error {
	var errs config.Errors
	bad := func(key, format string, args ...any) {
		errs = append(errs, c.doc.Errorf(key, format, args...))
	}
	if c.Hostname == "" {
		bad("hostname", "must not be empty: it is the authserv-id of Authentication-Results")
	}
	if c.OnError != "tempfail" && c.OnError != "accept" {
		bad("on_error", "%q: want tempfail or accept", c.OnError)
	}
	if c.DMARC.OnTemperror != "tempfail" && c.DMARC.OnTemperror != "accept" {
		bad("dmarc.on_temperror", "%q: want tempfail or accept", c.DMARC.OnTemperror)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q: want text or json", c.Log.Format)
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		bad("log.level", "%v", err)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"timeouts.checks", c.Timeouts.Checks}, {"timeouts.milter", c.Timeouts.Milter}, {"timeouts.shutdown", c.Timeouts.Shutdown}, {"limits.message_cpu", c.Limits.MessageCPU}} {
		if d.v <= 0 {
			bad(d.key, "must be a positive duration such as 30s")
		}
	}
	if c.Limits.MIMEDepth < 1 {
		bad("limits.mime_depth", "must be at least 1")
	}
	if c.Limits.MIMEParts < 1 {
		bad("limits.mime_parts", "must be at least 1")
	}
	if n := c.Content.MaxTextBytes; n < 1 || n > content.MaxMaxTextBytes {
		bad("content.max_text_bytes", "%d: must be from 1 to %d", n, content.MaxMaxTextBytes)
	}
	if n := c.Content.MaxURLs; n < 1 || n > content.MaxMaxURLs {
		bad("content.max_urls", "%d: must be from 1 to %d", n, content.MaxMaxURLs)
	}
	t := c.Thresholds
	if t.Reject < 0 || t.Quarantine < 0 || t.AddHeader < 0 {
		bad("thresholds", "thresholds must not be negative (0 turns a level off)")
	}
	if c.Cache.Type == cache.TypeMemory && len(c.Cache.Redis.Addrs) > 0 {
		bad("cache.redis.addrs", "set, but cache.type is memory: remove the addresses or set type: redis")
	}
	errs = append(errs, c.doc.Locate("milter", c.Milter.Validate())...)
	errs = append(errs, c.doc.Locate("admin", c.Admin.Validate())...)
	errs = append(errs, c.doc.Locate("", c.checks().Validate())...)
	errs = append(errs, c.doc.Locate("cache", c.Cache.Validate())...)
	errs = append(errs, c.doc.Locate("greylist", c.Greylist.Validate())...)
	errs = append(errs, c.doc.Locate("journal", c.Journal.Validate())...)
	errs = append(errs, c.doc.Locate("reports", c.Reports.Validate())...)
	if sc := c.smtp(); sc.Listen != "" || sc.ListenTLS != "" {
		errs = append(errs, c.doc.Locate("smtp", sc.Validate())...)
	}
	errs = append(errs, c.doc.Locate("signing", c.Signing.Problems().Err())...)
	errs = append(errs, c.doc.Locate("policy", c.Policy.Validate())...)
	for _, name := range slices.Sorted(maps.Keys(c.Lists)) {
		if _, dup := c.Rules.Lists[name]; dup {
			bad("lists."+name, "list %q is also declared under rules.lists", name)
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// smtpDefaults leaves the proxy's hostname empty so that it follows the
// top-level hostname unless set.
func smtpDefaults() smtpproxy.Config {
	c := smtpproxy.DefaultConfig()
	c.Hostname = ""
	return c
}

// smtp is the SMTP proxy's config, its hostname defaulting to ours.
func (c *Config) smtp() smtpproxy.Config {
	s := c.SMTP
	if s.Hostname == "" {
		s.Hostname = c.Hostname
	}
	return s
}

// checks is the checks' part of the config.
func (c *Config) checks() checks.Config {
	return checks.Config{Sections: c.Sections, DMARC: c.DMARC.DMARCConfig, Hostname: c.Hostname}
}

// rulesConfig merges the top-level lists into the rules' config.
func (c *Config) rulesConfig() rules.Config {
	rc := c.Rules
	if len(c.Lists) > 0 {
		rc.Lists = map[string]rules.ListConfig{}
		for k, v := range c.Rules.Lists {
			rc.Lists[k] = v
		}
		for k, v := range c.Lists {
			rc.Lists[k] = v
		}
	}
	return rc
}

// baseDir is where relative paths in the config are resolved from.
func (c *Config) baseDir() string {
	if c.file == "" || c.file == "(defaults)" {
		return "."
	}
	return filepath.Dir(c.file)
}

// settings is the engine's part of the config.
func (c *Config) settings() policy.Settings {
	act := func(s string) policy.Action {
		if s == "accept" {
			return policy.Accept
		}
		return policy.Tempfail
	}
	return policy.Settings{
		Hostname:         c.Hostname,
		OnError:          act(c.OnError),
		DMARCEnforce:     c.DMARC.Enforce,
		DMARCOnTemperror: act(c.DMARC.OnTemperror),
		Thresholds:       policy.Thresholds(c.Thresholds),
		ScoreHeader:      c.ScoreHeader,
		CheckTimeout:     c.Timeouts.Checks,
		MessageCPU:       c.Limits.MessageCPU,
		MIMEDepth:        c.Limits.MIMEDepth,
		MIMEParts:        c.Limits.MIMEParts,
		Content:          content.Options{MaxTextBytes: c.Content.MaxTextBytes, MaxURLs: c.Content.MaxURLs},
		ContentOff:       !c.Content.Enabled,
		VerdictTTL:       time.Duration(c.Cache.VerdictTTL),
	}
}

// defaultHostname is this host's fully qualified name: the kernel's host
// name if it has a dot, else the name hosts gives for it, as hostname -f
// finds it. No DNS: a default must not wait on the network.
func defaultHostname(hosts string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		return "localhost"
	}
	if strings.Contains(host, ".") {
		return host
	}
	if f, err := os.Open(hosts); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line, _, _ := strings.Cut(sc.Text(), "#")
			names := strings.Fields(line)
			if len(names) < 2 || !slices.ContainsFunc(names[1:], func(n string) bool { return strings.EqualFold(n, host) }) {
				continue
			}
			for _, n := range names[1:] {
				if strings.HasPrefix(strings.ToLower(n), strings.ToLower(host)+".") {
					return n
				}
			}
		}
	}
	return host
}
