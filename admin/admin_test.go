package admin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/checks/spf"
	"github.com/mailward/mailward/policy"
)

func startAdmin(t *testing.T, cfg Config, m *Metrics, h Hooks) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(cfg, m, h, slog.New(slog.NewTextHandler(io.Discard, nil)))
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve after Shutdown: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func do(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	notReady := errors.New("no rules loaded")
	var readyErr error
	reloads := 0
	var reloadErr error
	base := startAdmin(t, Config{}, NewMetrics(), Hooks{
		Ready:  func(context.Context) error { return readyErr },
		Reload: func() error { reloads++; return reloadErr },
	})

	if code, body := do(t, "GET", base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, _ := do(t, "GET", base+"/readyz"); code != 200 {
		t.Errorf("/readyz when ready: %d", code)
	}
	readyErr = notReady
	if code, body := do(t, "GET", base+"/readyz"); code != 503 || !strings.Contains(body, "no rules loaded") {
		t.Errorf("/readyz when not ready: %d %q; want 503 with the reason", code, body)
	}

	if code, _ := do(t, "GET", base+"/reload"); code != http.StatusMethodNotAllowed || reloads != 0 {
		t.Errorf("GET /reload: %d, %d reloads; want 405 and none", code, reloads)
	}
	if code, body := do(t, "POST", base+"/reload"); code != 200 || body != "reloaded\n" || reloads != 1 {
		t.Errorf("POST /reload: %d %q, %d reloads", code, body, reloads)
	}
	reloadErr = errors.New("rules.yaml:3:22: unexpected token EOF")
	if code, body := do(t, "POST", base+"/reload"); code != http.StatusUnprocessableEntity || !strings.Contains(body, "rules.yaml:3:22") {
		t.Errorf("failed reload: %d %q; want 422 naming file and line", code, body)
	}
	if code, _ := do(t, "GET", base+"/debug/pprof/"); code != 404 {
		t.Errorf("pprof without admin.pprof: %d; want 404", code)
	}
}

func TestHealthzListsDependencies(t *testing.T) {
	base := startAdmin(t, Config{}, NewMetrics(), Hooks{Health: func(context.Context) []string { return []string{"redis: down, mail flows uncached"} }})
	if code, body := do(t, "GET", base+"/healthz"); code != 200 || body != "ok\nredis: down, mail flows uncached\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
}

func TestReloadUnavailableAndPprof(t *testing.T) {
	base := startAdmin(t, Config{Pprof: true}, NewMetrics(), Hooks{})
	if code, _ := do(t, "POST", base+"/reload"); code != http.StatusNotImplemented {
		t.Errorf("POST /reload with no reload hook: %d; want 501", code)
	}
	if code, _ := do(t, "GET", base+"/readyz"); code != 200 {
		t.Errorf("/readyz with no readiness hook: %d; want 200", code)
	}
	if code, body := do(t, "GET", base+"/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("pprof with admin.pprof: %d", code)
	}
}

func TestMetrics(t *testing.T) {
	m := NewMetrics()
	m.GaugeFunc("mailward_test_open_connections", "Open connections.", map[string]string{"front": "milter"}, func() float64 { return 3 })
	m.Stage("milter", policy.StageRcpt, policy.Verdict{Action: policy.Reject}, 2*time.Millisecond)
	f := &policy.Facts{Results: policy.Results{SPF: &spf.Result{Result: "fail"}}}
	m.Transaction("milter", policy.Verdict{Action: policy.Reject}, f, []policy.Match{{Rule: "bad-sender"}, {Rule: "watch", Monitor: true}}, 5*time.Millisecond)
	m.Reload(nil)
	m.Reload(errors.New("broken"))
	m.Greylist("milter", "greylisted", "new")
	m.Transaction("milter", policy.Verdict{Action: policy.Accept}, &policy.Facts{Results: policy.Results{DNSBL: []dnsbl.Result{{Zone: "zen.test", Codes: []string{"127.0.0.2"}}}}}, nil, time.Millisecond)
	base := startAdmin(t, Config{}, m, Hooks{})
	code, body := do(t, "GET", base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`mailward_transactions_total{front="milter",verdict="reject"} 1`,
		`mailward_stage_verdicts_total{action="reject",front="milter",stage="rcpt"} 1`,
		`mailward_rule_matches_total{mode="enforce",rule="bad-sender"} 1`,
		`mailward_rule_matches_total{mode="monitor",rule="watch"} 1`,
		`mailward_check_results_total{check="spf",result="fail",zone=""} 1`,
		`mailward_reloads_total{result="success"} 1`,
		`mailward_greylist_total{front="milter",outcome="greylisted",reason="new"} 1`,
		`mailward_check_results_total{check="dnsbl",result="listed",zone="zen.test"} 1`,
		`mailward_reloads_total{result="failure"} 1`,
		`mailward_test_open_connections{front="milter"} 3`,
		`mailward_stage_duration_seconds_count{front="milter",stage="rcpt"} 1`,
		"go_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
