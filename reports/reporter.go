package reports

import (
	"context"
	"log/slog"
	"strings"
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
// nothing here touches mail.
type Reporter struct {
	Agg  *Aggregates
	Meta Meta
	Send Sender
	Log  *slog.Logger
	// Suppress lists domains never reported to, their subdomains too.
	Suppress []string
	// RequirePass suppresses the report of a domain none of whose mail
	// passed DMARC in the period.
	RequirePass bool

	Built, Suppressed, Failed atomic.Int64
}

// Due builds and sends the reports of every period ended by now. It
// returns how many reports it handed to the Sender.
func (r *Reporter) Due(ctx context.Context, now time.Time) int {
	n := 0
	for _, d := range r.Agg.Ended(now, true) {
		if why := r.suppressed(d); why != "" {
			r.Suppressed.Add(1)
			r.log().Info("dmarc report suppressed", "policy_domain", d.Policy.Domain, "reason", why)
			continue
		}
		end := r.Agg.End(d)
		doc, err := Build(r.Meta, d, end)
		if err != nil {
			r.Failed.Add(1)
			r.log().Warn("dmarc report not built", "policy_domain", d.Policy.Domain, "err", err)
			continue
		}
		r.Built.Add(1)
		rep := deliver.Report{PolicyDomain: d.Policy.Domain, ReportID: ReportID(r.Meta.Submitter, d.Policy.Domain, d.Begin),
			Begin: d.Begin, End: end.Add(-time.Second), XML: doc, RUA: d.Policy.RUA}
		if err := r.Send.Send(ctx, rep); err != nil {
			r.Failed.Add(1)
			r.log().Warn("dmarc report not sent", "policy_domain", d.Policy.Domain, "err", err)
		}
		n++
	}
	return n
}

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
