package signing

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailward/mailward/internal/testenv"
)

// testKeys caches generated keys: RSA generation is slow under -race.
var testKeys = map[string]crypto.Signer{}

func testKey(t testing.TB, name string) crypto.Signer {
	t.Helper()
	if k, ok := testKeys[name]; ok {
		return k
	}
	k, err := GenerateKey(strings.HasPrefix(name, "ed"), 0)
	if err != nil {
		t.Fatal(err)
	}
	testKeys[name] = k
	return k
}

// writeKey writes a key file into dir and returns its path.
func writeKey(t testing.TB, dir string, k crypto.Signer) string {
	t.Helper()
	pemData, err := MarshalKey(k)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(dir, "key-*.pem")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(pemData); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// rig is a key table over generated keys and the DNS records that
// publish them, by "selector._domainkey.domain".
type rig struct {
	table   *Table
	records map[string]string
}

func newRig(t testing.TB, cfg Config, keys ...string) *rig {
	t.Helper()
	dir := t.TempDir()
	r := &rig{records: map[string]string{}}
	if cfg.Keys == nil {
		for _, name := range keys {
			k := testKey(t, name)
			cfg.Keys = append(cfg.Keys, KeyConfig{Domain: "sender.example", Selector: name, KeyFile: writeKey(t, dir, k)})
			r.records[name+"._domainkey.sender.example"] = Record(k)
		}
	}
	tab, err := Load(cfg, dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.table = tab
	return r
}

func (r *rig) lookupTXT(name string) ([]string, error) {
	if rec, ok := r.records[strings.TrimSuffix(name, ".")]; ok {
		return []string{rec}, nil
	}
	return nil, errors.New("no such record")
}

// sign signs a header and body, writing the body in chunks of size n
// (0: at once), and returns the message as delivered.
func (r *rig) sign(t testing.TB, header []Field, body string, n int) string {
	t.Helper()
	from := ""
	for _, f := range header {
		if strings.EqualFold(f.Name, "From") {
			from = strings.TrimSpace(f.Raw)
		}
	}
	if i := strings.LastIndexByte(from, '<'); i >= 0 {
		from = strings.Trim(from[i:], "<>")
	}
	keys := r.table.Lookup(from)
	if len(keys) == 0 {
		t.Fatalf("no key for %q", from)
	}
	m := r.table.NewMessage(keys, from[strings.LastIndexByte(from, '@')+1:])
	b := []byte(body)
	for n > 0 && len(b) > n {
		m.Write(b[:n])
		b = b[n:]
	}
	m.Write(b)
	sigs, err := m.Sign(header, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, s := range sigs {
		out.WriteString("DKIM-Signature: " + s.Value + "\r\n")
	}
	for _, f := range header {
		out.WriteString(f.Name + ":" + f.Raw + "\r\n")
	}
	out.WriteString("\r\n" + body)
	return out.String()
}

// verify checks every signature with go-msgauth and returns how many passed.
func (r *rig) verify(t testing.TB, msg string) int {
	t.Helper()
	res, err := dkim.VerifyWithOptions(strings.NewReader(msg), &dkim.VerifyOptions{LookupTXT: r.lookupTXT})
	if err != nil {
		t.Fatalf("verifying: %v", err)
	}
	ok := 0
	for _, v := range res {
		if v.Err == nil {
			ok++
		} else {
			t.Logf("signature d=%s: %v", v.Domain, v.Err)
		}
	}
	return ok
}

func header(lines ...string) []Field {
	var out []Field
	for _, l := range lines {
		name, raw, _ := strings.Cut(l, ":")
		out = append(out, Field{Name: name, Raw: raw})
	}
	return out
}

var sampleHeader = header(
	"From: Alice <alice@sender.example>",
	"To: bob@rcpt.example,\r\n\tcarol@rcpt.example",
	"Subject:  A  folded\r\n  subject\t ",
	"Date: Thu, 03 Dec 2026 07:00:00 +0000",
	"Message-ID: <1@sender.example>",
	"MIME-Version: 1.0",
	"Content-Type: text/plain; charset=utf-8",
	"Content-Transfer-Encoding: 8bit",
	"X-Unsigned: not in h=",
)

var bodies = map[string]string{
	"plain":          "Hello Bob.\r\n",
	"empty":          "",
	"blank lines":    "\r\n\r\n",
	"trailing blank": "Hello.\r\n\r\n\r\n",
	"white space":    "  Hello \t Bob.  \r\n \t\r\nLast line\t\r\n",
	"8bit":           "Grüße aus Köln — ça va?\r\n日本語のテキスト\r\n",
	"no final crlf":  "Hello",
	"lone lf":        "a\nb\nc\r\n",
}

func TestSignVerifies(t *testing.T) {
	for _, canon := range []string{"relaxed/relaxed", "relaxed/simple", "simple/relaxed", "simple/simple"} {
		for _, alg := range []string{"rsa1", "ed1"} {
			r := newRig(t, Config{Canonicalization: canon}, alg)
			for name, body := range bodies {
				for _, chunk := range []int{0, 1, 7} {
					msg := r.sign(t, sampleHeader, body, chunk)
					if r.verify(t, msg) != 1 {
						t.Errorf("%s %s body %q chunks of %d: signature does not verify:\n%s", canon, alg, name, chunk, msg)
					}
				}
			}
		}
	}
}

func TestSignBothKeysAtOnce(t *testing.T) {
	r := newRig(t, Config{}, "rsa1", "ed1")
	msg := r.sign(t, sampleHeader, bodies["8bit"], 0)
	if n := strings.Count(msg, "DKIM-Signature:"); n != 2 {
		t.Fatalf("%d signatures, want an RSA and an Ed25519 one:\n%s", n, msg)
	}
	if !strings.Contains(msg, "a=rsa-sha256") || !strings.Contains(msg, "a=ed25519-sha256") {
		t.Fatalf("want both algorithms:\n%s", msg)
	}
	if ok := r.verify(t, msg); ok != 2 {
		t.Fatalf("%d of 2 signatures verify", ok)
	}
}

// Over-signed fields cannot be added in transit; the others can.
func TestOversigning(t *testing.T) {
	r := newRig(t, Config{Oversign: []string{"Reply-To"}}, "ed1")
	msg := r.sign(t, sampleHeader, "Hi.\r\n", 0)
	if !strings.Contains(msg, "h=From:From:") {
		t.Fatalf("From is not over-signed:\n%s", msg)
	}
	for _, added := range []string{"From: Mallory <m@evil.example>", "Subject: changed", "Reply-To: m@evil.example", "Date: Fri, 04 Dec 2026 00:00:00 +0000", "Message-ID: <2@evil.example>", "To: m@evil.example"} {
		tampered := strings.Replace(msg, "\r\n\r\n", "\r\n"+added+"\r\n\r\n", 1)
		if r.verify(t, tampered) != 0 {
			t.Errorf("adding %q left the signature valid", added)
		}
	}
	tampered := strings.Replace(msg, "\r\n\r\n", "\r\nX-Added: fine\r\n\r\n", 1)
	if r.verify(t, tampered) != 1 {
		t.Error("adding an unsigned field broke the signature")
	}
	if r.verify(t, strings.Replace(msg, "Hi.", "Ho.", 1)) != 0 {
		t.Error("a changed body still verifies")
	}
}

func TestExpiry(t *testing.T) {
	r := newRig(t, Config{Expire: 48 * time.Hour}, "ed1")
	msg := r.sign(t, sampleHeader, "Hi.\r\n", 0)
	want := fmt.Sprintf("x=%d", time.Now().Add(48*time.Hour).Unix())
	if !strings.Contains(msg, want[:len(want)-2]) {
		t.Fatalf("no x= two days ahead (%s...):\n%s", want, msg)
	}
	r2 := newRig(t, Config{}, "ed1")
	if msg := r2.sign(t, sampleHeader, "Hi.\r\n", 0); strings.Contains(msg, " x=") {
		t.Fatalf("x= without signing.expire:\n%s", msg)
	}
}

func TestSignRefusesNoOrTwoFroms(t *testing.T) {
	r := newRig(t, Config{}, "ed1")
	keys := r.table.Lookup("alice@sender.example")
	for _, h := range [][]Field{header("Subject: x"), header("From: a@sender.example", "From: b@sender.example")} {
		m := r.table.NewMessage(keys, "sender.example")
		if _, err := m.Sign(h, time.Now()); err == nil {
			t.Errorf("signed a header with %d From fields", countFold(h, "From"))
		}
	}
}

// TestIndependentVerifiers checks the signatures with dkimpy and with
// libopendkim, which share no code with go-msgauth or each other, for
// both algorithms.
func TestIndependentVerifiers(t *testing.T) {
	r := newRig(t, Config{}, "rsa1", "ed1")
	for name, body := range bodies {
		msg := []byte(r.sign(t, sampleHeader, body, 3))
		if n := testenv.VerifyDKIMPy(t, msg, r.records); n != 2 {
			t.Errorf("body %q: dkimpy verified %d of 2 signatures:\n%s", name, n, msg)
		}
	}
	for _, alg := range []string{"rsa1", "ed1"} {
		r := newRig(t, Config{}, alg)
		msg := []byte(r.sign(t, sampleHeader, bodies["8bit"], 0))
		if err := testenv.VerifyOpenDKIM(t, msg, r.records); err != nil {
			t.Errorf("%s: %v\n%s", alg, err, msg)
		}
		bad := bytes.Replace(msg, []byte("Grüße"), []byte("Grüsse"), 1)
		if err := testenv.VerifyOpenDKIM(t, bad, r.records); err == nil {
			t.Errorf("%s: opendkim-testmsg passes a changed body", alg)
		}
	}
}

// BenchmarkSign is the signing package's share of one message: an 8 KiB
// body hashed and the header signed.
func BenchmarkSign(b *testing.B) {
	var body strings.Builder
	for body.Len() < 8<<10 {
		body.WriteString("A line of an ordinary outbound message, with some words in it.\r\n")
	}
	for _, alg := range []string{"ed1", "rsa1"} {
		b.Run(alg, func(b *testing.B) {
			r := newRig(b, Config{}, alg)
			keys := r.table.Lookup("alice@sender.example")
			data := []byte(body.String())
			b.ReportAllocs()
			for b.Loop() {
				m := r.table.NewMessage(keys, "sender.example")
				m.Write(data)
				if _, err := m.Sign(sampleHeader, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A name listed twice in signing.headers is signed as if listed once.
func TestHeadersListedTwice(t *testing.T) {
	r := newRig(t, Config{Headers: []string{"From", "Subject", "from", "X-Unsigned"}}, "ed1")
	msg := r.sign(t, sampleHeader, "Hi.\r\n", 0)
	if !strings.Contains(msg, "h=From:From:Subject:Subject:X-Unsigned:") {
		t.Fatalf("h= not as listed once:\n%s", msg)
	}
	if r.verify(t, msg) != 1 {
		t.Fatalf("does not verify:\n%s", msg)
	}
}

// Thousands of fields of one name: at most maxPerName are signed and the
// signature verifies.
func TestManyFieldsOfOneName(t *testing.T) {
	r := newRig(t, Config{}, "ed1")
	h := append([]Field(nil), sampleHeader...)
	for i := range 5000 {
		h = append(h, Field{Name: "To", Raw: fmt.Sprintf(" r%d@rcpt.example", i)})
	}
	msg := r.sign(t, h, "Hi.\r\n", 0)
	i := strings.Index(msg, "h=")
	hTag := msg[i : i+strings.Index(msg[i:], ";")]
	if n := strings.Count(hTag, "To"); n != maxPerName {
		t.Errorf("%d To in h=, want %d", n, maxPerName)
	}
	if r.verify(t, msg) != 1 {
		t.Error("does not verify")
	}
}
