package policy

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/mailward/mailward/checks/spf"
)

// logTransaction writes the one line a transaction leaves in the log, and
// tells the observer and the recorder.
func (c *Conn) logTransaction(v Verdict) {
	f := &c.facts
	attrs := []slog.Attr{
		slog.String("queue_id", f.QueueID),
		slog.String("front", c.info.Front),
		slog.String("client_ip", ipString(f)),
		slog.String("client_name", f.ClientName),
		slog.String("helo", f.Helo),
		slog.String("from", f.MailFrom),
		slog.String("rcpts", outcomeString(c.outcome)),
		slog.String("verdict", v.Action.String()),
		slog.String("stage", v.Stage.String()),
		slog.Duration("duration", time.Since(c.started)),
	}
	if v.Code != 0 {
		attrs = append(attrs, slog.Int("code", v.Code))
	}
	if v.Reason != "" || v.Rule != "" {
		attrs = append(attrs, slog.String("why", why(v)))
	}
	if len(c.matches) > 0 {
		attrs = append(attrs, slog.String("rules", matchString(c.matches)))
	}
	attrs = append(attrs, slog.Float64("score", f.Score), slog.String("checks", checkSummary(f)))
	if f.Signing != "" {
		attrs = append(attrs, slog.String("dkim_sign", f.Signing))
	}
	if o := c.e.obs; o != nil {
		o.Transaction(c.info.Front, v, f, c.matches, time.Since(c.started))
	}
	c.record(v)
	c.e.log.LogAttrs(context.Background(), slog.LevelInfo, "transaction", attrs...)
}

func why(v Verdict) string {
	switch {
	case v.Rule != "" && v.Reason != "":
		return "rule " + v.Rule + ": " + v.Reason
	case v.Rule != "":
		return "rule " + v.Rule
	}
	return v.Reason
}

func ipString(f *Facts) string {
	if !f.IP.IsValid() {
		return ""
	}
	return f.IP.String()
}

// checkSummary is the compact form of the check results for the log line.
func checkSummary(f *Facts) string {
	var parts []string
	if f.IPRev != nil {
		parts = append(parts, "iprev="+f.IPRev.Result)
	}
	for _, r := range f.DNSBL {
		if len(r.Codes) > 0 {
			parts = append(parts, "dnsbl="+r.Zone)
		}
	}
	addSPF := func(name string, r *spf.Result) {
		if r != nil {
			parts = append(parts, name+"="+r.Result)
		}
	}
	addSPF("spf_helo", f.SPFHelo)
	addSPF("spf", f.SPF)
	for _, d := range f.DKIM {
		parts = append(parts, "dkim="+d.Result+"("+d.Domain+")")
	}
	if f.DMARC != nil {
		parts = append(parts, "dmarc="+f.DMARC.Result)
	}
	return strings.Join(parts, " ")
}

// outcomeString renders recipients as "a@x=accept b@y=550".
func outcomeString(out []RcptOutcome) string {
	parts := make([]string, len(out))
	for i, o := range out {
		r := o.Action.String()
		if o.Action == Continue {
			r = "ok"
		}
		if o.Code != 0 {
			r = fmt.Sprint(o.Code)
		}
		parts[i] = o.Rcpt + "=" + r
	}
	return strings.Join(parts, " ")
}

// matchString renders matches as "name:action", monitored ones marked.
func matchString(ms []Match) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.Rule + ":" + m.Action
		if m.Monitor {
			parts[i] += "(monitor)"
		}
	}
	return strings.Join(parts, " ")
}
