package main

import (
	"os"

	"github.com/mailward/mailward/cache"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Milter.Listen != "inet:127.0.0.1:8891" || cfg.OnError != "tempfail" || cfg.Hostname == "" {
		t.Fatalf("defaults = %+v", cfg)
	}
}

func TestLoadConfigErrorsNameFileLineKey(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct{ yaml, want string }{
		"unknown key":        {"hostname: mx\nmilter:\n  lisen: inet:127.0.0.1:1\n", `bad.yaml:3:3: unknown key "milter.lisen" (did you mean "listen"?)`},
		"bad on_error":       {"hostname: mx\non_error: maybe\n", `bad.yaml:2:1: on_error: "maybe": want tempfail or accept`},
		"bad listen":         {"milter:\n  listen: tcp4:1.2.3.4\n", `bad.yaml:2:3: milter.listen: "tcp4:1.2.3.4"`},
		"bad duration":       {"timeouts:\n  checks: soon\n", `bad.yaml:2:11: timeouts.checks: "soon": want a duration such as 30s, 5m or 1h`},
		"bad cache duration": {"greylist:\n  delay: 1y\n", `bad.yaml:2:10: greylist.delay: "1y": want a duration`},
		"bad redis address":  {"cache:\n  type: redis\n  redis:\n    addrs: [\"127.0.0.1:6379\", \"nohost\"]\n", `bad.yaml:4:31: cache.redis.addrs[1]: "nohost": want host:port`},
		"bad number":         {"policy:\n  max_instances: lots\n", `bad.yaml:2:18: policy.max_instances: "lots": want a whole number`},
		"bad policy":         {"policy:\n  listen: inet:127.0.0.1\n", `bad.yaml:2:3: policy.listen: "inet:127.0.0.1": want inet:HOST:PORT`},
		"bad dkim":           {"dkim:\n  min_rsa_bits: 512\n", `bad.yaml:2:3: dkim.min_rsa_bits: 512 is under 1024`},
		"bad dnsbl":          {"dnsbl:\n  zones:\n    - zone: nodot\n", `bad.yaml:3:7: dnsbl.zones[0].zone: "nodot" is not a domain name`},
		"bad uribl":          {"uribl:\n  zones:\n    - zone: multi.test\n      max_queries: -1\n", `bad.yaml:4:7: uribl.zones[0].max_queries: must not be negative`},
		"bad uribl bitmask":  {"uribl:\n  zones:\n    - zone: multi.test\n      bitmask: {2: black, 300: x}\n", `bad.yaml:4:27: uribl.zones[0].bitmask.300: 300 is not a bitmask`},
		"uribl zone twice":   {"uribl:\n  zones:\n    - zone: multi.test\n    - zone: Multi.Test.\n", `bad.yaml:4:7: uribl.zones[1].zone: zone multi.test is listed twice`},
		"smtp unset":         {"smtp:\n  listen: 127.0.0.1:2525\n", `bad.yaml:1:1: smtp.upstream: required`},
		"mis-indented":       {"hostname: mx.example\nmilter:\n  listen: inet:127.0.0.1:1\n socket_mode: \"0660\"\n", `bad.yaml:4:2: `},
		"tab":                {"hostname: mx.example\nmilter:\n\tlisten: inet:127.0.0.1:1\n", `bad.yaml:3:1: tab character`},
		"bad mode":           {"milter:\n  socket_mode: rw\n", `bad.yaml:2:3: milter.socket_mode`},
		"bad mime depth":     {"limits:\n  mime_depth: 0\n", `bad.yaml:2:3: limits.mime_depth: must be at least 1`},
		"bad text bound":     {"content:\n  max_text_bytes: 0\n", `bad.yaml:2:3: content.max_text_bytes: 0: must be from 1 to 67108864`},
		"bad url bound":      {"content:\n  enabled: true\n  max_urls: 20000\n", `bad.yaml:3:3: content.max_urls: 20000: must be from 1 to 10000`},
		"bad content key":    {"content:\n  max_url: 5\n", `bad.yaml:2:3: unknown key "content.max_url" (did you mean "max_urls"?)`},
		"bad cpu budget":     {"limits:\n  message_cpu: -1s\n", `limits.message_cpu: must be a positive duration`},
		"bad smtp auth":      {"smtp:\n  listen: 127.0.0.1:2525\n  upstream: 127.0.0.1:25\n  auth: yes\n", `bad.yaml:4:3: smtp.auth: "yes": want off, relay or dovecot`},
		"bad auth limit":     {"smtp:\n  listen: 127.0.0.1:2525\n  upstream: 127.0.0.1:25\n  auth_fail_limit: -2\n", `bad.yaml:4:3: smtp.auth_fail_limit: must not be negative`},
		"bad junk budget":    {"smtp:\n  listen: 127.0.0.1:2525\n  upstream: 127.0.0.1:25\n  max_junk_commands: -1\n", `bad.yaml:4:3: smtp.max_junk_commands: must not be negative`},
	} {
		p := writeFile(t, dir, "bad.yaml", tc.yaml)
		_, err := loadConfig(p)
		if want := strings.Replace(tc.want, "bad.yaml", p, 1); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v\nwant it to contain %q", name, err, tc.want)
		}
	}
}

// TestCheckConfigRunsServesValidation: what serve refuses, --check-config
// refuses too, naming the key.
func TestCheckConfigRunsServesValidation(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ yaml, want string }{
		{"milter:\n  listen: inet:127.0.0.1\n", `milter.listen: "inet:127.0.0.1": want inet:HOST:PORT`},
		{"milter:\n  listen: inet:127.0.0.1:99999\n", "milter.listen: \"inet:127.0.0.1:99999\": port 99999 is not from 1 to 65535"},
		{"admin:\n  listen: localhost\n", `admin.listen: "localhost": want HOST:PORT`},
		{"smtp:\n  listen: 127.0.0.1:70000\n  upstream: 127.0.0.1:25\n", "smtp.listen"},
		{"smtp:\n  listen: 127.0.0.1:2525\n  upstream: 127.0.0.1:25\n  tls_cert: /nonexistent.pem\n  tls_key: /nonexistent.key\n", "smtp.tls_cert: loading"},
		{"milter:\n  listen: \"\"\n", "nothing to serve"},
		{"rules:\n  files: [\"rules.d/*.yaml\"]\n", "rules.d does not exist"},
		{"cache:\n  type: memory\n  redis:\n    addrs: [\"127.0.0.1:6379\"]\n", "bad.yaml:5:5: cache.redis.addrs: set, but cache.type is memory"},
	} {
		p := writeFile(t, dir, "bad.yaml", "hostname: mx.example\n"+tc.yaml)
		var out, errb strings.Builder
		code := run([]string{"serve", "--config", p, "--check-config"}, &out, &errb)
		if code == 0 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want it to contain %q", tc.yaml, code, errb.String(), tc.want)
		}
	}
}

func TestCheckConfigWarnsOfEmptyGlobAndShortHostname(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "rules.d"), 0o755)
	p := writeFile(t, dir, "mw.yaml", "hostname: mx\nrules:\n  files: [\"rules.d/*.yaml\"]\n")
	var out, errb strings.Builder
	if code := run([]string{"serve", "--config", p, "--check-config"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{filepath.Join(dir, "rules.d/*.yaml") + ": warning: no rule files match", `mw.yaml:1:1: hostname "mx" has no dot`} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errb.String())
		}
	}
}

// TestRedisSectionSelectsRedis: addresses under cache.redis without a
// type mean Redis, not a memory cache each instance counts in alone.
func TestRedisSectionSelectsRedis(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "redis.pass", "s3cret\n")
	cfg, err := loadConfig(writeFile(t, dir, "mw.yaml", "cache:\n  redis:\n    addrs: [\"127.0.0.1:6379\"]\n    password_file: redis.pass\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cache.Type != cache.TypeRedis {
		t.Errorf("cache.type = %q, want redis", cfg.Cache.Type)
	}
	if cfg.Cache.Redis.PasswordFile != filepath.Join(dir, "redis.pass") {
		t.Errorf("password_file = %q: not relative to the config file", cfg.Cache.Redis.PasswordFile)
	}
	if _, err := loadConfig(writeFile(t, dir, "mw.yaml", "cache:\n  redis:\n    addrs: [\"127.0.0.1:6379\"]\n    password: x\n    password_file: redis.pass\n")); err == nil || !strings.Contains(err.Error(), "cache.redis.password_file: password and password_file exclude each other") {
		t.Errorf("password and password_file: %v", err)
	}
	if _, err := loadConfig(writeFile(t, dir, "mw.yaml", "cache:\n  redis:\n    addrs: [\"127.0.0.1:6379\"]\n    password_file: absent\n")); err == nil || !strings.Contains(err.Error(), "mw.yaml:4:5: cache.redis.password_file: ") {
		t.Errorf("missing password_file: %v", err)
	}
}

func TestDefaultHostnameIsFullyQualified(t *testing.T) {
	host, err := os.Hostname()
	if err != nil || strings.Contains(host, ".") {
		t.Skip("the host name is already qualified")
	}
	hosts := writeFile(t, t.TempDir(), "hosts", "127.0.0.1 localhost\n# 10.0.0.1 "+host+".wrong.example\n127.0.1.1 "+host+".mx.example "+host+"\n")
	if got := defaultHostname(hosts); got != host+".mx.example" {
		t.Errorf("defaultHostname = %q, want %s.mx.example", got, host)
	}
	hosts = writeFile(t, t.TempDir(), "hosts", "127.0.0.1 localhost "+host+"\n")
	if got := defaultHostname(hosts); got != host {
		t.Errorf("defaultHostname without a qualified name = %q", got)
	}
	cfg := defaultConfig()
	cfg.Hostname = host
	if w := cfg.warnings(); len(w) != 1 || !strings.Contains(w[0], "has no dot") {
		t.Errorf("warnings = %q", w)
	}
}
