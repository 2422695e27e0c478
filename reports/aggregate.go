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
	// MaxTotalRows bounds the rows held in memory over every period and
	// domain, some 100 MB at the most: the two bounds above alone would
	// let a sender fill 10^8 rows.
	MaxTotalRows = 200_000
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
	Begin  time.Time `json:"begin"`
	Policy Policy    `json:"policy"`
	// Rows count messages by what they showed (the row's JSON).
	Rows map[string]int64 `json:"rows"`
	// Passed counts messages that passed DMARC.
	Passed int64 `json:"passed"`
}

// Aggregates holds the periods' aggregates in memory. It is safe for
// concurrent use.
type Aggregates struct {
	mu         sync.Mutex
	interval   time.Duration
	maxRows    int
	maxDomains int
	periods    map[time.Time]map[string]*Domain
	rows       int // held, over every period
	maxTotal   int // MaxTotalRows
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
	return &Aggregates{interval: interval, maxRows: maxRows, maxDomains: maxDomains, maxTotal: MaxTotalRows,
		periods: map[time.Time]map[string]*Domain{}}
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
	if _, ok := d.Rows[string(key)]; !ok {
		if len(d.Rows) >= a.maxRows || a.rows >= a.maxTotal {
			a.dropped++
			return false
		}
		a.rows++
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
			for _, d := range a.periods[begin] {
				a.rows -= len(d.Rows)
			}
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
func (a *Aggregates) end(begin time.Time) time.Time { return periodEnd(begin, a.interval) }

// End is when d's period ends.
func (a *Aggregates) End(d *Domain) time.Time { return a.end(d.Begin) }

// endedKeys lists the aggregates of periods ended by now.
func (a *Aggregates) endedKeys(now time.Time) []Key {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Key
	for _, begin := range slices.SortedFunc(maps.Keys(a.periods), time.Time.Compare) {
		if a.end(begin).After(now) {
			continue
		}
		for _, name := range slices.Sorted(maps.Keys(a.periods[begin])) {
			out = append(out, Key{Begin: begin, Domain: name})
		}
	}
	return out
}

// get returns a copy of k's aggregate, nil if there is none.
func (a *Aggregates) get(k Key) *Domain {
	a.mu.Lock()
	defer a.mu.Unlock()
	d := a.periods[k.Begin.UTC()][k.Domain]
	if d == nil {
		return nil
	}
	c := *d
	c.Rows = maps.Clone(d.Rows)
	return &c
}

// has says whether k's aggregate is held.
func (a *Aggregates) has(k Key) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.periods[k.Begin.UTC()][k.Domain] != nil
}

// remove forgets k's aggregate.
func (a *Aggregates) remove(k Key) {
	a.mu.Lock()
	defer a.mu.Unlock()
	begin := k.Begin.UTC()
	if d := a.periods[begin][k.Domain]; d != nil {
		a.rows -= len(d.Rows)
	}
	delete(a.periods[begin], k.Domain)
	if len(a.periods[begin]) == 0 {
		delete(a.periods, begin)
	}
}

// restore adds a saved aggregate back, within the bounds; it returns
// how many rows the bounds kept out.
func (a *Aggregates) restore(d *Domain) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	begin := d.Begin.UTC()
	doms := a.periods[begin]
	if doms == nil {
		doms = map[string]*Domain{}
		a.periods[begin] = doms
	}
	cur := doms[d.Policy.Domain]
	if cur == nil {
		if len(doms) >= a.maxDomains {
			return len(d.Rows)
		}
		cur = &Domain{Begin: begin, Policy: d.Policy, Rows: map[string]int64{}}
		doms[d.Policy.Domain] = cur
	}
	cur.Passed += d.Passed
	lost := 0
	for k, n := range d.Rows {
		_, ok := cur.Rows[k]
		if !ok && (len(cur.Rows) >= a.maxRows || a.rows >= a.maxTotal) || n <= 0 {
			lost++
			continue
		}
		if !ok {
			a.rows++
		}
		cur.Rows[k] += n
	}
	return lost
}
