package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mailward/mailward/admin"
	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/checks"
	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/internal/config"
	"github.com/mailward/mailward/journal"
	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/proxy/milter"
	"github.com/mailward/mailward/proxy/policyd"
	smtpproxy "github.com/mailward/mailward/proxy/smtp"
	"github.com/mailward/mailward/rules"
	"github.com/mailward/mailward/signing"
)

// Config is the whole config file. Every key is documented in the README.
type Config struct {
	Hostname    string               `yaml:"hostname"`
	OnError     string               `yaml:"on_error"`
	Log         LogConfig            `yaml:"log"`
	Milter      milter.Config        `yaml:"milter"`
	Policy      policyd.Config       `yaml:"policy"`
	SMTP        smtpproxy.Config     `yaml:"smtp"`
	Admin       admin.Config         `yaml:"admin"`
	DNS         resolver.Config      `yaml:"dns"`
	SPF         checks.SPFConfig     `yaml:"spf"`
	IPRev       checks.IPRevConfig   `yaml:"iprev"`
	DNSBL       dnsbl.Config         `yaml:"dnsbl"`
	DKIM        checks.DKIMConfig    `yaml:"dkim"`
	DMARC       DMARCConfig          `yaml:"dmarc"`
	Thresholds  Thresholds           `yaml:"thresholds"`
	ScoreHeader string               `yaml:"score_header"`
	Timeouts    Timeouts             `yaml:"timeouts"`
	Rules       rules.Config         `yaml:"rules"`
	Cache       cache.Config         `yaml:"cache"`
	Greylist    cache.GreylistConfig `yaml:"greylist"`
	Signing     signing.Config       `yaml:"signing"`
	Journal     journal.Config       `yaml:"journal"`
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

// defaultConfig is what runs with no config file: a milter on loopback,
// system DNS, memory cache, no rules.
func defaultConfig() *Config {
	def := checks.DefaultConfig()
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return &Config{
		Hostname: host,
		OnError:  "tempfail",
		Log:      LogConfig{Format: "text", Level: "info"},
		Milter:   milter.Config{Listen: "inet:127.0.0.1:8891", SocketMode: "0660"},
		Policy:   policyd.DefaultConfig(),
		SMTP:     smtpDefaults(),
		Cache:    cache.DefaultConfig(),
		Greylist: cache.DefaultGreylistConfig(),
		Signing:  signing.DefaultConfig(),
		Journal:  journal.DefaultConfig(),
		Admin:    admin.Config{Listen: "127.0.0.1:9101"},
		SPF:      def.SPF,
		IPRev:    def.IPRev,
		DKIM:     def.DKIM,
		DMARC:    DMARCConfig{DMARCConfig: def.DMARC, OnTemperror: "tempfail"},
		Timeouts: Timeouts{Checks: 30 * time.Second, Milter: 5 * time.Minute, Shutdown: 30 * time.Second},
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
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
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
	if c.Milter.Listen != "" && !strings.HasPrefix(c.Milter.Listen, "inet:") && !strings.HasPrefix(c.Milter.Listen, "inet6:") &&
		!strings.HasPrefix(c.Milter.Listen, "unix:") && !strings.HasPrefix(c.Milter.Listen, "local:") {
		bad("milter.listen", "%q: want inet:HOST:PORT or unix:/path", c.Milter.Listen)
	}
	if _, err := c.socketMode(); err != nil {
		bad("milter.socket_mode", "%v", err)
	}
	for key, d := range map[string]time.Duration{"timeouts.checks": c.Timeouts.Checks, "timeouts.milter": c.Timeouts.Milter, "timeouts.shutdown": c.Timeouts.Shutdown} {
		if d <= 0 {
			bad(key, "must be a positive duration such as 30s")
		}
	}
	t := c.Thresholds
	if t.Reject < 0 || t.Quarantine < 0 || t.AddHeader < 0 {
		bad("thresholds", "thresholds must not be negative (0 turns a level off)")
	}
	if err := c.checks().Validate(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			errs = append(errs, fmt.Errorf("%s: %s", c.doc.Pos(firstWord(line)), line))
		}
	}
	sectionErrors := func(section string, err error) {
		for _, e := range unjoin(err) {
			var ce *cache.ConfigError
			if errors.As(e, &ce) {
				bad(section+"."+ce.Key, "%s", ce.Msg)
			} else {
				bad(section, "%v", e)
			}
		}
	}
	if err := c.Cache.Validate(); err != nil {
		sectionErrors("cache", err)
	}
	if err := c.Greylist.Validate(); err != nil {
		sectionErrors("greylist", err)
	}
	if err := c.Journal.Validate(); err != nil {
		for _, e := range unjoin(err) {
			var je *journal.ConfigError
			if errors.As(e, &je) {
				bad("journal."+je.Key, "%s", je.Msg)
			} else {
				bad("journal", "%v", e)
			}
		}
	}
	if sc := c.smtp(); sc.Listen != "" || sc.ListenTLS != "" {
		for _, p := range sc.Problems() {
			bad("smtp."+p.Key, "%s", p.Message)
		}
	}
	for _, p := range c.Signing.Problems() {
		bad("signing."+p.Key, "%s", p.Message)
	}
	if err := c.Policy.Validate(); err != nil {
		errs = append(errs, c.doc.Errorf("policy", "%v", err))
	}
	for name := range c.Lists {
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

// unjoin lists the errors errors.Join put together.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// checks is the checks' part of the config.
func (c *Config) checks() checks.Config {
	return checks.Config{DNS: c.DNS, SPF: c.SPF, IPRev: c.IPRev, DNSBL: c.DNSBL, DKIM: c.DKIM, DMARC: c.DMARC.DMARCConfig, Hostname: c.Hostname}
}

// firstWord picks the key an error message starts with, to find its line.
func firstWord(s string) string {
	if i := strings.IndexAny(s, " :"); i > 0 {
		return s[:i]
	}
	return s
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

func (c *Config) socketMode() (os.FileMode, error) {
	if c.Milter.SocketMode == "" {
		return 0, nil
	}
	m, err := strconv.ParseUint(c.Milter.SocketMode, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("%q: want an octal mode such as \"0660\"", c.Milter.SocketMode)
	}
	return os.FileMode(m), nil
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
		VerdictTTL:       time.Duration(c.Cache.VerdictTTL),
	}
}
