package resolver

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mailward/mailward/internal/testenv"
)

func TestObserveAndSkipSilentServers(t *testing.T) {
	srv := testenv.StartDNS(t, zone)
	r, err := New(Config{Servers: []string{srv.Addr()}, Timeout: 200 * time.Millisecond, Retries: 1})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []string
	r.Observe(func(qtype string, took time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		outcome := "ok"
		if errors.Is(err, ErrTimeout) {
			outcome = "timeout"
		}
		seen = append(seen, qtype+" "+outcome)
	})
	ctx := context.Background()
	if _, err := r.Query(ctx, "host.example.test", dns.TypeA); err != nil {
		t.Fatal(err)
	}
	r.Query(ctx, "host.example.test", dns.TypeA) // from the cache: not observed

	// Without SkipSilentServers every query waits out its attempts.
	srv.Drop("mx1.example.test")
	srv.Drop("mx2.example.test")
	r.Query(ctx, "mx1.example.test", dns.TypeA)
	begin := time.Now()
	r.Query(ctx, "mx2.example.test", dns.TypeA)
	if d := time.Since(begin); d < 300*time.Millisecond {
		t.Errorf("a second dropped query took %v: the server was skipped unasked", d)
	}
	mu.Lock()
	if got := len(seen); got != 3 || seen[0] != "A ok" || seen[1] != "A timeout" {
		t.Errorf("observed %q", seen)
	}
	mu.Unlock()

	// With it, a server silent through every attempt is not asked again.
	r.SkipSilentServers()
	srv.Drop("mx3.example.test")
	r.Query(ctx, "mx3.example.test", dns.TypeA)
	begin = time.Now()
	_, err = r.Query(ctx, "www.example.test", dns.TypeA)
	// Asking the server would wait out two 200ms attempts; an answer
	// from memory may still be held up by a loaded machine.
	if d := time.Since(begin); !errors.Is(err, ErrTimeout) || d > 300*time.Millisecond {
		t.Errorf("after a silent server: %v in %v; want a timeout at once", err, d)
	}
	if n := srv.Queries("www.example.test", dns.TypeA); n != 0 {
		t.Errorf("the silent server was asked %d times", n)
	}
}
