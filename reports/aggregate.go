package reports

import (
	"encoding/json"
	"maps"
	"slices"
	"sync"
	"time"
)

// Bounds of what one process aggregates, whatever senders do: a row is
// cheap, but a sender choosing IPs and subdomains could make many.
const (
	DefaultMaxRows    = 10_000 // rows per report
	DefaultMaxDomains = 10_000 // policy domains per period
)

// PeriodStart is the start of the reporting period holding t: periods
// of interval are aligned to UTC midnight.
func PeriodStart(t time.Time, interval time.Duration) time.Time {
	t = t.UTC()
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	if interval <= 0 || interval >= 24*time.Hour {
		return day
	}
	return day.Add(t.Sub(day) / interval * interval)
}

// Domain is the aggregate of one policy domain over one period.
type Domain struct {
	Begin  time.Time
	Policy Policy
	// Rows count messages by what they showed (the row's JSON).
	Rows map[string]int64
	// Passed counts messages that passed DMARC.
	Passed int64
}

// Aggregates holds the periods' aggregates in memory. It is safe for
// concurrent use.
type Aggregates struct {
	mu         sync.Mutex
	interval   time.Duration
	maxRows    int
	maxDomains int
	periods    map[time.Time]map[string]*Domain
	// Dropped counts observations over a bound.
	dropped int64
}

// NewAggregates returns empty aggregates over periods of interval.
func NewAggregates(interval time.Duration, maxRows, maxDomains int) *Aggregates {
	if maxRows <= 0 {
		maxRows = DefaultMaxRows
	}
	if maxDomains <= 0 {
		maxDomains = DefaultMaxDomains
	}
	return &Aggregates{interval: interval, maxRows: maxRows, maxDomains: maxDomains, periods: map[time.Time]map[string]*Domain{}}
}

// Add counts one message seen at t; false when a bound refused it.
func (a *Aggregates) Add(t time.Time, o Observation) bool {
	key, err := json.Marshal(o.Row)
	if err != nil {
		return false
	}
	begin := PeriodStart(t, a.interval)
	a.mu.Lock()
	defer a.mu.Unlock()
	doms := a.periods[begin]
	if doms == nil {
		doms = map[string]*Domain{}
		a.periods[begin] = doms
	}
	d := doms[o.Policy.Domain]
	if d == nil {
		if len(doms) >= a.maxDomains {
			a.dropped++
			return false
		}
		d = &Domain{Begin: begin, Rows: map[string]int64{}}
		doms[o.Policy.Domain] = d
	}
	if _, ok := d.Rows[string(key)]; !ok && len(d.Rows) >= a.maxRows {
		a.dropped++
		return false
	}
	d.Policy = o.Policy
	d.Rows[string(key)]++
	if o.Passed {
		d.Passed++
	}
	return true
}

// Dropped is how many observations the bounds refused.
func (a *Aggregates) Dropped() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.dropped
}

// Ended returns the aggregates of the periods that ended by now, in
// period order, and forgets them when take is set.
func (a *Aggregates) Ended(now time.Time, take bool) []*Domain {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*Domain
	for _, begin := range slices.SortedFunc(maps.Keys(a.periods), time.Time.Compare) {
		if a.end(begin).After(now) {
			continue
		}
		for _, name := range slices.Sorted(maps.Keys(a.periods[begin])) {
			out = append(out, a.periods[begin][name])
		}
		if take {
			delete(a.periods, begin)
		}
	}
	return out
}

// Current returns copies of every aggregate, the running period's too,
// for a preview.
func (a *Aggregates) Current() []*Domain {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*Domain
	for _, begin := range slices.SortedFunc(maps.Keys(a.periods), time.Time.Compare) {
		for _, name := range slices.Sorted(maps.Keys(a.periods[begin])) {
			d := *a.periods[begin][name]
			d.Rows = maps.Clone(d.Rows)
			out = append(out, &d)
		}
	}
	return out
}

// end is when the period starting at begin ends.
func (a *Aggregates) end(begin time.Time) time.Time {
	if a.interval <= 0 || a.interval >= 24*time.Hour {
		return begin.Add(24 * time.Hour)
	}
	return begin.Add(a.interval)
}

// End is when d's period ends.
func (a *Aggregates) End(d *Domain) time.Time { return a.end(d.Begin) }
