package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailward/mailward/admin"
	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/reports"
	reportmail "github.com/mailward/mailward/reports/deliver"
)

// reportsConfig is the reports: section with its paths resolved from
// the config file's directory.
func (c *Config) reportsConfig() reports.Config {
	r := c.Reports
	if r.Store != "" && !filepath.IsAbs(r.Store) {
		r.Store = filepath.Join(c.baseDir(), r.Store)
	}
	r.PasswordFile = cache.CredentialPath(r.PasswordFile, c.baseDir())
	if r.TLSCAFile != "" && !filepath.IsAbs(r.TLSCAFile) {
		r.TLSCAFile = filepath.Join(c.baseDir(), r.TLSCAFile)
	}
	return r
}

// reportWarnings are reports: settings that work but lose data or are
// ignored.
func (c *Config) reportWarnings() []string {
	r := c.Reports
	switch {
	case !r.Enabled:
	case c.Cache.Type == cache.TypeRedis && r.Store != "":
		return []string{fmt.Sprintf("%s: reports.store is not used: with cache.type redis the report aggregates are kept in Redis", c.doc.Pos("reports.store"))}
	case c.Cache.Type != cache.TypeRedis && r.Store == "":
		return []string{fmt.Sprintf("%s: reports.store is not set: a restart loses the running period's report aggregates", c.doc.Pos("reports"))}
	}
	return nil
}

// reportsMode says how the reports' store is opened.
type reportsMode int

const (
	reportsServe   reportsMode = iota // the daemon: record, save, send
	reportsSend                       // dmarc report --send: one instance at a time on a file
	reportsPreview                    // dmarc report --preview: read only
)

// reportsState is DMARC aggregate reporting: the store, the recorder
// the engine feeds and the reporter that sends.
type reportsState struct {
	store    reports.Store
	rec      *reports.Recorder
	reporter *reports.Reporter
	sender   *reportmail.Sender
	// redis is the store's own client: a reload may replace the cache's.
	redis *cache.Redis

	cancel context.CancelFunc
	done   sync.WaitGroup
}

// openReports sets reporting up as cfg says; nil when it is off.
func openReports(cfg *Config, mode reportsMode, log *slog.Logger, reg prometheus.Registerer) (*reportsState, error) {
	rc := cfg.reportsConfig()
	if !rc.Enabled {
		return nil, nil
	}
	s := &reportsState{}
	var err error
	if cfg.Cache.Type == cache.TypeRedis {
		if s.redis, err = cache.NewRedis(cfg.Cache, cache.Options{Logger: log}); err != nil {
			return nil, fmt.Errorf("dmarc reports: connecting to redis: %w", err)
		}
		s.store = reports.NewRedis(s.redis, reports.RedisConfig{Interval: rc.Period(), Log: log})
	} else {
		s.store, err = reports.NewLocal(reports.LocalConfig{Interval: rc.Period(), Path: rc.Store, Log: log,
			ReadOnly: mode == reportsPreview, Exclusive: mode != reportsPreview})
		if err != nil {
			return nil, fmt.Errorf("dmarc reports: %w", err)
		}
	}
	res, err := resolver.New(cfg.DNS)
	if err != nil {
		s.close()
		return nil, fmt.Errorf("dmarc reports: %w", err)
	}
	deps := reportmail.Deps{Resolver: res, Logger: log, Metrics: reg}
	if s.redis != nil {
		deps.Cache = s.redis // max_per_hour for the whole fleet
	}
	if s.sender, err = reportmail.New(rc.Config, deps); err != nil {
		s.close()
		return nil, fmt.Errorf("dmarc reports: %w", err)
	}
	v, _ := buildVersion()
	from := rc.From
	s.reporter = &reports.Reporter{
		Store: s.store, Send: s.sender, Log: log, Suppress: rc.Suppress, RequirePass: rc.RequirePass,
		Meta: reports.Meta{OrgName: rc.OrgName, Email: rc.Email, Submitter: strings.ToLower(from[strings.LastIndexByte(from, '@')+1:]),
			Generator: "mailward " + v},
	}
	if mode == reportsServe {
		s.rec = reports.NewRecorder(s.store, cfg.DMARC.Enforce, 0)
	}
	return s, nil
}

// start runs the reporter until close.
func (s *reportsState) start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		s.reporter.Run(ctx, reports.DefaultCheckEvery, reports.DefaultSettle)
	}()
}

// close stops sending (a report being sent is given up), records what
// is queued and saves the store. Call it once the fronts have stopped.
func (s *reportsState) close() {
	if s == nil {
		return
	}
	if s.cancel != nil {
		s.cancel()
		s.done.Wait()
	}
	if s.rec != nil {
		s.rec.Close()
	}
	if s.store != nil {
		if err := s.store.Close(); err != nil && s.reporter != nil && s.reporter.Log != nil {
			s.reporter.Log.Warn("dmarc reports: store not saved", "err", err)
		}
	}
	if s.redis != nil {
		s.redis.Close()
	}
}

// metrics exposes what the reporter counts; delivery registers its own.
func (s *reportsState) metrics(m *admin.Metrics) {
	m.CounterFunc("mailward_dmarc_reports_built_total", "DMARC aggregate reports built, one per policy domain and period.", nil,
		func() float64 { return float64(s.reporter.Built.Load()) })
	m.CounterFunc("mailward_dmarc_reports_suppressed_total", "DMARC aggregate reports not built: the domain is on reports.suppress, or with reports.require_pass none of its mail passed.", nil,
		func() float64 { return float64(s.reporter.Suppressed.Load()) })
	m.CounterFunc("mailward_dmarc_reports_not_sent_total", "DMARC aggregate reports that could not be built, or that some destination did not get.", nil,
		func() float64 { return float64(s.reporter.Failed.Load()) })
	m.CounterFunc("mailward_dmarc_reports_deferred_total", "DMARC aggregate reports no destination got for a temporary reason (the relay down, a shutdown), kept to be tried again.", nil,
		func() float64 { return float64(s.reporter.Deferred.Load()) })
	m.CounterFunc("mailward_dmarc_report_messages_dropped_total", "Messages left out of the DMARC report aggregates: the queue was full, a bound was reached or the store failed.", nil,
		func() float64 { return float64(s.rec.Dropped()) })
}
