package policy

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// logTransaction writes the one line a transaction leaves in the log, and
// tells the observer and the recorder.
func (c *Conn) logTransaction(v Verdict) {
	f := &c.facts
	// Keys hold one kind of value each, lists are lists and the duration
	// says its unit, so that a JSON log needs no parsing of its values.
	attrs := []slog.Attr{
		slog.String("queue_id", f.QueueID),
		slog.String("front", c.info.Front),
		slog.String("client_ip", ipString(f)),
		slog.String("client_name", f.ClientName),
		slog.String("helo", f.Helo),
		slog.String("from", f.MailFrom),
		slog.Any("rcpts", outcomeList(c.outcome)),
		slog.String("verdict", v.Action.String()),
		slog.String("stage", v.Stage.String()),
		slog.Float64("duration_seconds", time.Since(c.started).Seconds()),
	}
	if v.Code != 0 {
		attrs = append(attrs, slog.Int("code", v.Code))
	}
	if v.Reason != "" || v.Rule != "" {
		attrs = append(attrs, slog.String("reason", why(v)))
	}
	attrs = append(attrs, slog.Any("rules", matchList(c.matches)))
	attrs = append(attrs, slog.Float64("score", f.Score), slog.Any("checks", f.logParts()))
	if f.AuthUser != "" {
		attrs = append(attrs, slog.String("auth_user", f.AuthUser))
	}
	if f.Signing != "" {
		attrs = append(attrs, slog.String("dkim_sign", f.Signing))
	}
	if c.greyNote != "" {
		attrs = append(attrs, slog.String("greylist", c.greyNote))
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

// outcomeList renders recipients as ["a@x=ok", "b@y=550"].
func outcomeList(out []RcptOutcome) []string {
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
	return parts
}

// matchList renders matches as "name:action", monitored ones marked.
func matchList(ms []Match) []string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.Rule + ":" + m.Action
		if m.Monitor {
			parts[i] += "(monitor)"
		}
	}
	return parts
}
