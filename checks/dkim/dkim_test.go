//go:debug rsa1024min=0

// The directive above lets the tests make 512-bit RSA keys, which must fail.

package dkim_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"

	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/internal/testenv"
)

const soa = "example.com. 300 IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 300\n" +
	"example.net. 300 IN SOA ns.example.net. hostmaster.example.net. 1 3600 600 86400 300\n"

const message = "From: Joe SixPack <joe@example.com>\r\n" +
	"To: Suzie Q <suzie@example.net>\r\n" +
	"Subject: Is dinner ready?\r\n" +
	"Date: Fri, 11 Jul 2003 21:00:37 -0700\r\n" +
	"Message-ID: <20030712040037.46341.5F8J@example.com>\r\n" +
	"\r\n" +
	"Hi.\r\n" +
	"\r\n" +
	"We lost the game.  Are you hungry yet?\r\n" +
	"\r\n" +
	"Joe.\r\n"

// keys are made once: RSA generation is slow under the race detector.
var keys struct {
	once                          sync.Once
	rsa2048, rsa1024, rsa512, alt *rsa.PrivateKey
	ed                            ed25519.PrivateKey
}

func testKeys(t testing.TB) {
	t.Helper()
	keys.once.Do(func() {
		gen := func(bits int) *rsa.PrivateKey {
			k, err := rsa.GenerateKey(rand.Reader, bits)
			if err != nil {
				panic(fmt.Sprintf("generating %d-bit RSA key: %v", bits, err))
			}
			return k
		}
		keys.rsa2048, keys.rsa1024, keys.rsa512, keys.alt = gen(2048), gen(1024), gen(512), gen(2048)
		_, keys.ed, _ = ed25519.GenerateKey(rand.Reader)
	})
	if keys.rsa2048 == nil || keys.ed == nil {
		t.Fatal("test keys were not generated")
	}
}

// keyRecord is the TXT record publishing pub, split into strings of at
// most 255 bytes as the zone file format needs.
func keyRecord(t testing.TB, name string, pub crypto.PublicKey) string {
	t.Helper()
	var p, k string
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		p, k = base64.StdEncoding.EncodeToString(der), "rsa"
	case ed25519.PublicKey:
		p, k = base64.StdEncoding.EncodeToString(pub), "ed25519"
	default:
		t.Fatalf("unknown key type %T", pub)
	}
	return txtRR(name, "v=DKIM1; k="+k+"; p="+p)
}

func txtRR(name, text string) string {
	var parts []string
	for len(text) > 200 {
		parts = append(parts, `"`+text[:200]+`"`)
		text = text[200:]
	}
	parts = append(parts, `"`+text+`"`)
	return name + " 300 IN TXT " + strings.Join(parts, " ") + "\n"
}

// zone publishes the test keys under example.com.
func zone(t testing.TB) string {
	testKeys(t)
	return soa +
		keyRecord(t, "rsa2048._domainkey.example.com.", keys.rsa2048.Public()) +
		keyRecord(t, "rsa1024._domainkey.example.com.", keys.rsa1024.Public()) +
		keyRecord(t, "rsa512._domainkey.example.com.", keys.rsa512.Public()) +
		keyRecord(t, "alt._domainkey.example.net.", keys.alt.Public()) +
		keyRecord(t, "ed._domainkey.example.com.", keys.ed.Public()) +
		keyRecord(t, "broken._domainkey.example.com.", keys.alt.Public()) + // not the key that signs
		"revoked._domainkey.example.com. 300 IN TXT \"v=DKIM1; k=rsa; p=\"\n" +
		"nodata._domainkey.example.com. 300 IN A 192.0.2.1\n"
}

func start(t testing.TB, zone string) (*resolver.Resolver, *testenv.DNSServer) {
	t.Helper()
	srv := testenv.StartDNS(t, zone)
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 300 * time.Millisecond, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	return r, srv
}

type signOpts struct {
	domain, selector string
	key              crypto.Signer
	canon            msgdkim.Canonicalization
	expires          time.Time
	headers          []string
}

// sign returns msg with a DKIM-Signature prepended, made by go-msgauth.
func sign(t testing.TB, msg string, o signOpts) string {
	t.Helper()
	if o.canon == "" {
		o.canon = msgdkim.CanonicalizationRelaxed
	}
	var out bytes.Buffer
	err := msgdkim.Sign(&out, strings.NewReader(msg), &msgdkim.SignOptions{
		Domain: o.domain, Selector: o.selector, Signer: o.key,
		HeaderCanonicalization: o.canon, BodyCanonicalization: o.canon,
		Expiration: o.expires, HeaderKeys: o.headers,
	})
	if err != nil {
		t.Fatalf("signing: %v", err)
	}
	return out.String()
}

// signSHA1 prepends an rsa-sha1 simple/simple signature, made by hand
// because go-msgauth refuses to make one.
func signSHA1(t testing.TB, msg string, key *rsa.PrivateKey, domain, selector string) string {
	t.Helper()
	head, body, ok := strings.Cut(msg, "\r\n\r\n")
	if !ok {
		t.Fatal("message has no body")
	}
	body = strings.TrimRight(body, "\r\n") + "\r\n"
	bh := sha1.Sum([]byte(body))
	sigField := fmt.Sprintf("DKIM-Signature: v=1; a=rsa-sha1; c=simple/simple; d=%s; s=%s; h=from:to:subject; bh=%s; b=",
		domain, selector, base64.StdEncoding.EncodeToString(bh[:]))
	h := sha1.New()
	for _, name := range []string{"From", "To", "Subject"} {
		for line := range strings.SplitSeq(head, "\r\n") {
			if strings.HasPrefix(line, name+":") {
				io.WriteString(h, line+"\r\n")
			}
		}
	}
	io.WriteString(h, sigField)
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA1, h.Sum(nil))
	if err != nil {
		t.Fatal(err)
	}
	return sigField + base64.StdEncoding.EncodeToString(sig) + "\r\n" + msg
}

// verify streams msg into a verifier in chunks of size n (0: all at once).
func verify(t testing.TB, c *dkim.Checker, msg string, n int) ([]dkim.Result, *dkim.Verifier) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v := c.NewVerifier(ctx)
	data := []byte(msg)
	if n <= 0 {
		n = len(data)
	}
	for len(data) > 0 {
		k := min(n, len(data))
		if _, err := v.Write(data[:k]); err != nil {
			t.Fatalf("write: %v", err)
		}
		data = data[k:]
	}
	return v.Finish(ctx), v
}

func one(t *testing.T, res []dkim.Result) dkim.Result {
	t.Helper()
	if len(res) != 1 {
		t.Fatalf("got %d results, want 1: %+v", len(res), res)
	}
	return res[0]
}

func want(t *testing.T, r dkim.Result, result, reasonPart string) {
	t.Helper()
	if r.Result != result || !strings.Contains(r.Reason, reasonPart) {
		t.Errorf("got %s (%s), want %s with reason containing %q", r.Result, r.Reason, result, reasonPart)
	}
}

func TestAlgorithmsAndKeySizes(t *testing.T) {
	r, _ := start(t, zone(t))
	c := dkim.New(r, dkim.Options{})
	cases := []struct {
		name, selector string
		key            crypto.Signer
		canon          msgdkim.Canonicalization
		result, reason string
		algorithm      string
	}{
		{"rsa-2048 relaxed", "rsa2048", keys.rsa2048, msgdkim.CanonicalizationRelaxed, "pass", "", "rsa-sha256"},
		{"rsa-2048 simple", "rsa2048", keys.rsa2048, msgdkim.CanonicalizationSimple, "pass", "", "rsa-sha256"},
		{"rsa-1024", "rsa1024", keys.rsa1024, "", "pass", "", "rsa-sha256"},
		{"rsa-512", "rsa512", keys.rsa512, "", "fail", "512 bits is under the minimum of 1024", "rsa-sha256"},
		{"ed25519", "ed", keys.ed, "", "pass", "", "ed25519-sha256"},
		{"wrong key published", "broken", keys.rsa2048, "", "fail", "signature did not verify", "rsa-sha256"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := sign(t, message, signOpts{domain: "example.com", selector: tc.selector, key: tc.key, canon: tc.canon})
			res := one(t, mustVerify(t, c, msg))
			want(t, res, tc.result, tc.reason)
			if res.Domain != "example.com" || res.Selector != tc.selector || res.Algorithm != tc.algorithm {
				t.Errorf("reported d=%s s=%s a=%s", res.Domain, res.Selector, res.Algorithm)
			}
			if res.Identifier != "@example.com" {
				t.Errorf("identifier %q, want @example.com", res.Identifier)
			}
			if len(res.Signature) < 8 || !strings.Contains(msg, res.Signature) {
				t.Errorf("header.b %q is not a prefix of the signature", res.Signature)
			}
		})
	}
}

func mustVerify(t testing.TB, c *dkim.Checker, msg string) []dkim.Result {
	t.Helper()
	res, _ := verify(t, c, msg, 0)
	return res
}

func TestMinRSABits(t *testing.T) {
	r, _ := start(t, zone(t))
	c := dkim.New(r, dkim.Options{MinRSABits: 2048})
	res := one(t, mustVerify(t, c, sign(t, message, signOpts{domain: "example.com", selector: "rsa1024", key: keys.rsa1024})))
	want(t, res, "fail", "1024 bits is under the minimum of 2048")
	res = one(t, mustVerify(t, c, sign(t, message, signOpts{domain: "example.com", selector: "rsa2048", key: keys.rsa2048})))
	want(t, res, "pass", "")
}

func TestTampering(t *testing.T) {
	r, _ := start(t, zone(t))
	c := dkim.New(r, dkim.Options{})
	signed := sign(t, message, signOpts{domain: "example.com", selector: "rsa2048", key: keys.rsa2048,
		headers: []string{"From", "To", "Subject", "Date", "Message-ID"}})
	cases := map[string]struct {
		msg, reason string
	}{
		"body changed":     {strings.Replace(signed, "lost the game", "won the game", 1), "body hash did not verify"},
		"subject changed":  {strings.Replace(signed, "Is dinner ready?", "Is lunch ready?", 1), "signature did not verify"},
		"from added below": {strings.Replace(signed, "\r\n\r\n", "\r\nFrom: evil@example.org\r\n\r\n", 1), "signature did not verify"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			want(t, one(t, mustVerify(t, c, tc.msg)), "fail", tc.reason)
		})
	}
	t.Run("relaxed survives re-folding", func(t *testing.T) {
		msg := strings.Replace(signed, "Subject: Is dinner ready?", "Subject: Is dinner\r\n  ready?", 1)
		want(t, one(t, mustVerify(t, c, msg)), "pass", "")
	})
}

func TestKeyProblems(t *testing.T) {
	r, srv := start(t, zone(t))
	srv.ServFail("servfail._domainkey.example.com")
	srv.Drop("slow._domainkey.example.com")
	c := dkim.New(r, dkim.Options{})
	cases := []struct {
		selector, result, reason string
	}{
		{"missing", "permerror", "no such domain"},
		{"revoked", "permerror", "revoked"},
		{"servfail", "temperror", "server failure"},
		{"slow", "temperror", "timed out"},
	}
	for _, tc := range cases {
		t.Run(tc.selector, func(t *testing.T) {
			msg := sign(t, message, signOpts{domain: "example.com", selector: tc.selector, key: keys.rsa2048})
			want(t, one(t, mustVerify(t, c, msg)), tc.result, tc.reason)
		})
	}
	t.Run("name exists without a TXT record", func(t *testing.T) {
		msg := sign(t, message, signOpts{domain: "example.com", selector: "nodata", key: keys.rsa2048})
		want(t, one(t, mustVerify(t, c, msg)), "permerror", "no records")
	})
}

func TestExpired(t *testing.T) {
	r, _ := start(t, zone(t))
	c := dkim.New(r, dkim.Options{})
	msg := sign(t, message, signOpts{domain: "example.com", selector: "rsa2048", key: keys.rsa2048, expires: time.Now().Add(-time.Hour)})
	want(t, one(t, mustVerify(t, c, msg)), "permerror", "expired")
	msg = sign(t, message, signOpts{domain: "example.com", selector: "rsa2048", key: keys.rsa2048, expires: time.Now().Add(time.Hour)})
	want(t, one(t, mustVerify(t, c, msg)), "pass", "")
}

func TestRSASHA1IsPolicy(t *testing.T) {
	r, _ := start(t, zone(t))
	c := dkim.New(r, dkim.Options{})
	msg := signSHA1(t, message, keys.rsa2048, "example.com", "rsa2048")
	res := one(t, mustVerify(t, c, msg))
	want(t, res, "policy", "rsa-sha1")
	if res.Algorithm != "rsa-sha1" {
		t.Errorf("algorithm %q", res.Algorithm)
	}
}

func TestSignatureLimit(t *testing.T) {
	r, srv := start(t, zone(t))
	c := dkim.New(r, dkim.Options{MaxSignatures: 2})
	msg := sign(t, message, signOpts{domain: "example.net", selector: "alt", key: keys.alt})
	msg = sign(t, msg, signOpts{domain: "example.com", selector: "ed", key: keys.ed})
	msg = sign(t, msg, signOpts{domain: "example.com", selector: "rsa2048", key: keys.rsa2048})
	res := mustVerify(t, c, msg)
	if len(res) != 3 {
		t.Fatalf("got %d results, want 3", len(res))
	}
	// Header order: the last signature added is on top.
	want(t, res[0], "pass", "")
	want(t, res[1], "pass", "")
	want(t, res[2], "none", "over the limit of 2")
	// Past twice the limit, fields are not reported at all.
	for range 3 {
		msg = sign(t, msg, signOpts{domain: "example.com", selector: "rsa2048", key: keys.rsa2048})
	}
	if n := len(mustVerify(t, c, msg)); n != 4 {
		t.Errorf("%d results for 6 signature fields, limit 2; want 4", n)
	}
	if res[2].Domain != "example.net" || res[2].Selector != "alt" {
		t.Errorf("unchecked signature reported as d=%s s=%s", res[2].Domain, res[2].Selector)
	}
	if n := srv.Queries("alt._domainkey.example.net", dns.TypeTXT); n != 0 {
		t.Errorf("the key of an unchecked signature was looked up %d times", n)
	}
	for i := range res {
		for j := range res {
			if i != j && res[i].Signature == res[j].Signature {
				t.Errorf("header.b %q is not unique", res[i].Signature)
			}
		}
	}
}

func TestMixedSignatures(t *testing.T) {
	r, _ := start(t, zone(t))
	c := dkim.New(r, dkim.Options{})
	msg := sign(t, message, signOpts{domain: "example.com", selector: "rsa512", key: keys.rsa512})
	msg = sign(t, msg, signOpts{domain: "example.net", selector: "alt", key: keys.alt})
	msg = sign(t, msg, signOpts{domain: "example.com", selector: "missing", key: keys.rsa2048})
	res := mustVerify(t, c, msg)
	if len(res) != 3 {
		t.Fatalf("got %d results", len(res))
	}
	want(t, res[0], "permerror", "no such domain")
	want(t, res[1], "pass", "")
	want(t, res[2], "fail", "under the minimum")
	if res[1].Domain != "example.net" {
		t.Errorf("pass reported for %s", res[1].Domain)
	}
}

func TestStreamingChunks(t *testing.T) {
	r, _ := start(t, zone(t))
	c := dkim.New(r, dkim.Options{})
	body := strings.Repeat("a line of body text that goes on  \r\n", 500)
	msg := sign(t, strings.TrimSuffix(message, "Joe.\r\n")+body, signOpts{domain: "example.com", selector: "rsa2048", key: keys.rsa2048})
	for _, n := range []int{1, 2, 7, 4096} {
		res, v := verify(t, c, msg, n)
		want(t, one(t, res), "pass", "")
		if from := v.From(); len(from) != 1 || from[0] != "Joe SixPack <joe@example.com>" {
			t.Errorf("chunk %d: From %q", n, from)
		}
	}
}

func TestMaxSize(t *testing.T) {
	r, srv := start(t, zone(t))
	msg := sign(t, message, signOpts{domain: "example.com", selector: "rsa2048", key: keys.rsa2048})
	c := dkim.New(r, dkim.Options{MaxSize: int64(len(msg) - 10)})
	want(t, one(t, mustVerify(t, c, msg)), "neutral", "over max_size")
	// Over the limit inside the header block: not even looked up.
	c = dkim.New(r, dkim.Options{MaxSize: 100})
	want(t, one(t, mustVerify(t, c, msg)), "neutral", "over max_size")
	c = dkim.New(r, dkim.Options{MaxSize: int64(len(msg))})
	want(t, one(t, mustVerify(t, c, msg)), "pass", "")
	_ = srv
}

func TestHugeHeader(t *testing.T) {
	r, _ := start(t, zone(t))
	c := dkim.New(r, dkim.Options{})
	msg := sign(t, message, signOpts{domain: "example.com", selector: "rsa2048", key: keys.rsa2048})
	junk := strings.Repeat("X-Junk: "+strings.Repeat("x", 990)+"\r\n", 1100)
	res, v := verify(t, c, msg[:strings.Index(msg, "\r\n\r\n")+2]+junk+"\r\nbody\r\n", 65536)
	want(t, one(t, res), "neutral", "header block over")
	if len(v.From()) != 1 {
		t.Errorf("From %q", v.From())
	}
}

func TestNoSignature(t *testing.T) {
	r, _ := start(t, zone(t))
	c := dkim.New(r, dkim.Options{})
	res, v := verify(t, c, message, 3)
	if res != nil {
		t.Errorf("results for an unsigned message: %+v", res)
	}
	if len(v.From()) != 1 {
		t.Errorf("From %q", v.From())
	}
}

func TestHeaderOnlyMessage(t *testing.T) {
	r, _ := start(t, zone(t))
	c := dkim.New(r, dkim.Options{})
	head := "From: joe@example.com\r\nSubject: hi\r\n"
	signed := sign(t, head+"\r\n", signOpts{domain: "example.com", selector: "rsa2048", key: keys.rsa2048})
	// The same message without the blank line that ends the header.
	res, _ := verify(t, c, strings.TrimSuffix(signed, "\r\n"), 0)
	want(t, one(t, res), "pass", "")
}

func TestMalformedSignatures(t *testing.T) {
	r, _ := start(t, zone(t))
	c := dkim.New(r, dkim.Options{})
	cases := map[string]string{
		"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=rsa2048\r\n":                    "no b= tag",
		"DKIM-Signature: v=2; a=rsa-sha256; d=example.com; s=x; h=from; bh=AAAA; b=AAAA\r\n": "version",
		"DKIM-Signature: garbage\r\n": "no '='",
		"DKIM-Signature: v=1; v=1; a=rsa-sha256; d=example.com; s=x; h=from; bh=AAAA; b=AAAA\r\n":               "twice",
		"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=x; h=from; bh=AAAA; b=AAAA; x=soon\r\n":            "x=",
		"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=rsa2048; h=subject; bh=AAAA; b=AAAA\r\n":           "From field not signed",
		"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; i=joe@example.org; s=x; h=from; bh=AAAA; b=AAAA\r\n": "domain mismatch",
	}
	for sig, reason := range cases {
		t.Run(reason, func(t *testing.T) {
			want(t, one(t, mustVerify(t, c, sig+message)), "permerror", reason)
		})
	}
}

func TestBodyLengthTagIsPolicy(t *testing.T) {
	r, _ := start(t, zone(t))
	c := dkim.New(r, dkim.Options{})
	msg := "DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=rsa2048; h=from; l=10; bh=AAAA; b=AAAA\r\n" + message
	want(t, one(t, mustVerify(t, c, msg)), "policy", "l=")
}

func TestFinishContext(t *testing.T) {
	r, srv := start(t, zone(t))
	srv.Delay("rsa2048._domainkey.example.com", 2*time.Second)
	c := dkim.New(r, dkim.Options{})
	msg := sign(t, message, signOpts{domain: "example.com", selector: "rsa2048", key: keys.rsa2048})
	// Write the header only: the look-up starts but the write does not
	// wait for the body to be read.
	ctx := context.Background()
	v := c.NewVerifier(ctx)
	head := msg[:strings.Index(msg, "\r\n\r\n")+4]
	done := make(chan struct{})
	go func() {
		defer close(done)
		v.Write([]byte(head))
	}()
	<-done
	fctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	began := time.Now()
	res := v.Finish(fctx)
	if d := time.Since(began); d > time.Second {
		t.Errorf("Finish waited %v past its context", d)
	}
	want(t, one(t, res), "temperror", "did not finish")
	v.Close()
	if _, err := v.Write([]byte("x")); err == nil {
		t.Error("write after Finish succeeded")
	}
}

func TestCloseAbandons(t *testing.T) {
	r, _ := start(t, zone(t))
	c := dkim.New(r, dkim.Options{})
	msg := sign(t, message, signOpts{domain: "example.com", selector: "rsa2048", key: keys.rsa2048})
	v := c.NewVerifier(context.Background())
	v.Write([]byte(msg[:len(msg)-5]))
	v.Close()
	v.Close()
	if _, err := v.Write([]byte("x")); err == nil {
		t.Error("write after Close succeeded")
	}
}

func TestOptionsValidate(t *testing.T) {
	bad := []dkim.Options{{MaxSignatures: -1}, {MaxSize: -1}, {MinRSABits: 512}, {MinRSABits: 1 << 20}}
	for _, o := range bad {
		if o.Validate() == nil {
			t.Errorf("%+v validated", o)
		}
	}
	if err := (dkim.Options{MaxSignatures: 3, MaxSize: 1 << 20, MinRSABits: 2048}).Validate(); err != nil {
		t.Error(err)
	}
	got := dkim.New(nil, dkim.Options{MinRSABits: 512}).Options()
	if got.MinRSABits != 1024 || got.MaxSignatures != 10 || got.MaxSize != 64<<20 {
		t.Errorf("defaults: %+v", got)
	}
}

func BenchmarkVerify100KB(b *testing.B) {
	r, _ := start(b, zone(b))
	c := dkim.New(r, dkim.Options{})
	body := strings.Repeat(strings.Repeat("x", 76)+"\r\n", 100*1024/78)
	msg := []byte(sign(b, strings.TrimSuffix(message, "Joe.\r\n")+body, signOpts{domain: "example.com", selector: "rsa2048", key: keys.rsa2048}))
	ctx := context.Background()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		v := c.NewVerifier(ctx)
		for chunk := range slices.Chunk(msg, 16*1024) {
			v.Write(chunk)
		}
		res := v.Finish(ctx)
		if len(res) != 1 || res[0].Result != "pass" {
			b.Fatalf("%+v", res)
		}
	}
}
