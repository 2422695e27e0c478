package reports

import (
	"fmt"
	"net/mail"
	"strings"
	"time"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/internal/config"
	"github.com/mailward/mailward/reports/deliver"
)

// DefaultInterval is the reporting period RFC 9990 expects: a UTC day.
const DefaultInterval = 24 * time.Hour

// Config is the reports: section. The delivery keys (relay, from, …)
// stand in it beside these.
type Config struct {
	// Enabled turns recording and sending on; off by default.
	Enabled bool `yaml:"enabled"`
	// Interval is the period one report covers: a UTC day, or a part of
	// one that divides it (periods start at UTC midnight).
	Interval cache.Duration `yaml:"interval"`
	// Store is the file the aggregates of one instance are saved to; a
	// fleet with cache.type redis keeps them in Redis instead.
	Store string `yaml:"store"`
	// OrgName and Email are the report_metadata of every report.
	OrgName string `yaml:"org_name"`
	Email   string `yaml:"email"`
	// Suppress lists policy domains, their subdomains too, never
	// reported to.
	Suppress []string `yaml:"suppress"`
	// RequirePass reports only to domains some of whose mail passed
	// DMARC in the period.
	RequirePass bool `yaml:"require_pass"`

	deliver.Config `yaml:",inline"`
}

// DefaultConfig is off, with every default in place.
func DefaultConfig() Config {
	return Config{Interval: cache.Duration(DefaultInterval), Config: deliver.DefaultConfig()}
}

// Period is the interval, defaulted.
func (c Config) Period() time.Duration {
	if c.Interval == 0 {
		return DefaultInterval
	}
	return time.Duration(c.Interval)
}

// Validate reports every bad value as config.Problems, keys relative to
// the section. Only an enabled section must be complete.
func (c Config) Validate() error {
	var ps config.Problems
	if iv := time.Duration(c.Interval); iv < 0 || iv > 0 && (iv < time.Minute || iv > DefaultInterval || DefaultInterval%iv != 0) {
		ps.Add("interval", "%s: want 24h or a part of a day that divides it, such as 6h or 1h", iv)
	}
	for i, s := range c.Suppress {
		if d := strings.TrimSuffix(s, "."); d == "" || strings.ContainsAny(d, " \t@/") || !strings.Contains(d, ".") {
			ps.Add(fmt.Sprintf("suppress[%d]", i), "%q: want a domain name such as example.com", s)
		}
	}
	if !c.Enabled {
		return ps.Err()
	}
	if strings.TrimSpace(c.OrgName) == "" {
		ps.Add("org_name", "required to send reports: the name of the organisation reporting, for report_metadata")
	}
	if c.Email == "" {
		ps.Add("email", "required to send reports: the contact address of report_metadata")
	} else if a, err := mail.ParseAddress(c.Email); err != nil || a.Address != c.Email {
		ps.Add("email", "%q: want a bare address such as dmarc@example.net", c.Email)
	}
	if err := c.Config.Validate(); err != nil {
		if dp, ok := err.(config.Problems); ok {
			ps = append(ps, dp...)
		} else {
			ps.Add("", "%v", err)
		}
	}
	return ps.Err()
}
