package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/signing"
)

// keygen runs `mailward dkim keygen` and returns the key file and the
// record it printed, strings joined.
func keygen(t *testing.T, dir, domain, selector string, ed bool) (string, string) {
	t.Helper()
	file := filepath.Join(dir, domain+"."+selector+".key")
	args := []string{"dkim", "keygen", "--domain", domain, "--selector", selector, "--out", file}
	if ed {
		args = append(args, "--ed25519")
	}
	var out, errb bytes.Buffer
	if code := run(args, &out, &errb); code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, errb.String())
	}
	m := regexp.MustCompile(`(?s)` + regexp.QuoteMeta(selector+"._domainkey."+domain+". IN TXT (") + `(.*?)\)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("keygen printed no record for %s:\n%s", domain, out.String())
	}
	var rec strings.Builder
	for i, part := range strings.Split(m[1], `"`) {
		if i%2 == 1 {
			rec.WriteString(part)
		}
	}
	return file, rec.String()
}

func TestDKIMKeygen(t *testing.T) {
	dir := t.TempDir()
	for _, ed := range []bool{false, true} {
		file, rec := keygen(t, dir, "example.com", map[bool]string{false: "rsa", true: "ed"}[ed], ed)
		k, err := signing.ReadKey(file)
		if err != nil {
			t.Fatal(err)
		}
		if rec != signing.Record(k) {
			t.Errorf("printed record %q, want %q", rec, signing.Record(k))
		}
		if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
			t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
		}
		if want := map[bool]string{false: "k=rsa", true: "k=ed25519"}[ed]; !strings.Contains(rec, want) {
			t.Errorf("record %q lacks %s", rec, want)
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"dkim", "keygen", "--domain", "example.com", "--selector", "rsa", "--out", filepath.Join(dir, "example.com.rsa.key")}, &out, &errb); code == 0 {
		t.Error("keygen overwrote an existing key file")
	}
	if code := run([]string{"dkim", "keygen", "--domain", "example.com"}, &out, &errb); code != 2 {
		t.Error("keygen without --selector did not fail as misuse")
	}
	if code := run([]string{"dkim", "keygen", "--domain", "bad domain", "--selector", "s", "--out", filepath.Join(dir, "x")}, &out, &errb); code != 2 {
		t.Error("keygen took a bad domain")
	}
}

func TestDKIMTestkey(t *testing.T) {
	dir := t.TempDir()
	good, goodRec := keygen(t, dir, "good.example", "s1", false)
	edFile, edRec := keygen(t, dir, "good.example", "ed", true)
	stale, _ := keygen(t, dir, "stale.example", "s1", true)
	_, otherRec := keygen(t, dir, "other.example", "s1", true)
	dns := testenv.StartDNS(t, testenv.DKIMZone(map[string]string{
		"s1._domainkey.good.example":  goodRec,
		"ed._domainkey.good.example":  edRec,
		"s1._domainkey.stale.example": otherRec, // a key that is not the file's
	}))
	cfg := filepath.Join(dir, "mailward.yaml")
	write := func(keys string) {
		yaml := "dns: {servers: [\"" + dns.Addr() + "\"]}\nsigning:\n  keys:\n" + keys
		if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("    - {domain: good.example, selector: s1, key_file: " + filepath.Base(good) + "}\n" +
		"    - {domain: good.example, selector: ed, key_file: " + edFile + "}\n")
	var out, errb bytes.Buffer
	if code := run([]string{"dkim", "testkey", "--config", cfg}, &out, &errb); code != 0 {
		t.Fatalf("testkey on published keys: exit %d\n%s%s", code, out.String(), errb.String())
	}
	if n := strings.Count(out.String(), "key OK"); n != 2 {
		t.Errorf("want two keys OK:\n%s", out.String())
	}
	write("    - {domain: good.example, selector: s1, key_file: " + good + "}\n" +
		"    - {domain: stale.example, selector: s1, key_file: " + stale + "}\n" +
		"    - {domain: '*.missing.example', selector: s1, key_file: " + good + "}\n" +
		"    - {domain: good.example, selector: s2, key_file: nonexistent.key}\n")
	out.Reset()
	if code := run([]string{"dkim", "testkey", "--config", cfg}, &out, &errb); code != 1 {
		t.Fatalf("testkey with bad entries: exit %d, want 1\n%s", code, out.String())
	}
	for _, want := range []string{
		"s1._domainkey.good.example (good.example): key OK",
		"s1._domainkey.stale.example (stale.example): FAIL: s1._domainkey.stale.example publishes a different public key",
		"s1._domainkey.missing.example (*.missing.example): FAIL: looking up s1._domainkey.missing.example",
		"s2._domainkey.good.example (good.example): FAIL: reading key",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestSigningKeysDocumented: every key of the signing section, and every
// field of a key table entry, is in the README's config reference.
func TestSigningKeysDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	for _, f := range reflect.VisibleFields(reflect.TypeOf(signing.Config{})) {
		key := "`signing." + strings.Split(f.Tag.Get("yaml"), ",")[0] + "`"
		if !strings.Contains(text, key) {
			t.Errorf("README config reference lacks %s", key)
		}
	}
	row := text[strings.Index(text, "| `signing.keys` |"):]
	row = row[:strings.IndexByte(row, '\n')]
	for _, f := range reflect.VisibleFields(reflect.TypeOf(signing.KeyConfig{})) {
		if name := f.Tag.Get("yaml"); !strings.Contains(row, name) {
			t.Errorf("README's signing.keys row lacks the entry field %s", name)
		}
	}
}

// serve --check-config fails on a key file that cannot be loaded, and
// says where it is configured; serve itself would start.
func TestCheckConfigMissingKey(t *testing.T) {
	dir := t.TempDir()
	good, _ := keygen(t, dir, "example.com", "s1", true)
	cfg := writeFile(t, dir, "mailward.yaml", "hostname: mw.test.example\nsigning:\n  keys:\n"+
		"    - {domain: example.com, selector: s1, key_file: "+good+"}\n"+
		"    - {domain: example.com, selector: s2, key_file: missing.key}\n")
	var out, errb bytes.Buffer
	if code := run([]string{"serve", "--config", cfg, "--check-config"}, &out, &errb); code != 1 {
		t.Fatalf("check-config with a missing key: exit %d\n%s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), "mailward.yaml:5:") || !strings.Contains(errb.String(), "signing.keys[1].key_file: reading key") {
		t.Errorf("error does not point at the entry:\n%s", errb.String())
	}
}

// `mailward check` signs as serve would: an authenticated sender's
// message shows its DKIM-Signature among the headers added.
func TestCheckSigns(t *testing.T) {
	dir := t.TempDir()
	key, _ := keygen(t, dir, "example.com", "s1", true)
	dns := testenv.StartDNS(t, "$ORIGIN example.com.\n@ 300 IN SOA ns hostmaster 1 3600 600 86400 60\n")
	cfg := writeFile(t, dir, "mailward.yaml", "hostname: mw.test.example\ndns: {servers: [\""+dns.Addr()+"\"]}\n"+
		"signing:\n  internal_networks: []\n  keys: [{domain: example.com, selector: s1, key_file: "+key+"}]\n")
	msg := writeFile(t, dir, "m.eml", "From: a@example.com\nTo: b@example.net\nSubject: hi\n\nHello.\n")
	for _, tc := range []struct {
		auth   string
		signed bool
	}{{"alice", true}, {"", false}} {
		var out, errb bytes.Buffer
		args := []string{"check", "--config", cfg, "--ip", "192.0.2.1", "--from", "a@example.com", "--rcpt", "b@example.net", "--json", msg}
		if tc.auth != "" {
			args = append(args, "--auth-user", tc.auth)
		}
		if code := run(args, &out, &errb); code != 0 {
			t.Fatalf("check: exit %d\n%s%s", code, out.String(), errb.String())
		}
		if got := strings.Contains(out.String(), `"name": "DKIM-Signature"`); got != tc.signed {
			t.Errorf("auth user %q: signed %v, want %v:\n%s", tc.auth, got, tc.signed, out.String())
		}
	}
}
