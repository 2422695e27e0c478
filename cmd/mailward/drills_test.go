package main

// Fault drills: the real binary under load while a part it depends on
// fails. Every message sent is counted: it must end accepted once or
// refused with a code the client saw, within the configured bounds.

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// checkBound is timeouts.checks in the DNS drill; answers may take it
// plus slack for scheduling on a loaded machine.
const (
	checkBound = 2 * time.Second
	slack      = time.Second
)

// TestDrillDNSFailure: the sender domain's DNS answers SERVFAIL, then
// nothing at all. Its messages are tempfailed within the check bound,
// everything else keeps flowing, and once DNS is back mail is accepted
// again without a restart.
func TestDrillDNSFailure(t *testing.T) {
	e := startDrill(t, "dns:\n  timeout: 300ms\n  retries: -1\ntimeouts:\n  checks: "+checkBound.String()+"\n", nil)
	ta := &tally{}
	seq := 0
	// Each message has its own HELO name so that no cached SPF result
	// hides the fault.
	msg := func(phase string) message {
		seq++
		return message{n: seq, from: "a@drill.example", helo: fmt.Sprintf("h%d.c.example", seq), subject: phase}
	}
	phase := func(name string, n int, want func(o outcome) error) {
		t.Helper()
		var wg sync.WaitGroup
		for range n {
			m := msg(name)
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := send(e.addr, m)
				ta.add(o)
				if o.err != nil {
					t.Errorf("%s: message %d got no answer: %v", name, o.n, o.err)
				} else if err := want(o); err != nil {
					t.Errorf("%s: message %d: %v (code %d %q at %s, %s)", name, o.n, err, o.code, o.reply, o.stage, o.authres)
				}
				if o.took > checkBound+slack {
					t.Errorf("%s: message %d answered after %s, over the %s bound", name, o.n, o.took, checkBound+slack)
				}
			}()
		}
		wg.Wait()
	}
	accepted := func(spf string) func(outcome) error {
		return func(o outcome) error {
			if o.code != 250 || !strings.Contains(o.authres, "spf="+spf) {
				return fmt.Errorf("want accepted with spf=%s", spf)
			}
			return nil
		}
	}
	tempfailed := func(o outcome) error {
		if o.code != 451 {
			return fmt.Errorf("want 451")
		}
		return nil
	}

	phase("healthy", 4, accepted("pass"))
	e.dns.ServFail("drill.example")
	time.Sleep(1200 * time.Millisecond) // the TXT record's TTL runs out
	phase("servfail", 4, tempfailed)
	e.dns.Reset("drill.example")
	e.dns.Drop("drill.example")
	phase("timeout", 4, tempfailed)
	t.Logf("after timeouts: %s", ta.summary())
	e.dns.Reset("drill.example")

	// Recovery by itself: a SERVFAIL or timeout may be remembered briefly,
	// not for good.
	start := time.Now()
	for {
		o := send(e.addr, msg("recovery"))
		ta.add(o)
		if o.code == 250 && strings.Contains(o.authres, "spf=pass") {
			break
		}
		if o.err != nil || o.code != 451 {
			t.Fatalf("during recovery: %+v", o)
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("still %d %q %s after DNS came back", o.code, o.reply, time.Since(start))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("recovered %s after DNS came back", time.Since(start).Round(time.Millisecond))
	phase("recovered", 4, accepted("pass"))
	t.Log(ta.summary())
}

// TestDrillDNSFailureOnErrorAccept: with on_error: accept a sender domain
// whose DNS fails is let through, marked spf=temperror.
func TestDrillDNSFailureOnErrorAccept(t *testing.T) {
	e := startDrill(t, "on_error: accept\ndns:\n  timeout: 300ms\n  retries: -1\ntimeouts:\n  checks: "+checkBound.String()+"\n", nil)
	e.dns.ServFail("drill.example")
	ta := &tally{}
	for n := range 4 {
		o := send(e.addr, message{n: n, from: "a@drill.example", helo: fmt.Sprintf("h%d.c.example", n), subject: "servfail"})
		ta.add(o)
		if o.err != nil || o.code != 250 || !strings.Contains(o.authres, "spf=temperror") {
			t.Errorf("message %d: want accepted with spf=temperror, got %d %q %q %v", n, o.code, o.reply, o.authres, o.err)
		}
		if o.took > checkBound+slack {
			t.Errorf("message %d answered after %s", n, o.took)
		}
	}
	t.Log(ta.summary())
}
