package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/internal/config"
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
		"dns.servers", "spf.enable", "iprev.enable", "dnsbl.zones", "uribl.zones", "dkim.enable", "dmarc.enforce", "dmarc.on_temperror",
		"rules.files", "lists", "thresholds.reject", "score_header", "timeouts.checks", "limits.message_cpu", "limits.mime_depth", "content.enabled", "content.max_text_bytes", "content.max_urls", "cache.type", "cache.redis.addrs",
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
	for _, want := range []string{"DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes", "ExecReload=/bin/kill -HUP $MAINPID",
		"ExecStart=/usr/local/bin/mailward ", "CGO_ENABLED=0 GOBIN=/usr/local/bin go install github.com/mailward/mailward/cmd/mailward@latest",
		"unix:/var/spool/postfix/mailward/milter.sock"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("unit lacks %s", want)
		}
	}
	// A socket in /run cannot be reached by Debian's chrooted smtpd, nor
	// by Postfix through a DynamicUser's group.
	if strings.Contains(string(b), "/run/mailward/") {
		t.Error("the unit advises a socket under /run/mailward")
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

// TestExampleConfigListsEveryKeyWithItsDefault: examples/mailward.yaml
// says it lists every key with its default; hold it to that. hostname
// depends on the machine and is left commented out; rules.files loads the
// starter rules beside the file, and says so.
func TestExampleConfigListsEveryKeyWithItsDefault(t *testing.T) {
	const file = "../../examples/mailward.yaml"
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cfg := defaultConfig()
	doc, err := config.Decode(file, text, cfg)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(text), "\n")
	notDefault := map[string]bool{"rules.files": true}
	for key := range notDefault {
		if p := doc.Pos(key); p.Line == 0 || !strings.Contains(lines[p.Line-1], "default:") {
			t.Errorf("%s is not at its default in the example; its line must say what the default is", key)
		}
	}
	if doc.Has("hostname") || !strings.Contains(string(text), "# hostname:") {
		t.Error("hostname must stand commented out: its default is the machine's")
	}
	var missing []string
	for _, key := range configKeys(reflect.TypeOf(Config{}), "") {
		if key != "hostname" && !doc.Has(key) {
			missing = append(missing, key)
		}
	}
	if len(missing) > 0 {
		t.Errorf("examples/mailward.yaml lacks %s", strings.Join(missing, ", "))
	}
	// Every value the file sets is the default, but for the exceptions.
	want := defaultConfig()
	got := *cfg
	got.Rules.Files, got.Hostname = want.Rules.Files, want.Hostname
	got.file, got.doc = want.file, want.doc
	a, _ := yaml.Marshal(&got)
	b, _ := yaml.Marshal(want)
	if !bytes.Equal(a, b) {
		al, bl := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
		for i := range min(len(al), len(bl)) {
			if al[i] != bl[i] {
				t.Errorf("example differs from the defaults near: %q (default %q)", al[i], bl[i])
			}
		}
	}
}

// configKeys lists the dotted keys of a config struct; maps, lists and
// values are leaves.
func configKeys(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if strings.Contains(opts, "inline") {
			out = append(out, configKeys(ft, prefix)...)
			continue
		}
		key := prefix + name
		_, custom := reflect.New(ft).Interface().(yaml.Unmarshaler)
		if ft.Kind() == reflect.Struct && !custom {
			out = append(out, configKeys(ft, key+".")...)
			continue
		}
		out = append(out, key)
	}
	return out
}

// TestGoModStatesTheMinimum: go.mod names the Go release the code needs,
// not the patch it happened to be built with, which would force every
// builder onto that exact toolchain.
func TestGoModStatesTheMinimum(t *testing.T) {
	b, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "go "); ok && v != "1.26" && v != "1.26.0" {
			t.Errorf("go.mod says go %s; want 1.26 (1.26.0, as go mod tidy writes it)", v)
		}
		if strings.HasPrefix(line, "toolchain ") {
			t.Errorf("go.mod pins a toolchain: %s", line)
		}
	}
}
