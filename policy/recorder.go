package policy

import (
	"maps"
	"slices"
	"time"
)

// Finished is one transaction as it ended: what the rules could read,
// what the checks said and what was decided. The journal keeps it so
// that a changed rule set can be played against past traffic.
type Finished struct {
	Front string
	// Facts are the transaction's facts at its end; the header fields
	// are those of the message, the body is not kept.
	Facts Facts
	// Rcpts are every recipient offered, refused ones included, in order.
	Rcpts   []RcptOutcome
	Matches []Match
	Verdict Verdict
	// Reached is the last stage the engine ran: a transaction the client
	// gave up on after RCPT has no header fields to replay.
	Reached  Stage
	Duration time.Duration
}

// Recorder receives every finished transaction of every front. Record
// is called on the connection's goroutine, so it must return at once;
// the Finished it gets is its own to keep.
type Recorder interface {
	Record(f *Finished)
}

// SetRecorder sends every finished transaction to r; nil stops. Like
// SetCache it may be called while serving.
func (e *Engine) SetRecorder(r Recorder) {
	e.mu.Lock()
	defer e.mu.Unlock()
	next := *e.cur.Load()
	next.rec = r
	e.cur.Store(&next)
}

// record hands the transaction to the recorder. The facts' slices are
// the connection's and change with the next message, so they are copied.
func (c *Conn) record(v Verdict) {
	r := c.snap.rec
	if r == nil {
		return
	}
	f := &Finished{
		Front: c.info.Front, Facts: c.facts, Verdict: v, Reached: c.reached,
		Rcpts: slices.Clone(c.outcome), Matches: slices.Clone(c.matches), Duration: time.Since(c.started),
	}
	f.Facts.Macros = nil
	f.Facts.Lookups = maps.Clone(f.Facts.Lookups)
	f.Facts.Rcpts = slices.Clone(f.Facts.Rcpts)
	f.Facts.Headers = slices.Clone(f.Facts.Headers)
	f.Facts.Results = f.Facts.clone()
	f.Facts.Attachments = slices.Clone(f.Facts.Attachments)
	f.Facts.URLs = slices.Clone(f.Facts.URLs)
	f.Facts.BodyText = "" // not recorded; no need to keep it alive
	r.Record(f)
}

// Recorders hands every finished transaction to each of its recorders
// in turn (the journal, DMARC reports). They share the Finished, so none
// may change it; each must return at once, as Record always must.
type Recorders []Recorder

// Record implements Recorder.
func (rs Recorders) Record(f *Finished) {
	for _, r := range rs {
		r.Record(f)
	}
}

// JoinRecorders returns one Recorder for the non-nil ones given, nil for none.
func JoinRecorders(rs ...Recorder) Recorder {
	var out Recorders
	for _, r := range rs {
		if r != nil {
			out = append(out, r)
		}
	}
	switch len(out) {
	case 0:
		return nil
	case 1:
		return out[0]
	}
	return out
}
