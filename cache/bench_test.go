package cache

import (
	"context"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/testenv"
)

// BenchmarkMemoryParallel: 90% reads, 10% writes over 10000 keys from
// every core, in a cache big enough to hold them.
func BenchmarkMemoryParallel(b *testing.B) {
	ctx := context.Background()
	m := NewMemory(DefaultConfig(), Options{})
	defer m.Close()
	keys := make([]string, 10_000)
	for i := range keys {
		keys[i] = "spf:192.0.2." + strconv.Itoa(i)
		m.Set(ctx, keys[i], []byte("pass ip4:192.0.2.0/24"), time.Hour)
	}
	var seq atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := seq.Add(1) * 7919
		for pb.Next() {
			i++
			k := keys[i%uint64(len(keys))]
			if i%10 == 0 {
				m.Set(ctx, k, []byte("pass ip4:192.0.2.0/24"), time.Hour)
			} else {
				m.Get(ctx, k)
			}
		}
	})
}

// BenchmarkMemoryEvicting: every Set evicts, in a cache of 1000 entries.
func BenchmarkMemoryEvicting(b *testing.B) {
	ctx := context.Background()
	m := NewMemory(Config{MaxEntries: 1000}, Options{})
	defer m.Close()
	var seq atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Set(ctx, strconv.FormatUint(seq.Add(1), 10), []byte("v"), time.Hour)
		}
	})
}

func BenchmarkMemoryAllow(b *testing.B) {
	ctx := context.Background()
	m := NewMemory(DefaultConfig(), Options{})
	defer m.Close()
	var seq atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := seq.Add(1)
		for pb.Next() {
			i++
			m.Allow(ctx, "sasl:user"+strconv.FormatUint(i%1000, 10), 100, time.Minute)
		}
	})
}

func BenchmarkMemoryGreylist(b *testing.B) {
	ctx := context.Background()
	m := NewMemory(DefaultConfig(), Options{})
	defer m.Close()
	g, _ := NewGreylist(m, GreylistConfig{})
	ip := netip.MustParseAddr("192.0.2.1")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		g.Check(ctx, ip, "sender@example.com", "rcpt"+strconv.Itoa(i%1000)+"@example.org")
	}
}

func benchRedis(b *testing.B) *Redis {
	srv := testenv.StartRedis(b)
	cfg := redisConfig(srv.Addr())
	cfg.Redis.Timeout = Duration(time.Second)
	return newRedis(b, cfg, Options{})
}

func BenchmarkRedisGet(b *testing.B) {
	ctx := context.Background()
	r := benchRedis(b)
	r.Set(ctx, "k", []byte("pass ip4:192.0.2.0/24"), time.Hour)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, ok, err := r.Get(ctx, "k"); !ok || err != nil {
				b.Errorf("Get: %v %v", ok, err)
				return
			}
		}
	})
}

func BenchmarkRedisSet(b *testing.B) {
	ctx := context.Background()
	r := benchRedis(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := r.Set(ctx, "k", []byte("pass ip4:192.0.2.0/24"), time.Hour); err != nil {
				b.Errorf("Set: %v", err)
				return
			}
		}
	})
}

func BenchmarkRedisAllow(b *testing.B) {
	ctx := context.Background()
	r := benchRedis(b)
	var seq atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := seq.Add(1)
		for pb.Next() {
			i++
			if _, _, _, err := r.Allow(ctx, "sasl:user"+strconv.FormatUint(i%1000, 10), 100, time.Minute); err != nil {
				b.Errorf("Allow: %v", err)
				return
			}
		}
	})
}

func BenchmarkRedisGreylist(b *testing.B) {
	ctx := context.Background()
	r := benchRedis(b)
	g, _ := NewGreylist(r, GreylistConfig{})
	ip := netip.MustParseAddr("192.0.2.1")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := g.Check(ctx, ip, "sender@example.com", "rcpt"+strconv.Itoa(i%1000)+"@example.org"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRedisBreakerOpen is the cost of a call while Redis is down.
func BenchmarkRedisBreakerOpen(b *testing.B) {
	ctx := context.Background()
	srv := testenv.StartRedis(b)
	cfg := redisConfig(srv.Addr())
	cfg.Breaker.Cooldown = Duration(time.Hour)
	r := newRedis(b, cfg, Options{})
	srv.Stop()
	for r.Stats().Breaker != BreakerOpen {
		r.Get(ctx, "k")
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.Get(ctx, "k")
		}
	})
}
