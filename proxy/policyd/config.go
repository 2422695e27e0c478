package policyd

import (
	"fmt"
	"io/fs"
	"net"
	"time"

	"github.com/mailward/mailward/internal/config"
	"github.com/mailward/mailward/proxy"
)

// Config is the policy service's part of the config file (the policy:
// section). Zero values take the defaults of DefaultConfig.
type Config struct {
	// Listen is inet:HOST:PORT or unix:/path, as check_policy_service
	// writes it; empty: no policy service.
	Listen string `yaml:"listen"`
	// SocketMode is the mode of a unix socket, e.g. "0660".
	SocketMode string `yaml:"socket_mode"`
	// IdleTimeout bounds the wait for the next request on a connection.
	// Keep it above Postfix's smtpd_policy_service_max_idle (300s), so
	// that Postfix, not mailward, closes idle connections.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// ReadTimeout bounds the reading of one request once it has begun.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds the writing of one answer.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// InstanceTTL drops the state of a message (or SMTP session) that no
	// request has touched for this long.
	InstanceTTL time.Duration `yaml:"instance_ttl"`
	// MaxInstances bounds the messages and sessions held at once; past it,
	// requests are answered without state (each one replays the session).
	MaxInstances int `yaml:"max_instances"`
}

// Defaults.
const (
	DefaultIdleTimeout  = 10 * time.Minute
	DefaultReadTimeout  = 30 * time.Second
	DefaultWriteTimeout = 30 * time.Second
	DefaultInstanceTTL  = time.Hour
	DefaultMaxInstances = 10000
)

// Protocol limits. Postfix's requests are about 1 KiB; these leave room
// for long certificate subjects without letting a peer fill memory.
const (
	MaxLine    = 8 << 10
	MaxRequest = 64 << 10
)

// DefaultConfig returns the defaults; Listen stays empty.
func DefaultConfig() Config {
	return Config{
		SocketMode:   "0660",
		IdleTimeout:  DefaultIdleTimeout,
		ReadTimeout:  DefaultReadTimeout,
		WriteTimeout: DefaultWriteTimeout,
		InstanceTTL:  DefaultInstanceTTL,
		MaxInstances: DefaultMaxInstances,
	}
}

// withDefaults fills in zero values.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = d.ReadTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.InstanceTTL <= 0 {
		c.InstanceTTL = d.InstanceTTL
	}
	if c.MaxInstances <= 0 {
		c.MaxInstances = d.MaxInstances
	}
	return c
}

// Validate checks the values a config file may get wrong, as
// config.Problems keyed within the policy section.
func (c Config) Validate() error {
	var ps config.Problems
	if c.Listen != "" {
		if err := config.CheckSocketAddr(c.Listen); err != nil {
			ps.Add("listen", "%v", err)
		}
	}
	if _, err := c.Mode(); err != nil {
		ps.Add("socket_mode", "%v", err)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"idle_timeout", c.IdleTimeout}, {"read_timeout", c.ReadTimeout}, {"write_timeout", c.WriteTimeout}, {"instance_ttl", c.InstanceTTL}} {
		if d.v < 0 {
			ps.Add(d.key, "must not be negative (0 takes the default)")
		}
	}
	if c.MaxInstances < 0 {
		ps.Add("max_instances", "must not be negative (0 takes the default)")
	}
	return ps.Err()
}

// Mode parses SocketMode; 0 means leave the mode alone.
func (c Config) Mode() (fs.FileMode, error) { return config.SocketMode(c.SocketMode) }

// Listen opens the listener cfg.Listen names.
func Listen(cfg Config) (net.Listener, error) {
	mode, err := cfg.Mode()
	if err != nil {
		return nil, fmt.Errorf("policy socket mode: %w", err)
	}
	ln, err := proxy.Listen(cfg.Listen, mode)
	if err != nil {
		return nil, fmt.Errorf("policy %w", err)
	}
	return ln, nil
}
