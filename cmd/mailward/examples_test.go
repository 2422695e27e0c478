package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/mailward/mailward/cache"
)

// TestExampleConfig loads examples/mailward.yaml as a user would, with its
// rule files and lists: it must be valid as written.
func TestExampleConfig(t *testing.T) {
	cfg, err := loadConfig("../../examples/mailward.yaml")
	if err != nil {
		t.Fatalf("examples/mailward.yaml: %v", err)
	}
	c, err := cache.New(cfg.Cache, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := buildParts(context.Background(), cfg, c, slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)))
	if err != nil {
		t.Fatalf("examples/mailward.yaml: %v", err)
	}
	defer p.close()
	if n := p.rules.Current().Len(); n == 0 {
		t.Fatal("the example config loads no rules")
	}
	var out, errb bytes.Buffer
	if code := run([]string{"serve", "--config", "../../examples/mailward.yaml", "--check-config"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "OK") {
		t.Fatalf("serve --check-config: exit %d\n%s%s", code, out.String(), errb.String())
	}
}

// TestExampleConfigKeysDocumented: every key of the example config is in
// the README's reference.
func TestExampleConfigKeysDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"hostname", "on_error", "log.format", "milter.listen", "policy.listen", "admin.listen",
		"dns.servers", "spf.enable", "iprev.enable", "dnsbl.zones", "dkim.enable", "dmarc.enforce", "dmarc.on_temperror",
		"rules.files", "lists", "thresholds.reject", "score_header", "timeouts.checks", "cache.type", "cache.redis.addrs",
		"cache.breaker.failures", "greylist.delay", "journal.path", "journal.max_size", "journal.max_age",
		"journal.max_total", "journal.queue", "journal.omit_headers"} {
		if !strings.Contains(string(readme), "`"+key+"`") {
			t.Errorf("README config reference lacks `%s`", key)
		}
	}
}

// TestSystemdUnit checks the unit with systemd-analyze where it exists.
func TestSystemdUnit(t *testing.T) {
	unit := "../../examples/systemd/mailward.service"
	b, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes", "RuntimeDirectory=mailward", "ExecReload=/bin/kill -HUP $MAINPID"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("unit lacks %s", want)
		}
	}
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed: the unit was checked for its settings only")
	}
	// verify wants the ExecStart binary to exist; point it at the test's own.
	dir := t.TempDir()
	text := strings.Replace(string(b), "/usr/local/bin/mailward", mailwardBinary(t), 1)
	if err := os.WriteFile(dir+"/mailward.service", []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", dir+"/mailward.service").CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
