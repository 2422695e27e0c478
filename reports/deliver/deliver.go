// Package deliver mails DMARC aggregate reports (RFC 9990 section 2.5):
// it reads a record's rua URIs, confirms external destinations in DNS,
// honours "!size" limits, compresses the report into a MIME message and
// hands it to the configured SMTP relay, with retries and a rate cap.
// Nothing here runs on the mail path: a report that cannot be sent costs
// a log line and a metric, never a message.
package deliver

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/checks/dmarc"
)

// Report is one aggregate report to deliver.
type Report struct {
	PolicyDomain string    // the domain the report is about
	ReportID     string    // the Report-ID, unique among reports to that domain
	Begin, End   time.Time // the period
	XML          []byte    // the uncompressed RFC 9990 document
	RUA          []string  // the rua URIs as published, e.g. "mailto:d@example.net!10m"
}

// Destination is what Plan decided for one rua URI.
type Destination struct {
	URI      string // as published
	Address  string // where the report goes; a confirming record may override the URI's
	Accepted bool
	// Reason says why a destination was refused (or put off), for logs
	// and the preview.
	Reason string
	// Temporary is set on a destination that DNS trouble kept from being
	// confirmed: it is neither accepted nor refused; try again later.
	Temporary bool
}

// Deps are what a Sender uses besides its config.
type Deps struct {
	// Resolver answers the TXT look-ups of destination verification;
	// a *resolver.Resolver.
	Resolver dmarc.TXTResolver
	// Logger gets a line per report and destination; nil: discard.
	Logger *slog.Logger
	// Metrics, if set, registers the delivery counters.
	Metrics prometheus.Registerer
	// Cache, if set, holds the max_per_hour cap, so that it is shared by
	// every instance on the same Redis. Nil: the cap is per process.
	Cache cache.Cache
}

// Sender delivers reports. It is safe for concurrent use.
type Sender struct {
	cfg     Config
	res     dmarc.TXTResolver
	log     *slog.Logger
	helo    string
	from    string
	domain  string // From's domain: the Submitter
	roots   *x509.CertPool
	pass    string // the relay password, with cfg.Username
	metrics *metrics
	rate    *limiter
	// sleep waits d or until ctx ends; tests leave it as is.
	sleep func(ctx context.Context, d time.Duration) error
	now   func() time.Time
}

// New checks cfg and returns a Sender.
func New(cfg Config, deps Deps) (*Sender, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("report delivery config: %w", err)
	}
	if deps.Resolver == nil {
		return nil, errors.New("report delivery needs a DNS resolver")
	}
	s := &Sender{cfg: cfg, res: deps.Resolver, log: deps.Logger, from: cfg.From, sleep: sleepCtx, now: time.Now}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.domain, _ = fromDomain(cfg.From)
	s.helo = cfg.HELO
	if s.helo == "" {
		h, err := os.Hostname()
		if err != nil || !strings.Contains(h, ".") {
			h = s.domain
		}
		s.helo = h
	}
	if cfg.TLSCAFile != "" {
		pem, err := os.ReadFile(cfg.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("reading tls_ca_file: %w", err)
		}
		s.roots = x509.NewCertPool()
		if !s.roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls_ca_file %s holds no PEM certificate", cfg.TLSCAFile)
		}
	}
	if cfg.PasswordFile != "" {
		b, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("reading password_file: %w", err)
		}
		s.pass, _, _ = strings.Cut(string(b), "\n")
		s.pass = strings.TrimSuffix(s.pass, "\r")
		if s.pass == "" {
			return nil, fmt.Errorf("password_file %s: the first line, the password, is empty", cfg.PasswordFile)
		}
	}
	m, err := newMetrics(deps.Metrics)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	s.rate = newLimiter(cfg.MaxPerHour, deps.Cache)
	return s, nil
}

// Plan decides, for each rua URI of r in order, where the report would
// go: it parses the URIs, applies the max_destinations bound and the
// "!size" limits against the compressed report, and confirms external
// destinations in DNS. It sends nothing. A destination that DNS trouble
// left undecided comes back with Temporary set.
func (s *Sender) Plan(ctx context.Context, r Report) ([]Destination, error) {
	p, err := newPayload(r, s.domain)
	if err != nil {
		return nil, err
	}
	return s.plan(ctx, p), nil
}

func (s *Sender) plan(ctx context.Context, p *payload) []Destination {
	var out []Destination
	seen := map[string]bool{}
	used := 0
	for _, raw := range p.report.RUA {
		u, err := parseURI(raw)
		if err != nil {
			out = append(out, Destination{URI: raw, Reason: "ignored: " + err.Error()})
			continue
		}
		if used == s.cfg.MaxDestinations {
			out = append(out, Destination{URI: raw, Address: u.address, Reason: fmt.Sprintf("ignored: only the first %d URIs are used (max_destinations)", s.cfg.MaxDestinations)})
			continue
		}
		used++
		targets, err := s.verify(ctx, p.report.PolicyDomain, u)
		if err != nil {
			d := Destination{URI: raw, Address: u.address, Reason: err.Error(), Temporary: errors.Is(err, errTemporary)}
			if d.Temporary {
				d.Reason += "; will try again"
			}
			out = append(out, d)
			continue
		}
		for _, t := range targets {
			d := Destination{URI: raw, Address: t.address, Accepted: true}
			switch {
			case seen[strings.ToLower(t.address)]:
				d.Accepted, d.Reason = false, "duplicate: the report already goes to this address"
			case t.limit >= 0 && int64(len(p.gz)) > t.limit && !s.cfg.IgnoreSizeLimits:
				d.Accepted, d.Reason = false, fmt.Sprintf("the compressed report (%d bytes) is over the URI's size limit of %d bytes", len(p.gz), t.limit)
			}
			seen[strings.ToLower(t.address)] = true
			out = append(out, d)
		}
	}
	return out
}

// SendError says which destinations a report could not be delivered to.
type SendError struct {
	ReportID string
	Failed   []Destination // Reason holds the last error
	// Delivered is how many destinations did get the report: with none,
	// a temporary failure may be tried again later without sending twice.
	Delivered int
}

func (e *SendError) Error() string {
	parts := make([]string, len(e.Failed))
	for i, d := range e.Failed {
		parts[i] = d.Address + ": " + d.Reason
	}
	return fmt.Sprintf("report %s not delivered to %d destination(s): %s", e.ReportID, len(e.Failed), strings.Join(parts, "; "))
}

// Temporary reports whether every failure may go away later (4xx, a
// broken connection, DNS trouble): then a later Send is worth it.
func (e *SendError) Temporary() bool {
	for _, d := range e.Failed {
		if !d.Temporary {
			return false
		}
	}
	return true
}

// URIs returns the published URIs of the failed destinations, for a
// later Send of the same report to those only (Report.RUA).
func (e *SendError) URIs() []string {
	var out []string
	for _, d := range e.Failed {
		if len(out) == 0 || out[len(out)-1] != d.URI {
			out = append(out, d.URI)
		}
	}
	return out
}

// Send delivers r to every destination Plan accepts, one message each,
// retrying 4xx replies, connection errors and DNS trouble with backoff
// (retries, retry_backoff) until ctx ends. Refused destinations are
// logged and counted, not errors. The error, when some destination got
// no report, is a *SendError.
func (s *Sender) Send(ctx context.Context, r Report) error {
	p, err := newPayload(r, s.domain)
	if err != nil {
		s.metrics.failed.Inc()
		return err
	}
	log := s.log.With("policy_domain", r.PolicyDomain, "report_id", r.ReportID)
	var failed []Destination
	delivered := 0
	// settled holds the destinations this Send is done with: sent,
	// refused or failed for good. A retry, which plans again, skips them.
	settled := map[string]bool{}
	for attempt := 0; ; attempt++ {
		var retry []Destination
		for _, d := range s.plan(ctx, p) {
			key := d.URI + "\x00" + strings.ToLower(d.Address)
			if settled[key] || settled[strings.ToLower(d.Address)] && d.Accepted {
				continue
			}
			if !d.Accepted {
				if d.Temporary {
					retry = append(retry, d)
					continue
				}
				settled[key] = true
				s.metrics.refused.Inc()
				log.Info("dmarc report destination refused", "uri", d.URI, "reason", d.Reason)
				continue
			}
			if err := s.deliverOne(ctx, p, d.Address); err != nil {
				d.Reason, d.Temporary = err.Error(), isTemporary(err)
				if d.Temporary {
					retry = append(retry, d)
					continue
				}
				settled[strings.ToLower(d.Address)] = true
				failed = append(failed, d)
				s.metrics.failed.Inc()
				log.Warn("dmarc report not delivered", "to", d.Address, "err", err)
				continue
			}
			settled[strings.ToLower(d.Address)] = true
			delivered++
			s.metrics.sent.Inc()
			log.Info("dmarc report sent", "to", d.Address, "bytes", len(p.gz))
		}
		if len(retry) == 0 {
			break
		}
		if attempt >= s.cfg.Retries || ctx.Err() != nil {
			for _, d := range retry {
				s.metrics.failed.Inc()
				log.Warn("dmarc report not delivered; giving up for now", "uri", d.URI, "to", d.Address, "attempts", attempt+1, "err", d.Reason)
			}
			failed = append(failed, retry...)
			break
		}
		wait := s.backoff(attempt)
		for _, d := range retry {
			log.Info("dmarc report delivery deferred", "uri", d.URI, "to", d.Address, "retry_in", wait, "err", d.Reason)
		}
		if err := s.sleep(ctx, wait); err != nil {
			for _, d := range retry {
				s.metrics.failed.Inc()
				d.Reason += " (" + err.Error() + ")"
				failed = append(failed, d)
			}
			break
		}
	}
	if len(failed) > 0 {
		return &SendError{ReportID: r.ReportID, Failed: failed, Delivered: delivered}
	}
	return nil
}

// deliverOne waits for the rate cap, then relays one message.
func (s *Sender) deliverOne(ctx context.Context, p *payload, to string) error {
	if err := s.rate.wait(ctx, s.sleep); err != nil {
		return fmt.Errorf("waiting for the max_per_hour cap: %w", err)
	}
	return s.sendOne(ctx, s.from, to, p.message(s.from, to, s.now()))
}

// backoff is the wait before retry attempt+1: retry_backoff doubled
// per attempt, at most an hour.
func (s *Sender) backoff(attempt int) time.Duration {
	d := time.Duration(s.cfg.RetryBackoff)
	for range attempt {
		d *= 2
		if d >= maxBackoff {
			return maxBackoff
		}
	}
	return d
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
