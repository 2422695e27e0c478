package cache

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestBreaker(t *testing.T) {
	clk := newFakeClock()
	logs := &syncLog{}
	b := newBreaker(BreakerConfig{Failures: 3, Cooldown: Duration(10 * time.Second)}, clk.Now, slog.New(slog.NewTextHandler(logs, nil)))
	boom := errors.New("connection refused")
	fail := func() {
		t.Helper()
		ok, probe := b.allow()
		if !ok {
			t.Fatal("refused while closed")
		}
		b.done(probe, failed, boom)
	}
	state := func(want BreakerState) {
		t.Helper()
		if got, _ := b.stats(); got != want {
			t.Fatalf("state %s, want %s", got, want)
		}
	}

	// Failures must be consecutive: a success in between starts over.
	fail()
	fail()
	ok, probe := b.allow()
	b.done(probe, succeeded, nil)
	if !ok || probe {
		t.Fatal("closed breaker refused or probed")
	}
	fail()
	fail()
	state(BreakerClosed)
	fail()
	state(BreakerOpen)
	if _, opens := b.stats(); opens != 1 {
		t.Fatalf("%d opens", opens)
	}

	// Open: everything refused until the cooldown is over.
	clk.Add(9 * time.Second)
	if ok, _ := b.allow(); ok {
		t.Fatal("open breaker let a call through")
	}
	clk.Add(time.Second)
	ok, probe = b.allow()
	if !ok || !probe {
		t.Fatal("no probe after the cooldown")
	}
	state(BreakerHalfOpen)
	if ok, _ := b.allow(); ok {
		t.Fatal("a second call went through while the probe is out")
	}
	// A failed probe opens it again for a whole cooldown.
	b.done(true, failed, boom)
	state(BreakerOpen)
	clk.Add(5 * time.Second)
	if ok, _ := b.allow(); ok {
		t.Fatal("reopened breaker let a call through")
	}
	clk.Add(5 * time.Second)
	// A probe whose caller gave up frees the slot for another probe.
	_, probe = b.allow()
	b.done(probe, unknown, nil)
	state(BreakerHalfOpen)
	ok, probe = b.allow()
	if !ok || !probe {
		t.Fatal("no new probe after an inconclusive one")
	}
	// A stale success from before the opening does not close it; the probe's does.
	b.done(false, succeeded, nil)
	state(BreakerHalfOpen)
	b.done(probe, succeeded, nil)
	state(BreakerClosed)
	if _, opens := b.stats(); opens != 1 {
		t.Fatalf("%d opens: a reopen within one outage counts once", opens)
	}
	for _, want := range []string{"redis cache unavailable: running uncached", "redis cache still unavailable", "redis cache available again", "down=20s"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

func TestBreakerStateNames(t *testing.T) {
	for s, want := range map[BreakerState]string{BreakerClosed: "closed", BreakerOpen: "open", BreakerHalfOpen: "half-open", 9: "unknown"} {
		if s.String() != want {
			t.Errorf("%d is %q, want %q", s, s, want)
		}
	}
}
