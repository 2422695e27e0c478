package policy

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/dmarc"
	"github.com/mailward/mailward/checks/spf"
)

// burn uses d of this thread's CPU.
func burn(d time.Duration) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for start := threadCPU(); threadCPU()-start < d; {
		for i := 0; i < 10000; i++ {
			_ = strings.Repeat("x", 8)
		}
	}
}

// costlyChecker's verifier burns CPU on every write, as a parser with a
// quadratic path would on hostile input.
type costlyChecker struct {
	Given    // no results
	perWrite time.Duration
	writes   int
	closed   bool
}

func (k *costlyChecker) Message() MessageVerifier { return (*costlyVerifier)(k) }

type costlyVerifier costlyChecker

func (v *costlyVerifier) Write(p []byte) (int, error) {
	v.writes++
	burn(v.perWrite)
	return len(p), nil
}
func (v *costlyVerifier) Finish(context.Context, *spf.Result) ([]dkim.Result, *dmarc.Result) {
	return nil, nil
}
func (v *costlyVerifier) Close() { v.closed = true }

func skipWithoutThreadCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the per-thread CPU clock is Linux's")
	}
}

// A message whose checks pass the CPU budget gets the on_error verdict,
// and its checks stop: the verifier is closed and sees no more of it,
// and no rule runs on what is left.
func TestCPUBudgetStopsTheWork(t *testing.T) {
	skipWithoutThreadCPU(t)
	for _, onError := range []Action{Tempfail, Accept} {
		k := &costlyChecker{perWrite: 20 * time.Millisecond}
		eomRules := 0
		e := NewEngine(Settings{Hostname: "mx.test", OnError: onError, MessageCPU: 50 * time.Millisecond}, k,
			RulesFunc(func(_ context.Context, st Stage, _ *Facts, _ *[]Match) Verdict {
				if st == StageEOM {
					eomRules++
				}
				return Verdict{}
			}), quiet())
		c, _ := e.Connect(ctx, ConnInfo{})
		c.Mail(ctx, "a@x.example", MailInfo{})
		c.Rcpt(ctx, "b@y.example")
		c.HeaderField("Subject", " x")
		c.EndOfHeaders(ctx)
		for range 20 {
			c.Body([]byte("line\r\n"))
		}
		v := c.EndOfMessage(ctx)
		c.Close()
		want := Tempfail
		if onError == Accept {
			want = Accept
		}
		if v.Action != want || !strings.Contains(v.Reason, "CPU budget") {
			t.Errorf("on_error %s: verdict %s (%s); want %s for the budget", onError, v.Action, v.Reason, want)
		}
		if !k.closed || k.writes > 4 {
			t.Errorf("verifier closed %v after %d writes; want closed once the budget was spent (3 writes)", k.closed, k.writes)
		}
		if eomRules != 0 {
			t.Errorf("rules ran at end of message over the budget")
		}
		if n := e.OverLimits("message_cpu"); n != 1 {
			t.Errorf("counted %d messages over the budget", n)
		}
		if e.MessageCPU() < 50*time.Millisecond {
			t.Errorf("charged CPU %v", e.MessageCPU())
		}
	}
}

// Waiting is not CPU: a stage that sleeps on the network for longer than
// the budget is not charged for it, and the next message starts afresh.
func TestCPUBudgetChargesCPUNotWaiting(t *testing.T) {
	skipWithoutThreadCPU(t)
	e := NewEngine(Settings{Hostname: "mx.test", MessageCPU: 30 * time.Millisecond}, nil,
		RulesFunc(func(_ context.Context, st Stage, f *Facts, _ *[]Match) Verdict {
			switch {
			case st == StageMail:
				time.Sleep(100 * time.Millisecond)
			case st == StageEOM && f.MailFrom == "costly@x.example":
				burn(40 * time.Millisecond)
			}
			return Verdict{}
		}), quiet())
	c, _ := e.Connect(ctx, ConnInfo{})
	defer c.Close()
	for _, from := range []string{"costly@x.example", "sleepy@x.example"} {
		c.Mail(ctx, from, MailInfo{})
		c.Rcpt(ctx, "b@y.example")
		c.EndOfHeaders(ctx)
		v := c.EndOfMessage(ctx)
		want := Accept
		if from == "costly@x.example" {
			want = Tempfail
		}
		if v.Action != want {
			t.Errorf("%s: %s (%s); want %s", from, v.Action, v.Reason, want)
		}
	}
}
