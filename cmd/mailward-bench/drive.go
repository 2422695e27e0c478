package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// outcome is what a server did with one message.
type outcome struct {
	Action       string // accept, reject, tempfail, discard, quarantine
	Code         int    // the SMTP code of the final reply, where there is one
	RejectedRcpt []string
	Removed      []string // header names deleted
	Err          error
	Stages       map[string]time.Duration
	Total        time.Duration
}

// sender delivers one message to the server under test.
type sender func(ctx context.Context, m *Message) outcome

// runOpts bound a run by count or duration.
type runOpts struct {
	Concurrency int
	Messages    int
	Offset      int // index of the first message sent
	Duration    time.Duration
	Progress    io.Writer
	Check       bool // compare each outcome with the corpus's expectation
	// Judge, when set, replaces wrong: it says how an outcome is wrong and
	// whether the message counts at all (a front may be unable to know
	// some verdicts).
	Judge func(m *Message, out outcome) (why string, counted bool)
}

// result sums up one run.
type result struct {
	Name      string             `json:"name"`
	Messages  int                `json:"messages"`
	Errors    int                `json:"errors"`
	Seconds   float64            `json:"seconds"`
	PerSecond float64            `json:"messages_per_second"`
	Latency   map[string]latency `json:"latency_ms"`
	Right     map[string]int     `json:"right"`
	Total     map[string]int     `json:"total"`
	Wrong     []string           `json:"wrong,omitempty"`
	Ratio     float64            `json:"ratio_to_baseline,omitempty"`
	// Offset is the corpus index of the first message; Repeats says
	// whether the run sent some message more than once (so the server's
	// verdict cache may have answered it).
	Offset  int  `json:"offset"`
	Repeats bool `json:"messages_repeat"`
	// Note says what the correctness counts leave out.
	Note string `json:"note,omitempty"`
	// Account is the fault-drill bookkeeping of --account.
	Account   *accounting                `json:"account,omitempty"`
	durations map[string][]time.Duration `json:"-"`
}

type latency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
}

func drive(ctx context.Context, name string, msgs []Message, send sender, o runOpts) *result {
	r := &result{Name: name, Right: map[string]int{}, Total: map[string]int{}, durations: map[string][]time.Duration{}}
	var mu sync.Mutex
	var next atomic.Int64
	start := time.Now()
	deadline := time.Time{}
	if o.Duration > 0 {
		deadline = start.Add(o.Duration)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	if o.Progress != nil {
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					mu.Lock()
					fmt.Fprintf(o.Progress, "\r%s: %d messages, %d errors, %.0f/s   ", name, r.Messages, r.Errors, float64(r.Messages)/time.Since(start).Seconds())
					mu.Unlock()
				}
			}
		}()
	}
	for w := 0; w < o.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				n := int(next.Add(1)) - 1
				if deadline.IsZero() && n >= o.Messages || !deadline.IsZero() && time.Now().After(deadline) {
					return
				}
				m := &msgs[(o.Offset+n)%len(msgs)]
				out := send(ctx, m)
				mu.Lock()
				r.record(m, out, o)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(done)
	if o.Progress != nil {
		fmt.Fprintln(o.Progress)
	}
	r.Seconds = time.Since(start).Seconds()
	r.PerSecond = float64(r.Messages) / r.Seconds
	r.Latency = map[string]latency{}
	for stage, ds := range r.durations {
		r.Latency[stage] = percentiles(ds)
	}
	return r
}

func (r *result) record(m *Message, out outcome, o runOpts) {
	r.Messages++
	if out.Err != nil {
		r.Errors++
		if len(r.Wrong) < 50 {
			r.Wrong = append(r.Wrong, fmt.Sprintf("%s (%s): %v", m.File, m.Class, out.Err))
		}
		return
	}
	for st, d := range out.Stages {
		r.durations[st] = append(r.durations[st], d)
	}
	r.durations["message"] = append(r.durations["message"], out.Total)
	if !o.Check {
		return
	}
	judge := o.Judge
	if judge == nil {
		judge = func(m *Message, out outcome) (string, bool) { return wrong(m, out), true }
	}
	why, counted := judge(m, out)
	if !counted {
		return
	}
	r.Total[m.Class]++
	if why != "" {
		if len(r.Wrong) < 50 {
			r.Wrong = append(r.Wrong, fmt.Sprintf("%s (%s): %s", m.File, m.Class, why))
		}
		return
	}
	r.Right[m.Class]++
}

// wrong says how an outcome differs from the corpus's expectation.
func wrong(m *Message, out outcome) string {
	if out.Action != m.Expect {
		return fmt.Sprintf("got %s, want %s", out.Action, m.Expect)
	}
	if fmt.Sprint(out.RejectedRcpt) != fmt.Sprint(orEmpty(m.RejectRcpts)) {
		return fmt.Sprintf("refused recipients %v, want %v", out.RejectedRcpt, m.RejectRcpts)
	}
	if m.RemoveHeader != "" {
		for _, h := range out.Removed {
			if h == m.RemoveHeader {
				return ""
			}
		}
		return "forged " + m.RemoveHeader + " not removed"
	}
	return ""
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func percentiles(ds []time.Duration) latency {
	if len(ds) == 0 {
		return latency{}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	at := func(p float64) float64 {
		i := int(p * float64(len(ds)-1))
		return float64(ds[i].Microseconds()) / 1000
	}
	return latency{P50: at(0.50), P90: at(0.90), P99: at(0.99)}
}
