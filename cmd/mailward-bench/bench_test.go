package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mailward/mailward/checks"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/proxy/milter"
	"github.com/mailward/mailward/proxy/policyd"
	smtpproxy "github.com/mailward/mailward/proxy/smtp"
	"github.com/mailward/mailward/rules"
)

const testMessages = 49 // every class seven times

// fronts is mailward in-process, as serve runs it, behind each front.
type fronts struct {
	corpus, milter, smtp, sink, policy string
}

// TestGenConfigFindsItsRules: the config gen writes names its rules so
// that they are found from the config's directory, whatever --out is.
func TestGenConfigFindsItsRules(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := run([]string{"gen", "--out", "corpus", "--domains", "1", "--messages", "7", "--size", "512"}, io.Discard, io.Discard); err != nil {
		t.Fatalf("gen: %v", err)
	}
	var cfg struct {
		Rules rules.Config `yaml:"rules"`
	}
	data, err := os.ReadFile("corpus/mailward.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := rules.Load(cfg.Rules, rules.Options{BaseDir: "corpus"}); err != nil {
		t.Fatalf("the generated config's rules: %v", err)
	}
}

func startMailward(t *testing.T) fronts {
	t.Helper()
	dir := t.TempDir()
	if err := run([]string{"gen", "--out", dir, "--domains", "2", "--messages", strconv.Itoa(testMessages), "--size", "512"}, io.Discard, io.Discard); err != nil {
		t.Fatalf("gen: %v", err)
	}
	zone, err := os.ReadFile(filepath.Join(dir, "zone.txt"))
	if err != nil {
		t.Fatal(err)
	}
	dns := testenv.StartDNS(t, string(zone))
	cfg := checks.DefaultConfig()
	cfg.DNS = resolver.Config{Servers: []string{dns.Addr()}}
	cfg.Hostname = benchAuthserv
	res, err := resolver.New(cfg.DNS)
	if err != nil {
		t.Fatal(err)
	}
	suite, err := checks.New(cfg, res)
	if err != nil {
		t.Fatal(err)
	}
	set, err := rules.Load(rules.Config{Files: []string{filepath.Join(dir, "rules.yaml")}}, rules.Options{BaseDir: dir})
	if err != nil {
		t.Fatalf("loading the corpus's rules: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng := policy.NewEngine(policy.Settings{Hostname: benchAuthserv, DMARCEnforce: true}, suite, set, log)

	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	shutdown := func(stop func(context.Context) error) {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			stop(ctx)
		})
	}
	f := fronts{corpus: dir, sink: "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))}

	mln := listen()
	ms := milter.New(eng, 30*time.Second, log)
	go ms.Serve(mln)
	shutdown(ms.Shutdown)
	f.milter = mln.Addr().String()

	sp, err := smtpproxy.New(eng, smtpproxy.Config{
		Upstream: f.sink, Hostname: benchAuthserv, UpstreamTLS: "off", TrustedNetworks: []string{"127.0.0.1"},
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	sln := listen()
	go sp.Serve(sln)
	shutdown(sp.Shutdown)
	f.smtp = sln.Addr().String()

	ps := policyd.New(eng, policyd.Config{}, log)
	pln := listen()
	go ps.Serve(pln)
	shutdown(ps.Shutdown)
	f.policy = pln.Addr().String()
	return f
}

// runJSON runs the tool with --json and returns its runs and error.
func runJSON(t *testing.T, args ...string) ([]result, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(append(args, "--json", "--concurrency", "4", "--messages", strconv.Itoa(testMessages)), &stdout, &stderr)
	var out struct{ Runs []result }
	if jerr := json.Unmarshal(stdout.Bytes(), &out); jerr != nil {
		t.Fatalf("%s: output is not JSON (%v): %s\nstderr: %s", args[0], jerr, stdout.String(), stderr.String())
	}
	return out.Runs, err
}

// allRight checks a run had no errors and every counted verdict right,
// and that it counted want messages.
func allRight(t *testing.T, r result, want int) {
	t.Helper()
	if r.Messages != testMessages || r.Errors != 0 {
		t.Errorf("%s: %d messages, %d errors, want %d and 0: %v", r.Name, r.Messages, r.Errors, testMessages, r.Wrong)
	}
	counted := 0
	for class, n := range r.Total {
		counted += n
		if r.Right[class] != n {
			t.Errorf("%s: class %s: %d/%d right", r.Name, class, r.Right[class], n)
		}
	}
	if counted != want {
		t.Errorf("%s: %d verdicts counted, want %d", r.Name, counted, want)
	}
	if len(r.Wrong) > 0 {
		t.Errorf("%s: wrong:\n  %s", r.Name, strings.Join(r.Wrong, "\n  "))
	}
}

func TestDriversAgainstMailward(t *testing.T) {
	f := startMailward(t)
	_, items, err := loadCorpus(f.corpus)
	if err != nil {
		t.Fatal(err)
	}
	envelope := 0
	for _, m := range items {
		if envelopeClasses[m.Class] {
			envelope++
		}
	}

	t.Run("milter", func(t *testing.T) {
		runs, err := runJSON(t, "milter", "--addr", f.milter, "--corpus", f.corpus)
		if err != nil {
			t.Errorf("milter: %v", err)
		}
		allRight(t, runs[0], testMessages)
	})

	t.Run("smtp", func(t *testing.T) {
		runs, err := runJSON(t, "smtp", "--addr", f.smtp, "--corpus", f.corpus, "--xclient", "--sink", f.sink, "--baseline")
		if err != nil {
			t.Errorf("smtp: %v", err)
		}
		if len(runs) != 2 {
			t.Fatalf("%d runs, want the baseline and the proxy", len(runs))
		}
		if runs[0].Errors != 0 || runs[0].Messages != testMessages {
			t.Errorf("baseline: %d messages, %d errors: %v", runs[0].Messages, runs[0].Errors, runs[0].Wrong)
		}
		if runs[1].Ratio <= 0 {
			t.Errorf("no ratio to the baseline")
		}
		allRight(t, runs[1], testMessages)
		if runs[1].Note != "" {
			t.Errorf("with a sink everything is checked, yet the note says %q", runs[1].Note)
		}
	})

	t.Run("smtp without a sink", func(t *testing.T) {
		// The proxy still needs somewhere to relay; the driver then judges
		// only the replies.
		sk, err := startSink(f.sink)
		if err != nil {
			t.Fatal(err)
		}
		defer sk.Close()
		runs, err := runJSON(t, "smtp", "--addr", f.smtp, "--corpus", f.corpus, "--xclient")
		if err != nil {
			t.Errorf("smtp: %v", err)
		}
		allRight(t, runs[0], testMessages)
		if !strings.Contains(runs[0].Note, "no --sink") {
			t.Errorf("note %q does not say that quarantine and header removal are not checked", runs[0].Note)
		}
	})

	t.Run("smtp without XCLIENT", func(t *testing.T) {
		// The proxy then sees the bench's loopback address: SPF fails and
		// messages without a signature are refused by DMARC. The driver
		// must notice.
		runs, err := runJSON(t, "smtp", "--addr", f.smtp, "--corpus", f.corpus, "--sink", f.sink)
		if err == nil || len(runs[0].Wrong) == 0 {
			t.Fatalf("wrong client address, yet every verdict was right: %+v", runs[0])
		}
		for _, w := range runs[0].Wrong {
			if !strings.Contains(w, "(spf_only)") && !strings.Contains(w, "(pass)") && !strings.Contains(w, "(multi_rcpt)") &&
				!strings.Contains(w, "(dkim_only)") && !strings.Contains(w, "(forged_ar)") {
				t.Errorf("unexpected wrong verdict: %s", w)
			}
		}
	})

	t.Run("policy", func(t *testing.T) {
		runs, err := runJSON(t, "policy", "--addr", f.policy, "--corpus", f.corpus, "--baseline")
		if err != nil {
			t.Errorf("policy: %v", err)
		}
		if len(runs) != 2 {
			t.Fatalf("%d runs, want the baseline and the service", len(runs))
		}
		if runs[0].Errors != 0 || runs[0].Messages != testMessages || runs[1].Ratio <= 0 {
			t.Errorf("baseline: %d messages, %d errors, ratio %.2f", runs[0].Messages, runs[0].Errors, runs[1].Ratio)
		}
		allRight(t, runs[1], envelope)
		if !strings.Contains(runs[1].Note, "no content") {
			t.Errorf("note %q does not say what is not counted", runs[1].Note)
		}
	})
}

func TestPolicyAction(t *testing.T) {
	for answer, want := range map[string]string{
		"DUNNO": "accept", "OK": "accept", "PREPEND X-Test: 1": "accept",
		"REJECT no": "reject", "550 5.7.1 no": "reject",
		"DEFER later": "tempfail", "DEFER_IF_PERMIT Service temporarily unavailable": "tempfail", "451 4.7.1 later": "tempfail",
		"HOLD quarantined": "quarantine", "DISCARD spam": "discard",
	} {
		if got := policyAction(answer); got != want {
			t.Errorf("policyAction(%q) = %s, want %s", answer, got, want)
		}
	}
}

func TestRemovedFields(t *testing.T) {
	sent := [][2]string{{"Authentication-Results", "mx.bench.test; dkim=pass header.d=bank.example"}, {"From", "a@b"}, {"Subject", "x"}}
	arrived := [][2]string{{"Authentication-Results", "mx.bench.test; spf=pass"}, {"From", "a@b"}, {"Subject", "x"}}
	if got := removedFields(sent, arrived); len(got) != 1 || got[0] != "Authentication-Results" {
		t.Errorf("removed %v, want the forged Authentication-Results", got)
	}
	if got := removedFields(sent, sent); len(got) != 0 {
		t.Errorf("nothing removed, yet got %v", got)
	}
}

// The ledger's counts against a sink that received what a broken server
// might relay: one lost, one twice, one after a refusal, one unchecked.
func TestAccounting(t *testing.T) {
	sk, err := startSink("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Close()
	deliver := func(seq string, authres string) {
		s := &sinkSession{sink: sk}
		msg := "Authentication-Results: " + authres + "\r\n" + seqHeader + ": " + seq + "\r\n\r\nbody\r\n"
		if err := s.Data(strings.NewReader(msg)); err != nil {
			t.Fatal(err)
		}
	}
	l := &ledger{sends: map[string]outcome{
		"1": {Action: "accept", Code: 250},
		"2": {Action: "accept", Code: 250},
		"3": {Action: "accept", Code: 250},
		"4": {Action: "tempfail", Code: 451},
		"5": {Action: "reject", Code: 550},
		"6": {Action: "accept", Code: 250},
		"7": {Err: errors.New("connection reset")},
	}}
	deliver("1", "mx.test; spf=pass")
	deliver("3", "mx.test; spf=pass")
	deliver("3", "mx.test; spf=pass")
	deliver("4", "mx.test; spf=pass")
	deliver("6", "other.test; spf=pass")
	a := l.account(sk, "mx.test")
	if a.Sent != 7 || a.Accepted != 4 || a.Refused["451"] != 1 || a.Refused["550"] != 1 || a.NoAnswer != 1 || a.Arrived != 5 {
		t.Errorf("counts: %+v", a)
	}
	if a.Lost != 1 || a.Duplicated != 1 || a.AfterRefusal != 1 || a.Unchecked != 1 {
		t.Errorf("problems: lost %d duplicated %d after refusal %d unchecked %d; want 1 each", a.Lost, a.Duplicated, a.AfterRefusal, a.Unchecked)
	}
	if a.ok() {
		t.Error("counts with mail lost reported as adding up")
	}
	good := &ledger{sends: map[string]outcome{"1": {Action: "accept", Code: 250}, "4": {Action: "tempfail", Code: 451}}}
	if a := good.account(sk, "mx.test"); a.AfterRefusal != 3 {
		// 4 arrived after its 451; 3 and 6 arrived but were never sent.
		t.Errorf("arrivals never sent in this run: %+v", a)
	}
}
