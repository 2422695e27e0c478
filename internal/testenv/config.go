package testenv

import (
	"testing"

	"gopkg.in/yaml.v3"
)

// BaseConfig is the mailward config every test starts from: a fixed
// hostname (so the authserv-id is known) and only the fixture DNS
// server at dnsAddr, so that no test ever asks the internet.
func BaseConfig(dnsAddr string) string {
	return "hostname: mw.test.example\ndns:\n  servers: [\"" + dnsAddr + "\"]\n"
}

// Config merges YAML config fragments, later ones over earlier ones,
// section by section: Config(t, BaseConfig(addr), "dns:\n  timeout: 1s\n")
// keeps the servers and adds the timeout. Concatenated fragments would
// instead repeat the dns key, which the config loader refuses. A list
// or scalar in a later fragment replaces the earlier one whole.
func Config(t testing.TB, fragments ...string) string {
	t.Helper()
	var merged map[string]any
	for i, f := range fragments {
		var doc map[string]any
		if err := yaml.Unmarshal([]byte(f), &doc); err != nil {
			t.Fatalf("config fragment %d: %v\n%s", i+1, err, f)
		}
		merged = mergeMaps(merged, doc)
	}
	out, err := yaml.Marshal(merged)
	if err != nil {
		t.Fatalf("merging config fragments: %v", err)
	}
	return string(out)
}

func mergeMaps(dst, src map[string]any) map[string]any {
	if dst == nil {
		dst = map[string]any{}
	}
	for k, v := range src {
		sub, ok := v.(map[string]any)
		old, wasMap := dst[k].(map[string]any)
		if ok && wasMap {
			dst[k] = mergeMaps(old, sub)
			continue
		}
		dst[k] = v
	}
	return dst
}
