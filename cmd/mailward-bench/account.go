package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailward/mailward/policy"
)

// seqHeader carries a number unique to each send in --account mode, so
// that the sink tells apart two sends of one corpus message. It is added
// last and signed by no one, so DKIM verdicts do not change.
const seqHeader = "X-Mailward-Bench-Seq"

// ledger records, for --account, what the client was told about each
// send; the sink says what arrived.
type ledger struct {
	mu    sync.Mutex
	next  atomic.Int64
	sends map[string]outcome
}

// accounting is the fault drills' bookkeeping: every message sent either
// arrived exactly once after a 250, or was refused with a code the client
// saw and never arrived.
type accounting struct {
	Sent     int            `json:"sent"`
	Accepted int            `json:"accepted"`
	Refused  map[string]int `json:"refused"` // by SMTP code
	NoAnswer int            `json:"no_answer"`
	Arrived  int            `json:"arrived"`
	// What must stay zero.
	Lost         int      `json:"lost"`          // a 250, then never arrived
	Duplicated   int      `json:"duplicated"`    // arrived more than once
	AfterRefusal int      `json:"after_refusal"` // arrived although refused or unanswered
	Unchecked    int      `json:"unchecked"`     // arrived without the filter's Authentication-Results
	Problems     []string `json:"problems,omitempty"`
}

// ok says whether the counts add up with nothing lost or let through.
func (a *accounting) ok() bool {
	refused := 0
	for _, n := range a.Refused {
		refused += n
	}
	return a.Sent == a.Accepted+refused+a.NoAnswer && a.Arrived == a.Accepted &&
		a.Lost == 0 && a.Duplicated == 0 && a.AfterRefusal == 0 && a.Unchecked == 0
}

// accountSender wraps send: each message gets its sequence header and its
// outcome goes into the ledger.
func accountSender(send sender, l *ledger) sender {
	return func(ctx context.Context, m *Message) outcome {
		seq := strconv.FormatInt(l.next.Add(1), 10)
		cp := *m
		cp.Header = append(append([][2]string(nil), m.Header...), [2]string{seqHeader, " " + seq})
		out := send(ctx, &cp)
		l.mu.Lock()
		l.sends[seq] = out
		l.mu.Unlock()
		return out
	}
}

// settle waits until every accepted send has arrived, or until nothing
// new has arrived for quiet: a queueing MTA relays after it answers.
func (l *ledger) settle(ctx context.Context, s *sink, quiet time.Duration) {
	last, lastChange := -1, time.Now()
	for ctx.Err() == nil {
		l.mu.Lock()
		missing := 0
		for seq, out := range l.sends {
			if out.Action == "accept" || out.Action == "quarantine" {
				if s.arrivals(seq) == 0 {
					missing++
				}
			}
		}
		l.mu.Unlock()
		total := s.total()
		if missing == 0 {
			// Give a late duplicate a moment to show.
			time.Sleep(200 * time.Millisecond)
			return
		}
		if total != last {
			last, lastChange = total, time.Now()
		} else if time.Since(lastChange) > quiet {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// account compares the ledger with the sink. authservID, when set, is
// the authserv-id every arrival must carry in an Authentication-Results
// field: mail that arrives without it was not checked.
func (l *ledger) account(s *sink, authservID string) *accounting {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := &accounting{Refused: map[string]int{}}
	problem := func(format string, args ...any) {
		if len(a.Problems) < 50 {
			a.Problems = append(a.Problems, fmt.Sprintf(format, args...))
		}
	}
	seqs := make([]string, 0, len(l.sends))
	for seq := range l.sends {
		seqs = append(seqs, seq)
	}
	sort.Slice(seqs, func(i, j int) bool {
		return len(seqs[i]) < len(seqs[j]) || len(seqs[i]) == len(seqs[j]) && seqs[i] < seqs[j]
	})
	seen := map[string]bool{}
	for _, seq := range seqs {
		out := l.sends[seq]
		seen[seq] = true
		a.Sent++
		n, header := s.arrival(seq)
		a.Arrived += n
		accepted := out.Err == nil && (out.Action == "accept" || out.Action == "quarantine")
		switch {
		case accepted:
			a.Accepted++
		case out.Err != nil:
			a.NoAnswer++
		default:
			a.Refused[strconv.Itoa(out.Code)]++
		}
		switch {
		case accepted && n == 0:
			a.Lost++
			problem("send %s: accepted, never arrived", seq)
		case !accepted && n > 0:
			a.AfterRefusal++
			problem("send %s: arrived %d times after %s", seq, n, describe(out))
		}
		if n > 1 {
			a.Duplicated++
			problem("send %s: arrived %d times", seq, n)
		}
		if n > 0 && authservID != "" && !carriesAuthResults(header, authservID) {
			a.Unchecked++
			problem("send %s: arrived without Authentication-Results from %s", seq, authservID)
		}
	}
	for _, seq := range s.ids() {
		if !seen[seq] && isSeq(seq) {
			n, _ := s.arrival(seq)
			a.Arrived += n
			a.AfterRefusal++
			problem("send %s: arrived, but was never sent in this run", seq)
		}
	}
	return a
}

func describe(out outcome) string {
	if out.Err != nil {
		return "no answer (" + out.Err.Error() + ")"
	}
	return out.Action + " " + strconv.Itoa(out.Code)
}

func isSeq(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

func carriesAuthResults(fields [][2]string, authservID string) bool {
	for _, f := range fields {
		if strings.EqualFold(f[0], "Authentication-Results") && strings.EqualFold(policy.AuthServID(f[1]), authservID) {
			return true
		}
	}
	return false
}

func printAccounting(w io.Writer, a *accounting) {
	codes := make([]string, 0, len(a.Refused))
	for c := range a.Refused {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	fmt.Fprintf(w, "\naccounting: sent %d, accepted %d, arrived %d, no answer %d, refused", a.Sent, a.Accepted, a.Arrived, a.NoAnswer)
	if len(codes) == 0 {
		fmt.Fprint(w, " 0")
	}
	for _, c := range codes {
		fmt.Fprintf(w, " %s=%d", c, a.Refused[c])
	}
	fmt.Fprintf(w, "\n  lost %d, duplicated %d, arrived after a refusal %d, unchecked %d\n", a.Lost, a.Duplicated, a.AfterRefusal, a.Unchecked)
	for _, p := range a.Problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
}
