package cache

import (
	"cmp"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mailward/mailward/internal/config"
)

// Cache types.
const (
	TypeMemory = "memory"
	TypeRedis  = "redis"
)

// Defaults for zero config fields.
const (
	DefaultMaxEntries      = 100_000
	DefaultMaxBytes        = 64 << 20
	DefaultKeyPrefix       = "mailward:"
	DefaultTimeout         = 100 * time.Millisecond
	DefaultBreakerFailures = 5
	DefaultBreakerCooldown = 10 * time.Second
)

// Config is the `cache:` section of the config file.
type Config struct {
	Type       string        `yaml:"type"`        // memory (default) or redis
	MaxEntries int           `yaml:"max_entries"` // memory: entries held at most
	MaxBytes   int64         `yaml:"max_bytes"`   // memory: estimated bytes held at most
	Redis      RedisConfig   `yaml:"redis"`
	Breaker    BreakerConfig `yaml:"breaker"`
	// CheckTTL bounds how long a check result (SPF, iprev, DNS lists) is
	// reused, never past the smallest TTL of the DNS answers it came from.
	// 0 turns check caching off.
	CheckTTL Duration `yaml:"check_ttl"`
	// VerdictTTL is how long a message's final verdict answers a retry of
	// the same message; 0 turns it off.
	VerdictTTL Duration `yaml:"verdict_ttl"`
}

// RedisConfig says how to reach Redis: one node (one address), Cluster
// (several addresses) or Sentinel (master_name and the sentinels'
// addresses).
type RedisConfig struct {
	Addrs      []string `yaml:"addrs"`
	MasterName string   `yaml:"master_name"`
	Username   string   `yaml:"username"`
	Password   string   `yaml:"password"`
	// PasswordFile holds the password instead, so that it need not stand
	// in a world-readable config; see CredentialPath for where a
	// relative name is looked for.
	PasswordFile string `yaml:"password_file"`
	DB           int    `yaml:"db"`
	TLS          bool   `yaml:"tls"`
	// CAFile is a PEM bundle that verifies the servers instead of the
	// system roots; it needs tls.
	CAFile    string   `yaml:"ca_file"`
	KeyPrefix string   `yaml:"key_prefix"` // default "mailward:"
	Timeout   Duration `yaml:"timeout"`    // bound on every operation, default 100ms
}

// BreakerConfig sets the circuit breaker in front of Redis.
type BreakerConfig struct {
	// Failures is how many operations in a row must fail to open it.
	Failures int `yaml:"failures"`
	// Cooldown is how long it stays open before one probe may pass.
	Cooldown Duration `yaml:"cooldown"`
}

// DefaultConfig is a memory cache with the default bounds, and the Redis
// defaults in place should type be switched to redis.
func DefaultConfig() Config {
	return Config{
		Type:       TypeMemory,
		MaxEntries: DefaultMaxEntries,
		MaxBytes:   DefaultMaxBytes,
		Redis:      RedisConfig{KeyPrefix: DefaultKeyPrefix, Timeout: Duration(DefaultTimeout)},
		Breaker:    BreakerConfig{Failures: DefaultBreakerFailures, Cooldown: Duration(DefaultBreakerCooldown)},
		CheckTTL:   Duration(10 * time.Minute),
		VerdictTTL: Duration(time.Hour),
	}
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	c.Type = cmp.Or(c.Type, TypeMemory)
	if c.MaxEntries == 0 && c.MaxBytes == 0 {
		c.MaxEntries, c.MaxBytes = DefaultMaxEntries, DefaultMaxBytes
	}
	c.Redis.KeyPrefix = cmp.Or(c.Redis.KeyPrefix, DefaultKeyPrefix)
	c.Redis.Timeout = cmp.Or(c.Redis.Timeout, Duration(DefaultTimeout))
	c.Breaker.Failures = cmp.Or(c.Breaker.Failures, DefaultBreakerFailures)
	c.Breaker.Cooldown = cmp.Or(c.Breaker.Cooldown, Duration(DefaultBreakerCooldown))
	return c
}

// Validate reports every bad setting as config.Problems, keys relative
// to the section ("redis.addrs[1]"). Zero fields are fine: they take
// their defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	var ps config.Problems
	bad := ps.Add
	if c.Type != TypeMemory && c.Type != TypeRedis {
		bad("type", "%q: want memory or redis", c.Type)
	}
	if c.MaxEntries < 0 {
		bad("max_entries", "must not be negative")
	}
	if c.MaxBytes < 0 {
		bad("max_bytes", "must not be negative")
	}
	if c.CheckTTL < 0 {
		bad("check_ttl", "must not be negative (0 turns check caching off)")
	}
	if c.VerdictTTL < 0 {
		bad("verdict_ttl", "must not be negative (0 turns verdict caching off)")
	}
	r := c.Redis
	if c.Type == TypeRedis && len(r.Addrs) == 0 {
		bad("redis.addrs", "type redis needs at least one address (host:port)")
	}
	for i, a := range r.Addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			bad(fmt.Sprintf("redis.addrs[%d]", i), "%q: want host:port", a)
			continue
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			bad(fmt.Sprintf("redis.addrs[%d]", i), "%q: bad port", a)
		}
	}
	if r.PasswordFile != "" {
		if r.Password != "" {
			bad("redis.password_file", "password and password_file exclude each other")
		} else if _, err := r.secret(); err != nil {
			bad("redis.password_file", "%v", err)
		}
	}
	if r.DB < 0 {
		bad("redis.db", "must not be negative")
	}
	if r.DB != 0 && r.MasterName == "" && len(r.Addrs) > 1 {
		bad("redis.db", "Redis Cluster (several addresses) has only database 0")
	}
	if r.CAFile != "" && !r.TLS {
		bad("redis.ca_file", "needs tls: true")
	}
	if strings.ContainsAny(r.KeyPrefix, "{}") {
		bad("redis.key_prefix", "%q: braces would put every key in one Redis Cluster slot", r.KeyPrefix)
	}
	if r.Timeout < 0 {
		bad("redis.timeout", "must be a positive duration such as 100ms")
	}
	if c.Breaker.Failures < 0 {
		bad("breaker.failures", "must be at least 1")
	}
	if c.Breaker.Cooldown < 0 {
		bad("breaker.cooldown", "must be a positive duration such as 10s")
	}
	return ps.Err()
}

// CredentialPath is where the config's password_file name is read from:
// a relative name is a systemd credential (LoadCredential=) when
// $CREDENTIALS_DIRECTORY holds a file of that name, and otherwise
// relative to baseDir, the config file's directory.
func CredentialPath(name, baseDir string) string {
	if name == "" || filepath.IsAbs(name) {
		return name
	}
	if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return filepath.Join(baseDir, name)
}

// secret is the Redis password: Password, or the first line of
// PasswordFile.
func (r RedisConfig) secret() (string, error) {
	if r.PasswordFile == "" {
		return r.Password, nil
	}
	data, err := os.ReadFile(r.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("reading the Redis password: %w", err)
	}
	pw, _, _ := strings.Cut(string(data), "\n")
	pw = strings.TrimSuffix(pw, "\r")
	if pw == "" {
		return "", fmt.Errorf("%s: the first line, the password, is empty", r.PasswordFile)
	}
	return pw, nil
}

// Duration is a time.Duration in config files: Go's units (ms, s, m, h)
// plus d (24h) and w (7d), e.g. "100ms", "4h", "36d", "1d12h".
type Duration time.Duration

// ParseDuration reads the notation of Duration.
func ParseDuration(s string) (time.Duration, error) {
	bad := fmt.Errorf("%q: want a duration such as 100ms, 5m, 4h or 36d", s)
	rest := strings.TrimSpace(s)
	var b strings.Builder
	if rest != "" && (rest[0] == '-' || rest[0] == '+') {
		b.WriteByte(rest[0])
		rest = rest[1:]
	}
	isNum := func(c byte) bool { return c >= '0' && c <= '9' || c == '.' }
	// Rewrite d and w into hours; time.ParseDuration adds up the parts.
	for rest != "" {
		i := 0
		for i < len(rest) && isNum(rest[i]) {
			i++
		}
		j := i
		for j < len(rest) && !isNum(rest[j]) {
			j++
		}
		num, unit := rest[:i], rest[i:j]
		rest = rest[j:]
		if unit != "d" && unit != "w" {
			b.WriteString(num + unit)
			continue
		}
		n, err := strconv.ParseFloat(num, 64)
		if err != nil {
			return 0, bad
		}
		if unit == "d" {
			n *= 24
		} else {
			n *= 7 * 24
		}
		b.WriteString(strconv.FormatFloat(n, 'f', -1, 64) + "h")
	}
	d, err := time.ParseDuration(b.String())
	if err != nil {
		return 0, bad
	}
	return d, nil
}

// UnmarshalYAML reads a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as 100ms, 5m, 4h or 36d", n.Line)
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as Go prints it.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

func (d Duration) String() string { return time.Duration(d).String() }
