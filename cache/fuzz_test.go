package cache

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// FuzzGreylist feeds outside input (client address bytes, envelope
// addresses) to greylisting: no panic, and the state machine holds.
func FuzzGreylist(f *testing.F) {
	f.Add([]byte{192, 0, 2, 1}, "a@example.com", "b@example.org")
	f.Add([]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, "", "<>")
	f.Add([]byte{}, "prvs=", "prvs==@")
	f.Fuzz(func(t *testing.T, ipb []byte, sender, rcpt string) {
		ctx := context.Background()
		m, clk := newMemory(t, Config{MaxEntries: 100})
		g, err := NewGreylist(m, GreylistConfig{AutoAllow: 1})
		if err != nil {
			t.Fatal(err)
		}
		ip, _ := netip.AddrFromSlice(ipb)
		d, err := g.Check(ctx, ip, sender, rcpt)
		if !ip.IsValid() {
			if err == nil {
				t.Fatal("no error without a client address")
			}
			return
		}
		if err != nil || d.Pass || d.Reason != ReasonNew {
			t.Fatalf("first sight: %+v %v", d, err)
		}
		clk.Add(time.Duration(g.Config().Delay))
		if d, _ := g.Check(ctx, ip, sender, rcpt); !d.Pass || d.Reason != ReasonRetried {
			t.Fatalf("retry: %+v", d)
		}
		if d, _ := g.Check(ctx, ip, sender+"x", rcpt); !d.Pass || d.Reason != ReasonAutoAllowed {
			t.Fatalf("after auto-allow: %+v", d)
		}
	})
}

// FuzzParseDuration: any config text gives a duration or an error.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"100ms", "36d", "1d12h", "2w", "-1.5d", "5", "d", "1e9d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err == nil {
			if d2, err2 := time.ParseDuration(d.String()); err2 != nil || d2 != d {
				t.Fatalf("%q parsed to %s, which does not read back", s, d)
			}
		}
	})
}

// FuzzMemoryKeys: arbitrary keys and values round-trip.
func FuzzMemoryKeys(f *testing.F) {
	f.Add("spf:192.0.2.1", []byte("pass"), int64(5))
	f.Add("{", []byte{}, int64(-1))
	f.Fuzz(func(t *testing.T, key string, val []byte, delta int64) {
		ctx := context.Background()
		m, _ := newMemory(t, Config{MaxEntries: 10})
		if err := m.Set(ctx, key, val, time.Minute); err != nil {
			if key == "" {
				return
			}
			t.Fatalf("Set %q: %v", key, err)
		}
		v, ok, err := m.Get(ctx, key)
		if err != nil || !ok || string(v) != string(val) {
			t.Fatalf("Get %q = %q %v %v", key, v, ok, err)
		}
		m.Incr(ctx, key, delta, 0)
		if _, _, _, err := m.Allow(ctx, key, 1, time.Second); err != nil {
			t.Fatalf("Allow %q: %v", key, err)
		}
	})
}
