package reports

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailward/mailward/reports/deliver"
)

// Sender is what delivers a built report; *deliver.Sender is one.
type Sender interface {
	Send(ctx context.Context, r deliver.Report) error
}

// Reporter builds the reports of ended periods and hands them to a
// Sender. A report that cannot be built or sent is logged and counted;
// nothing here touches mail. Instances sharing a Redis store each run
// one: the store's lock lets exactly one build and send each report.
type Reporter struct {
	Store Store
	Meta  Meta
	Send  Sender
	Log   *slog.Logger
	// Suppress lists domains never reported to, their subdomains too.
	Suppress []string
	// RequirePass suppresses the report of a domain none of whose mail
	// passed DMARC in the period.
	RequirePass bool
	// Domain, if set, limits the Reporter to that policy domain.
	Domain string
	// Workers is how many reports are built and sent at once, so that
	// one destination's retries do not hold up every other report;
	// 0: DefaultWorkers.
	Workers int

	// Deferred counts reports no destination got for a temporary
	// reason, put back for a later try.
	Built, Suppressed, Failed, Deferred atomic.Int64
}

// Due builds and sends the reports of every period ended by now. It
// returns how many reports it handed to the Sender, and an error when
// the store could not be read (the reports wait for the next call).
func (r *Reporter) Due(ctx context.Context, now time.Time) (int, error) {
	keys, err := r.Store.Ended(ctx, now)
	workers := r.Workers
	if workers <= 0 {
		workers = DefaultWorkers
	}
	var (
		mu   sync.Mutex
		n    int
		wg   sync.WaitGroup
		slot = make(chan struct{}, workers)
	)
	for _, k := range keys {
		if r.Domain != "" && !strings.EqualFold(strings.TrimSuffix(r.Domain, "."), k.Domain) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		slot <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slot; wg.Done() }()
			ok, kerr := r.one(ctx, k)
			if kerr != nil {
				r.log().Warn("dmarc report left for later", "policy_domain", k.Domain, "err", kerr)
			}
			mu.Lock()
			defer mu.Unlock()
			err = errors.Join(err, kerr)
			if ok {
				n++
			}
		}()
	}
	wg.Wait()
	return n, err
}

// one reports k if this instance gets its lock. The report is marked
// done before it is sent: a crash while sending loses it, but no report
// ever goes out twice. One that no destination got, for a temporary
// reason (a relay down, a shutdown), is put back for a later try.
func (r *Reporter) one(ctx context.Context, k Key) (bool, error) {
	release, ok, err := r.Store.Claim(ctx, k)
	if err != nil || !ok {
		return false, err
	}
	defer release()
	d, err := r.Store.Load(ctx, k)
	if err != nil {
		return false, err
	}
	if err := r.Store.Done(ctx, k); err != nil {
		return false, err
	}
	if d == nil || len(d.Rows) == 0 {
		return false, nil
	}
	if why := r.suppressed(d); why != "" {
		r.Suppressed.Add(1)
		r.log().Info("dmarc report suppressed", "policy_domain", d.Policy.Domain, "reason", why)
		return false, nil
	}
	rep, err := r.Report(d)
	if err != nil {
		r.Failed.Add(1)
		r.log().Warn("dmarc report not built", "policy_domain", d.Policy.Domain, "err", err)
		return false, nil
	}
	r.Built.Add(1)
	if err := r.Send.Send(ctx, rep); err != nil {
		var se *deliver.SendError
		if errors.As(err, &se) && se.Temporary() && se.Delivered == 0 {
			// Nobody got it, so trying again later sends nothing twice:
			// the relay may be down, or we are shutting down.
			uerr := r.Store.Undo(context.WithoutCancel(ctx), k, d)
			if uerr == nil {
				r.Deferred.Add(1)
				r.log().Warn("dmarc report not sent; kept for a later try", "policy_domain", d.Policy.Domain, "report_id", rep.ReportID, "err", err)
				return true, nil
			}
			err = errors.Join(err, uerr)
		}
		r.Failed.Add(1)
		r.log().Warn("dmarc report not sent", "policy_domain", d.Policy.Domain, "report_id", rep.ReportID, "err", err)
		return true, nil
	}
	return true, nil
}

// Report builds d's report, ending with its period or, for the running
// period of a preview, now.
func (r *Reporter) Report(d *Domain) (deliver.Report, error) {
	end := r.Store.End(d.Begin)
	doc, err := Build(r.Meta, d, end)
	if err != nil {
		return deliver.Report{}, err
	}
	return deliver.Report{PolicyDomain: d.Policy.Domain, ReportID: ReportID(r.Meta.Submitter, d.Policy.Domain, d.Begin),
		Begin: d.Begin, End: end.Add(-time.Second), XML: doc, RUA: d.Policy.RUA}, nil
}

// Why says why d gets no report, "" when it does.
func (r *Reporter) Why(d *Domain) string { return r.suppressed(d) }

// suppressed says why d gets no report, "" when it does.
func (r *Reporter) suppressed(d *Domain) string {
	dom := strings.ToLower(strings.TrimSuffix(d.Policy.Domain, "."))
	for _, s := range r.Suppress {
		s = strings.ToLower(strings.TrimSuffix(s, "."))
		if dom == s || strings.HasSuffix(dom, "."+s) {
			return "suppress list"
		}
	}
	if r.RequirePass && d.Passed == 0 {
		return "none of its mail passed DMARC in the period"
	}
	return ""
}

func (r *Reporter) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

// Defaults of Run.
const (
	// DefaultWorkers is how many reports Due sends at once.
	DefaultWorkers = 4
	// DefaultCheckEvery is how often Run looks for ended periods.
	DefaultCheckEvery = time.Minute
	// DefaultSettle is how long after a period's end Run waits, so that
	// every instance's queued messages and a few seconds of clock skew
	// are in the aggregate before it is built.
	DefaultSettle = time.Minute
)

// Run reports due periods every check until ctx ends: each period once
// it ended settle ago. A report that fails is logged; the loop goes on.
func (r *Reporter) Run(ctx context.Context, check, settle time.Duration) {
	if check <= 0 {
		check = DefaultCheckEvery
	}
	t := time.NewTicker(check)
	defer t.Stop()
	for {
		if _, err := r.Due(ctx, time.Now().Add(-settle)); err != nil && ctx.Err() == nil {
			r.log().Warn("dmarc reports: the store could not be read; trying again", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
