package cache

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/config"
)

type fileConfig struct {
	Cache    Config         `yaml:"cache"`
	Greylist GreylistConfig `yaml:"greylist"`
}

func decode(t *testing.T, text string) (*fileConfig, error) {
	t.Helper()
	cfg := &fileConfig{Cache: DefaultConfig(), Greylist: DefaultGreylistConfig()}
	_, err := config.Decode("mailward.yaml", []byte(text), cfg)
	return cfg, err
}

func TestConfigDecode(t *testing.T) {
	cfg, err := decode(t, `
cache:
  type: redis
  max_entries: 5000
  redis:
    addrs: [10.0.0.1:6379, 10.0.0.2:6379, 10.0.0.3:6379]
    username: mailward
    password: secret
    tls: true
    ca_file: /etc/ssl/redis-ca.pem
    key_prefix: "mx:"
    timeout: 250ms
  breaker:
    failures: 3
    cooldown: 30s
greylist:
  delay: 2m
  retry_window: 1d12h
  expiry: 36d
  auto_allow: 0
  netmask_v4: 32
`)
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Cache
	if c.Type != "redis" || c.MaxEntries != 5000 || c.MaxBytes != DefaultMaxBytes || len(c.Redis.Addrs) != 3 ||
		!c.Redis.TLS || c.Redis.KeyPrefix != "mx:" || time.Duration(c.Redis.Timeout) != 250*time.Millisecond ||
		c.Breaker.Failures != 3 || time.Duration(c.Breaker.Cooldown) != 30*time.Second {
		t.Fatalf("decoded %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	g := cfg.Greylist
	want := GreylistConfig{
		Delay: Duration(2 * time.Minute), RetryWindow: Duration(36 * time.Hour), Expiry: Duration(36 * 24 * time.Hour),
		AutoAllow: 0, NetmaskV4: 32, NetmaskV6: 64,
	}
	if g != want {
		t.Fatalf("greylist %+v, want %+v", g, want)
	}
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigDecodeErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"cache:\n  redis:\n    timout: 1s\n", `mailward.yaml:3:5: unknown key "cache.redis.timout" (did you mean "timeout"?)`},
		{"cache:\n  redis:\n    timeout: 100\n", `mailward.yaml:3:14: cache.redis.timeout: "100": want a duration`},
		{"greylist:\n  expiry: 36x\n", `"36x": want a duration`},
		{"greylist:\n  delay: [1]\n", `mailward.yaml:2:10: greylist.delay: want a duration`},
	} {
		_, err := decode(t, tc.text)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.text, err, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	bad := Config{
		Type:       "memcached",
		MaxEntries: -1,
		Redis: RedisConfig{
			Addrs: []string{"10.0.0.1:6379", "10.0.0.2", "host:99999"}, DB: 3,
			CAFile: "/ca.pem", KeyPrefix: "{mw}:", Timeout: Duration(-time.Second),
		},
		Breaker: BreakerConfig{Failures: -1},
	}
	err := bad.Validate()
	var keys []string
	var ps config.Problems
	if !errors.As(err, &ps) {
		t.Fatalf("%v is not config.Problems", err)
	}
	for _, p := range ps {
		keys = append(keys, p.Key)
	}
	want := "type max_entries redis.addrs[1] redis.addrs[2] redis.db redis.ca_file redis.key_prefix redis.timeout breaker.failures"
	if strings.Join(keys, " ") != want {
		t.Fatalf("errors on %v, want %s\n%v", keys, want, err)
	}
	if err := (Config{Type: TypeRedis}).Validate(); err == nil || !strings.Contains(err.Error(), "redis.addrs") {
		t.Fatalf("redis without addresses: %v", err)
	}
	if _, err := New(Config{Type: TypeRedis}, Options{}); err == nil {
		t.Fatal("New built a Redis cache without addresses")
	}
	c, err := New(Config{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*Memory); !ok {
		t.Fatalf("zero config built a %T", c)
	}
	c.Close()

	gbad := GreylistConfig{Delay: Duration(time.Hour), RetryWindow: Duration(time.Minute), AutoAllow: -1, NetmaskV4: 33, NetmaskV6: 129}
	err = gbad.Validate()
	for _, k := range []string{"retry_window", "auto_allow", "netmask_v4", "netmask_v6"} {
		if err == nil || !strings.Contains(err.Error(), k+":") {
			t.Errorf("greylist error lacks %s: %v", k, err)
		}
	}
	if _, err := NewGreylist(NewMemory(Config{}, Options{}), gbad); err == nil {
		t.Fatal("NewGreylist accepted a bad config")
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"100ms": 100 * time.Millisecond, "5m": 5 * time.Minute, "4h": 4 * time.Hour, "36d": 36 * 24 * time.Hour,
		"1d12h": 36 * time.Hour, "2w": 14 * 24 * time.Hour, "1.5d": 36 * time.Hour, "0": 0, " 10s ": 10 * time.Second,
		"1h30m": 90 * time.Minute, "500µs": 500 * time.Microsecond, "-1d": -24 * time.Hour,
	} {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "5", "1x", "d5", "1..5d", "99999999999d", "5m d"} {
		if d, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %s, want an error", in, d)
		}
	}
}
