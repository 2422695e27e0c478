// Package admin is the operator's side of mailward: Prometheus metrics,
// health and readiness, reload over HTTP and optional pprof.
package admin

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/policy"
)

// Metrics holds mailward's metrics in a registry of its own, so that two
// instances in one process (tests) never collide.
type Metrics struct {
	Registry *prometheus.Registry

	transactions *prometheus.CounterVec
	verdicts     *prometheus.CounterVec
	ruleMatches  *prometheus.CounterVec
	checkResults *prometheus.CounterVec
	signing      *prometheus.CounterVec
	stageLatency *prometheus.HistogramVec
	txLatency    *prometheus.HistogramVec
	reloads      *prometheus.CounterVec
	lastReload   prometheus.Gauge
	greylist     *prometheus.CounterVec
	dnsQueries   *prometheus.CounterVec
	dnsLatency   *prometheus.HistogramVec
}

// NewMetrics registers every metric, plus the Go runtime and process ones.
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailward_transactions_total", Help: "Transactions ended, by front and final verdict.",
		}, []string{"front", "verdict"}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailward_stage_verdicts_total", Help: "Verdicts given, by front, stage and action.",
		}, []string{"front", "stage", "action"}),
		ruleMatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailward_rule_matches_total", Help: "Rule matches, by rule name and mode (enforce or monitor).",
		}, []string{"rule", "mode"}),
		checkResults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailward_check_results_total", Help: "Check results, by check, result and, for DNS lists, zone.",
		}, []string{"check", "result", "zone"}),
		signing: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailward_dkim_sign_total", Help: "Messages to DKIM sign, by outcome: signed, missing_key, not_in_table, no_from, error.",
		}, []string{"outcome"}),
		stageLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mailward_stage_duration_seconds", Help: "Time spent on the checks and rules of one stage.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}, []string{"front", "stage"}),
		txLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mailward_transaction_duration_seconds", Help: "Whole-transaction time, from MAIL FROM (or connect) to its verdict.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}, []string{"front"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailward_reloads_total", Help: "Config and rule reloads, by result (success or failure).",
		}, []string{"result"}),
		lastReload: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mailward_last_good_reload_timestamp_seconds", Help: "When the running config and rules were loaded.",
		}),
		greylist: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailward_greylist_total", Help: "Greylisting decisions, by front, outcome (greylisted, passed, skipped) and reason.",
		}, []string{"front", "outcome", "reason"}),
		dnsQueries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailward_dns_queries_total", Help: "DNS queries sent to the servers (cache misses), by type and outcome (ok, timeout, error).",
		}, []string{"type", "outcome"}),
		dnsLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mailward_dns_query_duration_seconds", Help: "Time DNS queries to the servers took, retries included, by type.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9),
		}, []string{"type"}),
	}
	r.MustRegister(m.transactions, m.verdicts, m.ruleMatches, m.checkResults, m.signing, m.stageLatency, m.txLatency,
		m.reloads, m.lastReload, m.greylist, m.dnsQueries, m.dnsLatency, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.lastReload.SetToCurrentTime()
	return m
}

// Stage implements policy.Observer.
func (m *Metrics) Stage(front string, st policy.Stage, v policy.Verdict, d time.Duration) {
	m.verdicts.WithLabelValues(front, st.String(), v.Action.String()).Inc()
	m.stageLatency.WithLabelValues(front, st.String()).Observe(d.Seconds())
}

// Transaction implements policy.Observer.
func (m *Metrics) Transaction(front string, v policy.Verdict, f *policy.Facts, matches []policy.Match, d time.Duration) {
	m.transactions.WithLabelValues(front, v.Action.String()).Inc()
	m.txLatency.WithLabelValues(front).Observe(d.Seconds())
	for _, x := range matches {
		mode := "enforce"
		if x.Monitor {
			mode = "monitor"
		}
		m.ruleMatches.WithLabelValues(x.Rule, mode).Inc()
	}
	if f.Signing != "" {
		m.signing.WithLabelValues(f.Signing).Inc()
	}
	if f.IPRev != nil {
		m.checkResults.WithLabelValues("iprev", f.IPRev.Result, "").Inc()
	}
	if f.SPF != nil {
		m.checkResults.WithLabelValues("spf", f.SPF.Result, "").Inc()
	}
	if f.SPFHelo != nil {
		m.checkResults.WithLabelValues("spf_helo", f.SPFHelo.Result, "").Inc()
	}
	for _, r := range f.DKIM {
		m.checkResults.WithLabelValues("dkim", r.Result, "").Inc()
	}
	if f.DMARC != nil {
		m.checkResults.WithLabelValues("dmarc", f.DMARC.Result, "").Inc()
	}
	for _, r := range f.DNSBL {
		res := "clean"
		switch {
		case r.Error != "":
			res = "error"
		case len(r.Codes) > 0:
			res = "listed"
		}
		m.checkResults.WithLabelValues("dnsbl", res, r.Zone).Inc()
	}
}

// Greylist implements policy.GreylistObserver.
func (m *Metrics) Greylist(front, outcome, reason string) {
	m.greylist.WithLabelValues(front, outcome, reason).Inc()
}

// DNSQuery counts a query sent to the DNS servers; it suits
// resolver.Resolver.Observe.
func (m *Metrics) DNSQuery(qtype string, took time.Duration, err error) {
	outcome := "ok"
	switch {
	case errors.Is(err, resolver.ErrTimeout):
		outcome = "timeout"
	case err != nil:
		outcome = "error"
	}
	m.dnsQueries.WithLabelValues(qtype, outcome).Inc()
	m.dnsLatency.WithLabelValues(qtype).Observe(took.Seconds())
}

// BuildInfo registers mailward_build_info, 1 with the build as labels.
func (m *Metrics) BuildInfo(version, revision, goVersion string) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mailward_build_info", Help: "The running build: version, VCS revision and Go version, as labels.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goVersion},
	})
	g.Set(1)
	m.Registry.MustRegister(g)
}

// CounterVecFunc registers counters read at scrape time, one series per
// value of label, e.g. run-time errors by rule. A value that goes away
// (a rule removed by a reload) drops its series.
func (m *Metrics) CounterVecFunc(name, help, label string, fn func() map[string]float64) {
	m.Registry.MustRegister(&vecFunc{desc: prometheus.NewDesc(name, help, []string{label}, nil), kind: prometheus.CounterValue, fn: fn})
}

// GaugeVecFunc is CounterVecFunc for gauges.
func (m *Metrics) GaugeVecFunc(name, help, label string, fn func() map[string]float64) {
	m.Registry.MustRegister(&vecFunc{desc: prometheus.NewDesc(name, help, []string{label}, nil), kind: prometheus.GaugeValue, fn: fn})
}

type vecFunc struct {
	desc *prometheus.Desc
	kind prometheus.ValueType
	fn   func() map[string]float64
}

func (v *vecFunc) Describe(ch chan<- *prometheus.Desc) { ch <- v.desc }

func (v *vecFunc) Collect(ch chan<- prometheus.Metric) {
	for label, val := range v.fn() {
		ch <- prometheus.MustNewConstMetric(v.desc, v.kind, val, label)
	}
}

// Reload records a reload attempt.
func (m *Metrics) Reload(err error) {
	if err != nil {
		m.reloads.WithLabelValues("failure").Inc()
		return
	}
	m.reloads.WithLabelValues("success").Inc()
	m.lastReload.SetToCurrentTime()
}

// GaugeFunc registers a gauge read at scrape time, e.g. open connections
// of a front or a cache's breaker state.
func (m *Metrics) GaugeFunc(name, help string, labels prometheus.Labels, fn func() float64) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, fn))
}

// CounterFunc registers a counter read at scrape time, e.g. DNS queries.
func (m *Metrics) CounterFunc(name, help string, labels prometheus.Labels, fn func() float64) {
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, fn))
}
