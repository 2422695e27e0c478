package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/dmarc"
	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/checks/iprev"
	"github.com/mailward/mailward/checks/spf"
	"github.com/mailward/mailward/checks/uribl"
	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
)

// The fields of `check --json`, as README.md documents them.
var checkJSONFields = map[string][]string{
	"":                {"file", "action", "smtp_code", "enhanced_code", "message", "reason", "stage", "rcpts", "spf", "spf_helo", "dkim", "dmarc", "iprev", "dnsbl", "uribl", "urls", "content", "rules", "matches", "score", "headers_added", "headers_removed", "stages"},
	"spf":             {"result", "domain", "identity", "explanation", "reason"},
	"dkim":            {"result", "domain", "selector", "algorithm", "identifier", "reason"},
	"dmarc":           {"result", "policy", "domain", "policy_domain", "org_domain", "testing", "reason", "spf_aligned", "dkim_aligned"},
	"iprev":           {"result", "ptr", "names", "fcrdns"},
	"dnsbl":           {"zone", "query", "codes", "names", "allow", "error"},
	"uribl":           {"zone", "query", "codes", "names", "allow", "error"},
	"rcpts":           {"rcpt", "action", "code"},
	"matches":         {"rule", "action", "stage", "monitor", "score", "unknown"},
	"stages":          {"stage", "subject", "action", "reply"},
	"headers_added":   {"name", "value", "replace"},
	"headers_removed": {"name", "index"},
	"urls":            {"scheme", "host", "domain", "path"},
	"content":         {"html", "text_parts", "text_bytes", "url_count", "phish_links", "from_display_mismatch", "limit"},
}

func keysOf(t *testing.T, v any) []string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s is not an object", b)
	}
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func wantKeys(t *testing.T, what string, v any) {
	t.Helper()
	want := slices.Clone(checkJSONFields[what])
	slices.Sort(want)
	if got := keysOf(t, v); !slices.Equal(got, want) {
		t.Errorf("%s %v: fields %v, want %v", what, v, got, want)
	}
}

// Every result of every check has every documented field, empty ones too.
func TestCheckJSONSchemaPerResult(t *testing.T) {
	for _, r := range []string{"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"} {
		wantKeys(t, "spf", everyField(t, &spf.Result{Result: r}))
	}
	for _, r := range []string{"pass", "fail", "neutral", "policy", "temperror", "permerror", "none"} {
		wantKeys(t, "dkim", everyField(t, dkim.Result{Result: r}))
	}
	for _, r := range []string{"pass", "fail", "none", "temperror", "permerror"} {
		wantKeys(t, "dmarc", everyField(t, &dmarc.Result{Result: r}))
	}
	for _, r := range []string{"pass", "fail", "temperror", "permerror"} {
		wantKeys(t, "iprev", everyField(t, &iprev.Result{Result: r}))
	}
	wantKeys(t, "dnsbl", everyField(t, dnsbl.Result{Zone: "zen.test", Error: "timed out"}))
	wantKeys(t, "dnsbl", everyField(t, dnsbl.Result{Zone: "zen.test", Codes: []string{"127.0.0.2"}}))
	wantKeys(t, "uribl", everyField(t, uribl.Result{Zone: "multi.test", Query: "spam.example", Codes: []string{"127.0.0.2"}}))
	// Nothing is left out, and nothing stands for nothing as [] or null.
	if got := string(everyField(t, policy.Results{IPRev: &iprev.Result{Result: "fail"}})); got != `{"iprev":{"result":"fail","ptr":"","names":[],"fcrdns":false},"dnsbl":[],"spf_helo":null,"spf":null,"dkim":[],"dmarc":null,"uribl":[]}` {
		t.Errorf("results: %s", got)
	}
}

func everyField(t *testing.T, v any) json.RawMessage {
	t.Helper()
	var b bytes.Buffer
	if err := writeEveryField(&b, reflect.ValueOf(v)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// The same holds end to end, for a message whose checks all fail for
// want of DNS (accepted by on_error, so that it gets its headers).
func TestCheckJSONSchema(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	dir := t.TempDir()
	writeFile(t, dir, "r.yaml", "rules:\n  - name: tag\n    when: 'true'\n    action: add_header\n    header: {name: X-Seen, value: yes}\n")
	cfg := writeFile(t, dir, "mailward.yaml", "hostname: mw.test\non_error: accept\ndmarc:\n  on_temperror: accept\nrules:\n  files: [r.yaml]\ndnsbl:\n  zones: [{zone: zen.test}]\n")
	msg := "From: Alice <alice@shop.example>\r\nTo: bob@rcpt.example\r\nSubject: hello\r\n\r\nSee https://Shop.example/offer.\r\n"
	eml := writeFile(t, dir, "m.eml", testenv.SignDKIM(t, msg, "shop.example", "s1", key))
	var out, errb bytes.Buffer
	if code := run([]string{"check", "--config", cfg, "--dns", "127.0.0.1:1", "--ip", "192.0.2.10", "--helo", "mail.shop.example",
		"--from", "alice@shop.example", "--rcpt", "bob@rcpt.example", "--json", eml}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rep map[string]json.RawMessage
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	wantKeys(t, "", rep)
	obj := func(name string) map[string]any {
		var m map[string]any
		if err := json.Unmarshal(rep[name], &m); err != nil || m == nil {
			t.Fatalf("%s: %s", name, rep[name])
		}
		return m
	}
	list := func(name string) []map[string]any {
		var l []map[string]any
		if err := json.Unmarshal(rep[name], &l); err != nil || l == nil {
			t.Fatalf("%s: want a list, got %s", name, rep[name])
		}
		return l
	}
	for _, name := range []string{"spf", "spf_helo", "dmarc", "iprev"} {
		m := obj(name)
		if m["result"] != "temperror" {
			t.Errorf("%s with DNS down: %v", name, m)
		}
		wantKeys(t, strings.TrimSuffix(name, "_helo"), m)
	}
	if d := list("dkim"); len(d) != 1 || d[0]["result"] != "temperror" {
		t.Errorf("dkim: %v", d)
	} else {
		wantKeys(t, "dkim", d[0])
	}
	if d := list("dnsbl"); len(d) != 1 || d[0]["error"] == "" {
		t.Errorf("dnsbl: %v", d)
	} else {
		wantKeys(t, "dnsbl", d[0])
	}
	for _, name := range []string{"rcpts", "matches", "stages", "headers_added"} {
		l := list(name)
		if len(l) == 0 {
			t.Errorf("%s is empty", name)
		}
		for _, e := range l {
			wantKeys(t, name, e)
		}
	}
	var names []string
	if err := json.Unmarshal(rep["rules"], &names); err != nil || names == nil {
		t.Errorf("rules: %s", rep["rules"])
	}
	list("headers_removed")
	wantKeys(t, "content", obj("content"))
	if l := list("urls"); len(l) != 1 || l[0]["host"] != "shop.example" {
		t.Errorf("urls: %v", l)
	} else {
		wantKeys(t, "urls", l[0])
	}
}
