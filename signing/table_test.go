package signing

import (
	"bytes"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailward/mailward/internal/testenv"
)

func TestLookupPatterns(t *testing.T) {
	dir := t.TempDir()
	file := writeKey(t, dir, testKey(t, "ed1"))
	cfg := Config{Keys: []KeyConfig{
		{Domain: "example.com", Selector: "exact", KeyFile: file},
		{Domain: "example.com", Selector: "exact2", KeyFile: file},
		{Domain: "*.example.com", Selector: "sub", KeyFile: file},
		{Domain: ".dept.example.com", Selector: "dept", KeyFile: file},
		{Domain: "ceo@example.com", Selector: "ceo", KeyFile: file},
		{Domain: "*@other.example", Selector: "other", KeyFile: file},
		{Domain: "*", Selector: "any", KeyFile: file, SigningDomain: ""},
	}}
	tab, err := Load(cfg, dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ from, want, sdid string }{
		{"alice@example.com", "exact exact2", "example.com"},
		{"<Alice@EXAMPLE.com>", "exact exact2", "example.com"},
		{"ceo@example.com", "ceo", "example.com"},
		{"a@mail.example.com", "sub", "example.com"},
		{"a@x.dept.example.com", "dept", "dept.example.com"},
		{"a@dept.example.com", "sub", "example.com"},
		{"a@other.example", "other", "other.example"},
		{"a@unrelated.example", "any", "unrelated.example"},
		{"no-domain", "", ""},
	} {
		keys := tab.Lookup(tc.from)
		var sels []string
		for _, k := range keys {
			sels = append(sels, k.Selector)
		}
		if got := strings.Join(sels, " "); got != tc.want {
			t.Errorf("Lookup(%q) = %q, want %q", tc.from, got, tc.want)
		}
		if len(keys) > 0 {
			dom := tc.from[strings.LastIndexByte(tc.from, '@')+1:]
			if got := keys[0].SDID(strings.ToLower(strings.Trim(dom, "<>"))); got != tc.sdid {
				t.Errorf("Lookup(%q): d=%s, want %s", tc.from, got, tc.sdid)
			}
		}
	}
}

func TestInternalNetworks(t *testing.T) {
	tab, err := Load(DefaultConfig(), ".", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]bool{"127.0.0.1": true, "::1": true, "::ffff:127.0.0.2": true, "192.0.2.1": false} {
		if got := tab.Internal(netip.MustParseAddr(ip)); got != want {
			t.Errorf("Internal(%s) = %v", ip, got)
		}
	}
	tab, _ = Load(Config{InternalNetworks: []string{"192.0.2.0/24", "2001:db8::1"}}, ".", nil, nil)
	if !tab.Internal(netip.MustParseAddr("192.0.2.9")) || !tab.Internal(netip.MustParseAddr("2001:db8::1")) || tab.Internal(netip.MustParseAddr("127.0.0.1")) {
		t.Error("signing.internal_networks not applied as written")
	}
}

func TestConfigProblems(t *testing.T) {
	cfg := Config{
		InternalNetworks: []string{"10.0.0.0/33"},
		Canonicalization: "loose/relaxed",
		Headers:          []string{"Subject"},
		Oversign:         []string{"Bad Name", "DKIM-Signature"},
		Expire:           -1,
		OnMissingKey:     "drop",
		Keys:             []KeyConfig{{Domain: "a b", Selector: "", KeyFile: ""}, {Domain: "x.example", Selector: "s", KeyFile: "k", SigningDomain: "bad_.."}},
	}
	var keys []string
	for _, p := range cfg.Problems() {
		keys = append(keys, p.Key)
	}
	want := "internal_networks canonicalization oversign oversign headers expire on_missing_key keys[0].domain keys[0].selector keys[0].key_file keys[1].signing_domain"
	if got := strings.Join(keys, " "); got != want {
		t.Errorf("problems at %q\nwant        %q", got, want)
	}
	if _, err := Load(cfg, ".", nil, nil); err == nil || !strings.Contains(err.Error(), "signing.on_missing_key") {
		t.Errorf("Load: %v", err)
	}
	if ps := DefaultConfig().Problems(); len(ps) != 0 {
		t.Errorf("the defaults have problems: %v", ps)
	}
}

// A key file that cannot be read at reload keeps the key loaded before;
// at first load the entry has no key.
func TestLoadKeepsOldKey(t *testing.T) {
	dir := t.TempDir()
	k := testKey(t, "ed1")
	file := writeKey(t, dir, k)
	cfg := Config{Keys: []KeyConfig{{Domain: "sender.example", Selector: "s1", KeyFile: filepath.Base(file)}}}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	first, err := Load(cfg, dir, nil, log)
	if err != nil || !first.Keys()[0].Usable() {
		t.Fatalf("first load: %v", err)
	}
	os.WriteFile(file, []byte("garbage"), 0o600)
	second, err := Load(cfg, dir, first, log)
	if err != nil {
		t.Fatal(err)
	}
	if !second.Keys()[0].Usable() || PublicKeyData(second.Keys()[0].Signer()) != PublicKeyData(k) {
		t.Fatal("the unreadable key file dropped the key loaded before")
	}
	if !strings.Contains(logs.String(), "keeping the key loaded before") {
		t.Errorf("not logged:\n%s", logs.String())
	}
	fresh, err := Load(cfg, dir, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Keys()[0].Usable() || fresh.Keys()[0].Err == nil {
		t.Fatal("a garbage key file gave a key")
	}
	if keys := fresh.Lookup("a@sender.example"); len(keys) != 1 || keys[0].Usable() {
		t.Fatal("the entry without a key must still match, so the key counts as missing")
	}
}

func TestParseKeyFormats(t *testing.T) {
	small := "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\nKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQJAIJLixBy2qpFoS4DSmoEm\no3qGy0t6z09AIJtH+5OeRV1be+N4cDYJKffGzDa88vQENZiRm0GRq6a+HPGQMd2k\nTQIhAKMSvzIBnni7ot/OSie2TmJLY4SwTQAevXysE2RbFDYdAiEBCUEaRQnMnbp7\n9mxDXDf6AU0cN/RPBjb9qSHDcWZHGzUCIG2Es59z8ugGrDY+pxLQnwfotadxd+Uy\nv/Ow5T0q5gIJAiEAyS4RaI9YG8EWx/2w0T67ZUVAw8eOMB6BIUg0Xcu+3okCIBOs\n/5OiPgoTdSy7bcF9IGpSE8ZgGKzgYQVZeN97YE00\n-----END RSA PRIVATE KEY-----\n"
	if _, err := ParseKey([]byte(small)); err == nil || !strings.Contains(err.Error(), "at least 2048") {
		t.Errorf("a 512-bit RSA key: %v", err)
	}
	for _, bad := range []string{"", "junk", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"} {
		if _, err := ParseKey([]byte(bad)); err == nil {
			t.Errorf("ParseKey(%q) gave a key", bad)
		}
	}
	ed := testKey(t, "ed1")
	pemData, _ := MarshalKey(ed)
	if k, err := ParseKey(pemData); err != nil || PublicKeyData(k) != PublicKeyData(ed) {
		t.Errorf("PKCS#8 Ed25519: %v", err)
	}
}

// A key made by opendkim-genkey (PKCS#1 RSA) loads, and its .txt record
// carries the same public key as ours.
func TestOpenDKIMGenkeyKey(t *testing.T) {
	bin := testenv.Require(t, "opendkim-genkey")
	dir := t.TempDir()
	if out, err := exec.Command(bin, "-b", "2048", "-d", "example.com", "-s", "sel", "-D", dir).CombinedOutput(); err != nil {
		t.Fatalf("opendkim-genkey: %v\n%s", err, out)
	}
	k, err := ReadKey(filepath.Join(dir, "sel.private"))
	if err != nil {
		t.Fatal(err)
	}
	txt, err := os.ReadFile(filepath.Join(dir, "sel.txt"))
	if err != nil {
		t.Fatal(err)
	}
	// The zone text splits p= over strings: join them.
	var joined strings.Builder
	for i, part := range strings.Split(string(txt), "\"") {
		if i%2 == 1 {
			joined.WriteString(part)
		}
	}
	if !strings.Contains(joined.String(), "p="+PublicKeyData(k)) {
		t.Errorf("opendkim-genkey's record %q lacks our p=%s", joined.String(), PublicKeyData(k))
	}
}
