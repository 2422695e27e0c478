package deliver

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/internal/testenv"
)

func TestRateCapSpacesMessages(t *testing.T) {
	f := newFixture(t, nil, func(c *Config) { c.MaxPerHour = 3600 })
	clock := time.Unix(1764720000, 0)
	f.sender.rate.now = func() time.Time { return clock }
	r := testReport("mailto:a@example.com", "mailto:b@example.com", "mailto:c@example.com")
	if err := f.sender.Send(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	// 3600 an hour is one a second: the second message waits 1s, the
	// third 2s (the clock stands still here).
	if want := []time.Duration{time.Second, 2 * time.Second}; !equalDurations(f.waits, want) {
		t.Errorf("waits %v, want %v", f.waits, want)
	}
	if n := len(f.relay.messages()); n != 3 {
		t.Errorf("%d messages, want 3", n)
	}
}

// TestRateCapSharedThroughRedis: two instances on one Redis share one
// max_per_hour budget.
func TestRateCapSharedThroughRedis(t *testing.T) {
	rd := testenv.StartRedis(t)
	newCache := func() cache.Cache {
		c, err := cache.New(cache.Config{Type: "redis", Redis: cache.RedisConfig{Addrs: []string{rd.Addr()}, KeyPrefix: "t:"}}, cache.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a := newFixture(t, nil, func(c *Config) { c.MaxPerHour = 2 })
	a.sender.rate.cache = newCache()
	b := newFixture(t, nil, func(c *Config) { c.MaxPerHour = 2 })
	b.sender.rate.cache = newCache()
	if err := a.sender.Send(context.Background(), testReport("mailto:a@example.com", "mailto:b@example.com")); err != nil {
		t.Fatal(err)
	}
	if len(a.waits) != 0 {
		t.Errorf("the first two messages waited %v", a.waits)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.onWait = func(int) { cancel() }
	err := b.sender.Send(ctx, testReport("mailto:c@example.com"))
	if err == nil || len(b.relay.messages()) != 0 {
		t.Fatalf("the other instance sent past the shared cap: %v", err)
	}
	if len(b.waits) != 1 || b.waits[0] < 10*time.Minute {
		t.Errorf("waits %v: want one wait of about half an hour", b.waits)
	}
	var se *SendError
	if !errors.As(err, &se) || !se.Temporary() {
		t.Errorf("Send: %v, want a temporary *SendError", err)
	}
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, nil, nil)
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	f.sender.metrics = m
	f.relay.failNext(0, 550) // a@ is taken, b@ refused
	_ = f.sender.Send(context.Background(), testReport("mailto:a@example.com", "mailto:b@example.com", "mailto:x@example.org", "https://example.com/r"))
	if got := counterValue(t, m.sent); got != 1 {
		t.Errorf("sent %v, want 1", got)
	}
	if got := counterValue(t, m.failed); got != 1 {
		t.Errorf("failed %v, want 1", got)
	}
	if got := counterValue(t, m.refused); got != 2 {
		t.Errorf("refused %v, want 2", got)
	}
	// A Sender made again on the same registry (a reload) counts on.
	res, _ := resolver.New(resolver.Config{Servers: []string{f.dns.Addr()}})
	s2, err := New(f.sender.cfg, Deps{Resolver: res, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	if s2.metrics.sent != m.sent {
		t.Error("second Sender does not share the registered counter")
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
