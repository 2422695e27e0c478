package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"reflect"
	"runtime"
	"sync/atomic"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailward/mailward/admin"
	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/proxy"
	"github.com/mailward/mailward/proxy/milter"
	"github.com/mailward/mailward/proxy/policyd"
	smtpproxy "github.com/mailward/mailward/proxy/smtp"
	"github.com/mailward/mailward/rules"
)

func runServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "config `FILE` (default: built-in defaults: milter on inet:127.0.0.1:8891, system DNS, memory cache, no rules)")
	checkOnly := fs.Bool("check-config", false, "validate the config and its rule files, then exit")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: mailward serve [--config FILE] [--check-config]\n\nRuns the filter until SIGTERM; SIGHUP reloads the config and rules.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mailward serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg, err := loadConfig(*file)
	if err != nil {
		fmt.Fprintf(stderr, "mailward: %v\n", err)
		return 1
	}
	if err := cfg.serving(); err != nil {
		fmt.Fprintf(stderr, "mailward: %v\n", err)
		return 1
	}
	log, logOut := newLogger(cfg.Log, stderr)
	if *checkOnly {
		// Warnings go to the terminal, not to the log's format.
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for _, w := range cfg.warnings() {
		if *checkOnly {
			fmt.Fprintf(stderr, "mailward: warning: %s\n", w)
		} else {
			log.Warn(w)
		}
	}
	cache.RouteClientLogs(log)
	c, err := cache.New(cfg.Cache, cache.Options{Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "mailward: setting up the cache: %v\n", err)
		return 1
	}
	parts, err := buildParts(context.Background(), cfg, c, log)
	if err != nil {
		c.Close()
		fmt.Fprintf(stderr, "mailward: %v\n", err)
		return 1
	}
	if *checkOnly {
		c.Close()
		parts.close()
		for _, w := range parts.rules.Current().Warnings() {
			fmt.Fprintf(stderr, "mailward: %s\n", w) // w says "warning"
		}
		// serve would start and send such mail unsigned (or defer it);
		// a check says no.
		if errs := parts.keyErrors(cfg); len(errs) > 0 {
			fmt.Fprintf(stderr, "mailward: %v\n", errs)
			return 1
		}
		fmt.Fprintf(stdout, "%s: OK (%s)\n", cfg.file, parts.summary())
		return 0
	}
	d := &daemon{file: *file, cfg: cfg, parts: parts, log: log, logOut: logOut, cache: c, reloads: make(chan chan error), ruleChanges: make(chan ruleChange)}
	if err := d.run(); err != nil {
		log.Error("stopped", "err", err)
		return 1
	}
	return 0
}

// daemon is a running mailward: its engine, fronts and admin listener.
type daemon struct {
	file    string
	cfg     *Config
	parts   *parts
	log     *slog.Logger
	logOut  *logOutput
	engine  *policy.Engine
	metrics *admin.Metrics
	// cache lives across reloads unless its section changes; the metrics
	// read it from other goroutines.
	cache     cache.Cache
	cacheStat atomic.Pointer[func() cache.Stats]
	// dnsStat reads the running resolver's cache; a reload replaces it.
	dnsStat atomic.Pointer[func() resolver.CacheStats]
	reloads chan chan error
	// ruleChanges carries the results of reloads made because a rule or
	// list file changed on disk.
	ruleChanges chan ruleChange
	stopWatch   func()
	// live is parts for the metrics, read at scrape time.
	live    atomic.Pointer[parts]
	smtp    *smtpproxy.Server
	journal journalState
	reports *reportsState
}

type ruleChange struct {
	holder *rules.Holder
	err    error
}

// watchRules reloads the rules when their files change, as SIGHUP would.
func (d *daemon) watchRules() {
	if d.stopWatch != nil {
		d.stopWatch()
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.stopWatch = cancel
	h := d.parts.rules
	go func() {
		err := rules.Watch(ctx, h, func(err error) {
			select {
			case d.ruleChanges <- ruleChange{h, err}:
			case <-ctx.Done():
			}
		})
		if err != nil {
			d.log.Warn("rule files are not watched; reload with SIGHUP", "err", err)
		}
	}()
}

// rulesChanged applies a reload the file watcher made.
func (d *daemon) rulesChanged(c ruleChange) {
	if c.holder != d.parts.rules {
		return // from a holder a full reload has replaced
	}
	d.metrics.Reload(c.err)
	if c.err != nil {
		d.log.Error("rule files changed but do not compile; keeping the running rules", "err", c.err)
		return
	}
	d.engine.Update(d.parts.settings(d.cfg), d.parts.checker, d.parts.ruleSet())
	d.log.Info("rules reloaded after a file change", "rules", d.parts.ruleCount())
}

func (d *daemon) run() error {
	d.engine = policy.NewEngine(d.parts.settings(d.cfg), d.parts.checker, d.parts.ruleSet(), d.log)
	d.engine.SetCache(d.parts.cache, d.parts.grey)
	d.metrics = admin.NewMetrics()
	d.engine.Observe(d.metrics)
	d.setCache(d.cache)
	d.cacheMetrics()
	d.live.Store(d.parts)
	d.parts.resolver.Observe(d.metrics.DNSQuery)
	d.partsMetrics()
	d.dnsMetrics()
	defer func() { d.cache.Close() }()
	rs, err := openReports(d.cfg, reportsServe, d.log, d.metrics.Registry)
	if err != nil {
		return err
	}
	if rs != nil {
		d.reports = rs
		d.journal.also = rs.rec
		rs.metrics(d.metrics)
		rs.start()
		// Runs after the journal's close: the fronts have stopped.
		defer rs.close()
	}
	if err := d.journal.apply(d.cfg.journal(), d.engine, d.log); err != nil {
		return err
	}
	d.journal.metrics(d.metrics)
	// Deferred after the cache, so it runs first: the fronts have stopped.
	defer d.journal.close()

	errc := make(chan error, 4)
	// stops shuts the fronts down, newest first.
	var stops []func(context.Context) error
	shutdown := func(ctx context.Context) error {
		var err error
		for i := len(stops) - 1; i >= 0; i-- {
			err = errors.Join(err, stops[i](ctx))
		}
		return err
	}
	if d.cfg.Milter.Listen != "" {
		mode, _ := d.cfg.Milter.Mode()
		ln, err := proxy.Listen(d.cfg.Milter.Listen, mode)
		if err != nil {
			return err
		}
		ms := milter.New(d.engine, d.cfg.Timeouts.Milter, d.log)
		go func() { errc <- ms.Serve(ln) }()
		stops = append(stops, ms.Shutdown)
	}
	if d.cfg.Policy.Listen != "" {
		pln, err := policyd.Listen(d.cfg.Policy)
		if err != nil {
			shutdown(context.Background())
			return err
		}
		ps := policyd.New(d.engine, d.cfg.Policy, d.log)
		d.noteContentRules()
		go func() { errc <- ps.Serve(pln) }()
		stops = append(stops, ps.Shutdown)
	}
	var sp *smtpproxy.Server
	if sc := d.cfg.smtp(); sc.Listen != "" || sc.ListenTLS != "" {
		var err error
		if sp, err = smtpproxy.New(d.engine, sc, d.log); err != nil {
			shutdown(context.Background())
			return err
		}
		go func() { errc <- sp.ListenAndServe() }()
		stops = append(stops, sp.Shutdown)
	}
	d.smtp = sp
	if sp != nil {
		sp.SetCache(d.cache)
	}
	for _, limit := range []string{"message_cpu", "mime"} {
		d.metrics.CounterFunc("mailward_messages_over_limit_total", "Messages given the on_error verdict for passing a limit: the CPU budget or the MIME structure's bounds.",
			prometheus.Labels{"limit": limit}, func() float64 { return float64(d.engine.OverLimits(limit)) })
	}
	d.metrics.CounterFunc("mailward_message_cpu_seconds_total", "CPU time spent on messages' checks, rules, DKIM hashing and attachment scans.", nil,
		func() float64 { return d.engine.MessageCPU().Seconds() })
	if sp != nil {
		for _, o := range smtpproxy.AuthOutcomes {
			d.metrics.CounterFunc("mailward_smtp_auth_total", "SMTP AUTH exchanges in the proxy by outcome: ok, failed (a wrong password), blocked (over smtp.auth_fail_limit), tempfail.",
				prometheus.Labels{"outcome": o}, func() float64 { return float64(sp.AuthCount(o)) })
		}
	}
	for _, front := range []string{"milter", "policy", "smtp"} {
		d.metrics.GaugeFunc("mailward_connections_open", "Connections open, by front.", prometheus.Labels{"front": front},
			func() float64 { return float64(d.engine.Open(front)) })
	}

	var adm *admin.Server
	if d.cfg.Admin.Listen != "" {
		aln, err := net.Listen("tcp", d.cfg.Admin.Listen)
		if err != nil {
			shutdown(context.Background())
			return fmt.Errorf("admin listener: %w", err)
		}
		adm = admin.New(d.cfg.Admin, d.metrics, admin.Hooks{Ready: d.ready, Health: d.health, Reload: d.requestReload}, d.log)
		go func() { errc <- adm.Serve(aln) }()
	}
	d.watchRules()
	defer func() { d.stopWatch() }()
	d.log.Info("mailward started", "milter", d.cfg.Milter.Listen, "smtp", d.cfg.SMTP.Listen, "policy", d.cfg.Policy.Listen, "admin", d.cfg.Admin.Listen, "config", d.cfg.file, "rules", d.parts.ruleCount())

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	for {
		select {
		case err := <-errc:
			if err != nil {
				return err
			}
		case reply := <-d.reloads:
			reply <- d.reload()
		case c := <-d.ruleChanges:
			d.rulesChanged(c)
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				d.reload()
				continue
			}
			d.log.Info("shutting down: finishing transactions in flight", "signal", sig.String(), "timeout", d.cfg.Timeouts.Shutdown)
			ctx, cancel := context.WithTimeout(context.Background(), d.cfg.Timeouts.Shutdown)
			err := shutdown(ctx)
			cancel()
			if adm != nil {
				adm.Shutdown(context.Background())
			}
			d.parts.close()
			if err != nil {
				d.log.Warn("shutdown", "err", err)
			}
			d.log.Info("mailward stopped")
			return nil
		}
	}
}

func (d *daemon) setCache(c cache.Cache) {
	d.cache = c
	if d.smtp != nil {
		d.smtp.SetCache(c)
	}
	stats := c.Stats
	d.cacheStat.Store(&stats)
}

// cacheMetrics exposes the cache's counters and breaker state.
func (d *daemon) cacheMetrics() {
	stat := func() cache.Stats { return (*d.cacheStat.Load())() }
	for name, fn := range map[string]func(cache.Stats) uint64{
		"hits": func(s cache.Stats) uint64 { return s.Hits }, "misses": func(s cache.Stats) uint64 { return s.Misses },
		"errors": func(s cache.Stats) uint64 { return s.Errors }, "unavailable": func(s cache.Stats) uint64 { return s.Unavailable },
	} {
		d.metrics.CounterFunc("mailward_cache_operations_total", "Cache look-ups and failures, by outcome.", prometheus.Labels{"outcome": name},
			func() float64 { return float64(fn(stat())) })
	}
	for name, st := range map[string]cache.BreakerState{"closed": cache.BreakerClosed, "open": cache.BreakerOpen, "half_open": cache.BreakerHalfOpen} {
		d.metrics.GaugeFunc("mailward_cache_breaker_state", "Redis circuit breaker: 1 for the state it is in.", prometheus.Labels{"state": name},
			func() float64 {
				if stat().Breaker == st {
					return 1
				}
				return 0
			})
	}
}

// partsMetrics exposes the build and what the running rules count:
// run-time errors by rule and the outcomes of ratelimit().
func (d *daemon) partsMetrics() {
	v, c := buildVersion()
	d.metrics.BuildInfo(v, c, runtime.Version())
	d.metrics.CounterVecFunc("mailward_rule_errors_total", "Rule evaluations that failed at run time, by rule (since the rules were loaded).", "rule",
		func() map[string]float64 {
			out := map[string]float64{}
			for _, r := range d.live.Load().rules.Current().Rules() {
				out[r.Name] = float64(r.Errors)
			}
			return out
		})
	d.metrics.CounterVecFunc("mailward_ratelimit_total", "ratelimit() calls in rules, by outcome (since the rules were loaded).", "outcome",
		func() map[string]float64 {
			rl := &d.live.Load().rateLimits
			return map[string]float64{"allowed": float64(rl.Allowed.Load()), "limited": float64(rl.Limited.Load()), "unavailable": float64(rl.Unavailable.Load())}
		})
}

// dnsMetrics exposes the DNS cache: its size against its byte budget,
// evictions, and answers too large to cache.
func (d *daemon) dnsMetrics() {
	d.dnsStat.Store(&d.parts.dnsStats)
	stat := func() resolver.CacheStats { return (*d.dnsStat.Load())() }
	d.metrics.GaugeFunc("mailward_dns_cache_bytes", "Estimated memory held by the DNS cache.", nil,
		func() float64 { return float64(stat().Bytes) })
	d.metrics.GaugeFunc("mailward_dns_cache_budget_bytes", "The DNS cache's byte budget (dns.cache_bytes).", nil,
		func() float64 { return float64(stat().MaxBytes) })
	d.metrics.GaugeFunc("mailward_dns_cache_entries", "Answers in the DNS cache.", nil,
		func() float64 { return float64(stat().Entries) })
	d.metrics.CounterFunc("mailward_dns_cache_evictions_total", "DNS answers dropped from the cache to stay within its budget.", nil,
		func() float64 { return float64(stat().Evictions) })
	d.metrics.CounterFunc("mailward_dns_cache_oversized_total", "DNS answers not cached because they were too large.", nil,
		func() float64 { return float64(stat().Oversized) })
}

// requestReload runs a reload on the daemon's own goroutine, so that HTTP
// and SIGHUP reloads never race.
func (d *daemon) requestReload() error {
	reply := make(chan error, 1)
	d.reloads <- reply
	return <-reply
}

// reload reads the config and rules again; on any error the running ones
// stay and the error is logged with its position.
func (d *daemon) reload() error {
	cfg, err := loadConfig(d.file)
	var p *parts
	c := d.cache
	if err == nil && !reflect.DeepEqual(cfg.Cache, d.cfg.Cache) {
		c, err = cache.New(cfg.Cache, cache.Options{Logger: d.log})
	}
	if err == nil {
		p, err = rebuildParts(context.Background(), cfg, c, d.log, d.parts)
		if err != nil && c != d.cache {
			c.Close()
		}
	}
	d.metrics.Reload(err)
	if err != nil {
		d.log.Error("reload failed; keeping the running config and rules", "err", err)
		return err
	}
	if cfg.Milter.Listen != d.cfg.Milter.Listen || cfg.Admin.Listen != d.cfg.Admin.Listen || cfg.Policy.Listen != d.cfg.Policy.Listen ||
		cfg.SMTP.Listen != d.cfg.SMTP.Listen || cfg.SMTP.ListenTLS != d.cfg.SMTP.ListenTLS {
		d.log.Warn("listen addresses changed; they take effect at restart")
	}
	if err := d.journal.apply(cfg.journal(), d.engine, d.log); err != nil {
		p.close()
		if c != d.cache {
			c.Close()
		}
		d.metrics.Reload(err)
		d.log.Error("reload failed; keeping the running config and rules", "err", err)
		return err
	}
	if d.smtp != nil {
		// Certificates and limits; listen addresses need a restart.
		if err := d.smtp.Reload(cfg.smtp()); err != nil {
			p.close()
			d.metrics.Reload(err)
			d.log.Error("reload failed; keeping the running config and rules", "err", err)
			return err
		}
	}
	if cfg.Log != d.cfg.Log {
		d.logOut.set(cfg.Log)
		d.log.Info("log settings changed", "format", cfg.Log.Format, "level", cfg.Log.Level)
	}
	for _, w := range cfg.warnings() {
		d.log.Warn(w)
	}
	if !reflect.DeepEqual(cfg.Reports, d.cfg.Reports) || d.reports != nil && !reflect.DeepEqual(cfg.Cache, d.cfg.Cache) {
		d.log.Warn("changes to reports: and to the cache the reports use take effect at restart")
	}
	d.engine.Update(p.settings(cfg), p.checker, p.ruleSet())
	d.engine.SetCache(p.cache, p.grey)
	d.parts.close()
	if c != d.cache {
		old := d.cache
		d.setCache(c)
		old.Close()
	}
	d.cfg, d.parts = cfg, p
	d.live.Store(p)
	p.resolver.Observe(d.metrics.DNSQuery)
	d.dnsStat.Store(&p.dnsStats)
	if d.cfg.Policy.Listen != "" {
		d.noteContentRules()
	}
	d.watchRules()
	d.log.Info("reloaded", "config", cfg.file, "rules", p.ruleCount())
	return nil
}

// ready reports whether mailward can take mail: listeners are up (it runs
// only once they are) and rules are loaded. Redis is not asked: mail
// flows past its breaker.
func (d *daemon) ready(ctx context.Context) error {
	return d.parts.ready(ctx)
}

// health describes the shared dependencies for /healthz.
func (d *daemon) health(ctx context.Context) []string {
	return d.parts.healthLines(ctx)
}

// noteContentRules says which rules the policy front skips: it never
// sees the message, so rules reading its header or content cannot run.
func (d *daemon) noteContentRules() {
	if names := d.parts.rules.Current().ContentRules(); len(names) > 0 {
		d.log.Warn("the policy front never sees the message: rules that read its header or content are skipped for its transactions",
			"rules", fmt.Sprint(names))
	}
}
