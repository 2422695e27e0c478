package deliver

import (
	"fmt"
	"net/mail"
	"strings"
	"time"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/internal/config"
)

// Config holds the delivery keys of the reports: section. Start from
// DefaultConfig: there Retries and MaxPerHour hold their defaults, while
// zero, as a file may set them, means no retries and no cap.
type Config struct {
	// Relay is the SMTP server (HOST:PORT) reports are handed to.
	Relay string `yaml:"relay"`
	// From is the envelope and header sender of reports. Its domain is
	// the Submitter of the Subject field and the receiver of the file name.
	From string `yaml:"from"`
	// HELO is the name given in EHLO; empty: the host name.
	HELO string `yaml:"helo"`
	// StartTLS is "opportunistic" (encrypt when the relay offers it, the
	// default), "require" (refuse to send in clear; the certificate must
	// verify) or "off".
	StartTLS string `yaml:"starttls"`
	// TLSCAFile is a PEM file of the CAs that verify the relay's
	// certificate under starttls: require; empty: the system's.
	TLSCAFile string `yaml:"tls_ca_file"`
	// Username, with PasswordFile, logs in to the relay (AUTH PLAIN),
	// only ever over TLS.
	Username string `yaml:"username"`
	// PasswordFile holds the relay password on its first line.
	PasswordFile string `yaml:"password_file"`
	// Timeout bounds one SMTP session with the relay.
	Timeout cache.Duration `yaml:"timeout"`
	// Retries is how many times a delivery is tried again after a 4xx
	// reply, a broken connection or a DNS fault.
	Retries int `yaml:"retries"`
	// RetryBackoff is the wait before the first retry; it doubles each
	// time, up to an hour.
	RetryBackoff cache.Duration `yaml:"retry_backoff"`
	// MaxPerHour caps report messages sent per hour, across the fleet
	// when the cache is Redis; 0 means no cap.
	MaxPerHour int `yaml:"max_per_hour"`
	// MaxDestinations is how many rua URIs of one record are used.
	MaxDestinations int `yaml:"max_destinations"`
	// IgnoreSizeLimits sends to a URI whatever its "!size" suffix says.
	IgnoreSizeLimits bool `yaml:"ignore_size_limits"`
}

// The defaults zero fields take.
const (
	DefaultTimeout         = 2 * time.Minute
	DefaultRetries         = 5
	DefaultRetryBackoff    = time.Minute
	DefaultMaxPerHour      = 3600
	DefaultMaxDestinations = 5
	maxBackoff             = time.Hour
)

// StartTLS policies.
const (
	StartTLSOpportunistic = "opportunistic"
	StartTLSRequire       = "require"
	StartTLSOff           = "off"
)

// DefaultConfig is Config with every default filled in; Relay and From
// have none.
func DefaultConfig() Config {
	return Config{
		StartTLS:        StartTLSOpportunistic,
		Timeout:         cache.Duration(DefaultTimeout),
		Retries:         DefaultRetries,
		RetryBackoff:    cache.Duration(DefaultRetryBackoff),
		MaxPerHour:      DefaultMaxPerHour,
		MaxDestinations: DefaultMaxDestinations,
	}
}

// withDefaults fills the fields a Config built in code left zero.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.StartTLS == "" {
		c.StartTLS = d.StartTLS
	}
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = d.RetryBackoff
	}
	if c.MaxDestinations == 0 {
		c.MaxDestinations = d.MaxDestinations
	}
	return c
}

// Validate reports every bad value as config.Problems, keys relative to
// the reports section. Relay and From are required: call it when
// reports are to be sent.
func (c Config) Validate() error {
	var ps config.Problems
	switch {
	case c.Relay == "":
		ps.Add("relay", "required to send reports: the SMTP server (HOST:PORT) to hand them to")
	default:
		if err := config.CheckHostPort(c.Relay, false); err != nil {
			ps.Add("relay", "%v", err)
		}
	}
	if c.From == "" {
		ps.Add("from", "required to send reports: the address they come from")
	} else if _, err := fromDomain(c.From); err != nil {
		ps.Add("from", "%v", err)
	}
	if strings.ContainsAny(c.HELO, " \t\r\n") {
		ps.Add("helo", "%q: want a host name", c.HELO)
	}
	switch c.StartTLS {
	case "", StartTLSOpportunistic, StartTLSRequire, StartTLSOff:
	default:
		ps.Add("starttls", "%q: want opportunistic, require or off", c.StartTLS)
	}
	switch {
	case c.Username != "" && c.PasswordFile == "":
		ps.Add("password_file", "required with username: the file holding the relay password")
	case c.Username == "" && c.PasswordFile != "":
		ps.Add("username", "required with password_file")
	case c.Username != "" && c.StartTLS == StartTLSOff:
		ps.Add("starttls", "off with username: the password would cross the network in clear")
	}
	if c.Timeout < 0 {
		ps.Add("timeout", "%s: must not be negative", c.Timeout)
	}
	if c.Retries < 0 {
		ps.Add("retries", "%d: must not be negative", c.Retries)
	}
	if c.RetryBackoff < 0 {
		ps.Add("retry_backoff", "%s: must not be negative", c.RetryBackoff)
	}
	if c.MaxPerHour < 0 {
		ps.Add("max_per_hour", "%d: must not be negative (0 means no cap)", c.MaxPerHour)
	}
	if c.MaxDestinations < 0 {
		ps.Add("max_destinations", "%d: must not be negative", c.MaxDestinations)
	}
	return ps.Err()
}

// fromDomain checks a bare address and returns its domain, lower-cased.
func fromDomain(addr string) (string, error) {
	a, err := mail.ParseAddress(addr)
	if err != nil || a.Address != addr || a.Name != "" {
		return "", fmt.Errorf("%q: want a bare address such as dmarc-reports@example.net", addr)
	}
	_, domain, _ := strings.Cut(a.Address, "@")
	if !strings.Contains(domain, ".") || strings.HasPrefix(domain, "[") {
		return "", fmt.Errorf("%q: want an address at a domain name", addr)
	}
	return strings.ToLower(domain), nil
}
