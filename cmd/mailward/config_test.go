package main

import (
	"os"
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
		"unknown key":  {"hostname: mx\nmilter:\n  lisen: inet:127.0.0.1:1\n", `bad.yaml:3:3: unknown key "milter.lisen" (did you mean "listen"?)`},
		"bad on_error": {"hostname: mx\non_error: maybe\n", `bad.yaml:2:1: on_error: "maybe": want tempfail or accept`},
		"bad listen":   {"milter:\n  listen: tcp4:1.2.3.4\n", `bad.yaml:2:3: milter.listen: "tcp4:1.2.3.4"`},
		"bad duration": {"timeouts:\n  checks: soon\n", `bad.yaml: 2: `},
		"bad mode":     {"milter:\n  socket_mode: rw\n", `bad.yaml:2:3: milter.socket_mode`},
	} {
		p := writeFile(t, dir, "bad.yaml", tc.yaml)
		_, err := loadConfig(p)
		if want := strings.Replace(tc.want, "bad.yaml", p, 1); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v\nwant it to contain %q", name, err, tc.want)
		}
	}
}
