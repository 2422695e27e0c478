package reports

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"time"
)

// Key names one report: a DMARC Policy Domain's aggregate over the
// period beginning at Begin.
type Key struct {
	Begin  time.Time
	Domain string
}

// ErrBound is what Add returns when a bound (rows per report, domains
// per period) kept an observation out.
var ErrBound = errors.New("dmarc report aggregate full")

// Store holds the aggregates between the messages and the reports:
// Local for one instance, Redis for a fleet whose instances all add to
// the same aggregates. A Reporter takes each ended period's reports out
// of it once: Claim, Load, Done, then build and send.
type Store interface {
	// Add counts one message seen at t.
	Add(ctx context.Context, t time.Time, o Observation) error
	// Ended lists the reports of periods ended by now that were not yet
	// done, oldest period first.
	Ended(ctx context.Context, now time.Time) ([]Key, error)
	// Claim takes the right to report k: false when another instance
	// holds it or k was done. release gives it back.
	Claim(ctx context.Context, k Key) (release func(), ok bool, err error)
	// Load returns k's aggregate; nil when there is none.
	Load(ctx context.Context, k Key) (*Domain, error)
	// Done marks k reported, so that no instance reports it again, and
	// forgets its aggregate.
	Done(ctx context.Context, k Key) error
	// Undo puts back a report that was done but that no destination
	// got, as d held it, so that a later Due tries it again.
	Undo(ctx context.Context, k Key, d *Domain) error
	// Current returns every aggregate held, the running period's too,
	// for a preview.
	Current(ctx context.Context) ([]*Domain, error)
	// End is when the period beginning at begin ends.
	End(begin time.Time) time.Time
	// Dropped is how many observations bounds or faults kept out.
	Dropped() int64
	// Close stops the store, saving what it must.
	Close() error
}

// periodEnd is when the period of interval beginning at begin ends.
func periodEnd(begin time.Time, interval time.Duration) time.Time {
	if interval <= 0 || interval >= 24*time.Hour {
		return begin.Add(24 * time.Hour)
	}
	return begin.Add(interval)
}

func sortedStrings(s []string) []string {
	slices.Sort(s)
	return s
}

// sortedBegins parses period begins (unix seconds), oldest first,
// skipping what is not a number.
func sortedBegins(s []string) []time.Time {
	var out []time.Time
	for _, v := range s {
		n, err := strconv.ParseInt(v, 10, 64)
		if err == nil {
			out = append(out, time.Unix(n, 0).UTC())
		}
	}
	slices.SortFunc(out, time.Time.Compare)
	return out
}
