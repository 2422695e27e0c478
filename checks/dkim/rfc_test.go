package dkim_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/internal/testenv"
)

// signRaw prepends a simple/simple rsa-sha256 or ed25519-sha256 signature
// made by hand, so that tests can write any tags: head holds the tags
// before bh= (h= among them), tail those between bh= and b=; a tail
// ending in "=" is the b= tag's own spelling.
func signRaw(t testing.TB, msg string, key crypto.Signer, head, tail string) string {
	t.Helper()
	hdr, body, ok := strings.Cut(msg, "\r\n\r\n")
	if !ok {
		t.Fatal("message has no body")
	}
	body = strings.TrimRight(body, "\r\n") + "\r\n"
	bh := sha256.Sum256([]byte(body))
	if !strings.HasSuffix(tail, "=") {
		tail += " b="
	}
	field := "DKIM-Signature: " + head + " bh=" + base64.StdEncoding.EncodeToString(bh[:]) + ";" + tail
	m := regexp.MustCompile(`h=([^;]*);`).FindStringSubmatch(head)
	if m == nil {
		t.Fatal("no h= in head")
	}
	// Each name takes the next field of that name from the bottom up;
	// the test messages have no folded fields.
	lines := strings.Split(hdr, "\r\n")
	used := map[string]int{}
	var signed strings.Builder
	for name := range strings.SplitSeq(m[1], ":") {
		name = strings.ToLower(strings.TrimSpace(name))
		skip := used[name]
		used[name]++
		for i := len(lines) - 1; i >= 0; i-- {
			if n, _, _ := strings.Cut(lines[i], ":"); strings.EqualFold(n, name) {
				if skip == 0 {
					signed.WriteString(lines[i] + "\r\n")
					break
				}
				skip--
			}
		}
	}
	signed.WriteString(field)
	digest := sha256.Sum256([]byte(signed.String()))
	var sig []byte
	var err error
	if _, ed := key.(ed25519.PrivateKey); ed {
		sig, err = key.Sign(rand.Reader, digest[:], crypto.Hash(0))
	} else {
		sig, err = key.Sign(rand.Reader, digest[:], crypto.SHA256)
	}
	if err != nil {
		t.Fatal(err)
	}
	return field + base64.StdEncoding.EncodeToString(sig) + "\r\n" + msg
}

const rawHead = "v=1; a=rsa-sha256; c=simple/simple; d=example.com; s=rsa2048; h=from:to:subject;"

func TestHandSignedControl(t *testing.T) {
	r, _ := start(t, zone(t))
	c := dkim.New(r, dkim.Options{})
	want(t, one(t, mustVerify(t, c, signRaw(t, message, keys.rsa2048, rawHead, ""))), "pass", "")
}

// Unknown tags are ignored (RFC 6376 section 3.2), and removing the
// value of b= before hashing must not touch a tag whose name ends in b.
func TestUnknownSignatureTags(t *testing.T) {
	r, _ := start(t, zone(t))
	c := dkim.New(r, dkim.Options{})
	for name, tail := range map[string]string{
		"xb= before b=": " xb=c29tZXRoaW5n;",
		"bb= before b=": " bb = 1 ;",
		"unknown tags":  " zz=1; future_tag=a b c;",
		"b = folded":    " xb=1; b \r\n\t=",
	} {
		t.Run(name, func(t *testing.T) {
			msg := signRaw(t, message, keys.rsa2048, rawHead, tail)
			want(t, one(t, mustVerify(t, c, msg)), "pass", "")
		})
	}
}

// i= is compared with d= without regard to case (RFC 4343); an i= that
// has no "@" is a syntax error.
func TestIdentifier(t *testing.T) {
	r, _ := start(t, zone(t))
	c := dkim.New(r, dkim.Options{})
	head := "v=1; a=rsa-sha256; c=simple/simple; d=example.com; s=rsa2048; h=from:to:subject; i=%s;"
	cases := []struct{ i, result, reason string }{
		{"joe@Example.COM", "pass", ""},
		{"@MAIL.example.com", "pass", ""},
		{"joe@EXAMPLE.org", "permerror", "domain mismatch"},
		{"joe.example.com", "permerror", "has no '@'"},
		{"joe@notexample.com", "permerror", "domain mismatch"},
	}
	for _, tc := range cases {
		t.Run(tc.i, func(t *testing.T) {
			msg := signRaw(t, message, keys.rsa2048, fmt.Sprintf(head, tc.i), "")
			want(t, one(t, mustVerify(t, c, msg)), tc.result, tc.reason)
		})
	}
}

// A time stamp in the future past the allowed clock skew is not a pass.
func TestFutureTimestamp(t *testing.T) {
	r, _ := start(t, zone(t))
	c := dkim.New(r, dkim.Options{ClockSkew: 10 * time.Minute})
	at := func(d time.Duration) string {
		return signRaw(t, message, keys.rsa2048, rawHead+fmt.Sprintf(" t=%d;", time.Now().Add(d).Unix()), "")
	}
	want(t, one(t, mustVerify(t, c, at(5*time.Minute))), "pass", "")
	want(t, one(t, mustVerify(t, c, at(-24*time.Hour))), "pass", "")
	want(t, one(t, mustVerify(t, c, at(time.Hour))), "permerror", "in the future")
	want(t, one(t, mustVerify(t, c, at(100*365*24*time.Hour))), "permerror", "in the future")
	if err := (dkim.Options{ClockSkew: -time.Second}).Validate(); err == nil {
		t.Error("a negative clock_skew validated")
	}
	if got := dkim.New(nil, dkim.Options{}).Options().ClockSkew; got != dkim.DefaultClockSkew {
		t.Errorf("default clock skew %s", got)
	}
}

// l= is refused by policy whatever else the signature says.
func TestBodyLengthStaysPolicy(t *testing.T) {
	r, _ := start(t, zone(t))
	c := dkim.New(r, dkim.Options{})
	msg := signRaw(t, message, keys.rsa2048, rawHead+" l=5;", "")
	want(t, one(t, mustVerify(t, c, msg)), "policy", "l=")
}

// Key records: white space around tags and "=", a trailing ";", unknown
// tags and folding white space inside p= are valid (RFC 6376 sections
// 3.2 and 3.6.1). One parser reads them: a record it refuses is a
// permerror, never a pass that skipped the key size check.
func TestKeyRecordSyntax(t *testing.T) {
	testKeys(t)
	p := func(k crypto.PublicKey) string {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return base64.StdEncoding.EncodeToString(der)
	}
	p2048, p1024 := p(keys.rsa2048.Public()), p(keys.rsa1024.Public())
	folded := p2048[:40] + ` \013\010\009` + p2048[40:80] + ` \009 ` + p2048[80:]
	records := map[string]string{
		"spaces":    "v = DKIM1 ; k = rsa ; p = " + p2048,
		"trailing":  "v=DKIM1; k=rsa; p=" + p2048 + ";",
		"unknown":   "v=DKIM1; k=rsa; zz=1; n=a note; p=" + p2048 + "; future=x",
		"fws":       "v=DKIM1; k=rsa; p=" + folded,
		"tabs":      "\tv=DKIM1;\tk=rsa\t;p=" + p2048 + " ; ",
		"small":     "v=DKIM1; k=rsa; zz=1; p=" + p1024,
		"badtag":    "v=DKIM1; k=rsa; x-y=1; p=" + p1024,
		"badtag2k":  "v=DKIM1; k=rsa; x-y=1; p=" + p2048,
		"hashes":    "v=DKIM1; h=sha1; p=" + p2048,
		"services":  "v=DKIM1; s=tlsrpt; p=" + p2048,
		"anyserv":   "v=DKIM1; s=*; h=sha1:sha256; p=" + p2048,
		"wrongtype": "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(keys.ed.Public().(ed25519.PublicKey)),
	}
	z := soa
	for sel, rec := range records {
		z += txtRR(sel+"._domainkey.example.com.", rec)
	}
	r, _ := start(t, z)
	c := dkim.New(r, dkim.Options{MinRSABits: 2048})
	cases := []struct {
		sel, result, reason string
		key                 crypto.Signer
	}{
		{"spaces", "pass", "", keys.rsa2048},
		{"trailing", "pass", "", keys.rsa2048},
		{"unknown", "pass", "", keys.rsa2048},
		{"fws", "pass", "", keys.rsa2048},
		{"tabs", "pass", "", keys.rsa2048},
		{"small", "fail", "1024 bits is under the minimum of 2048", keys.rsa1024},
		{"badtag", "permerror", "bad tag name", keys.rsa1024},
		{"badtag2k", "permerror", "bad tag name", keys.rsa2048},
		{"hashes", "permerror", "sha256", keys.rsa2048},
		{"services", "permerror", "not for email", keys.rsa2048},
		{"anyserv", "pass", "", keys.rsa2048},
		{"wrongtype", "permerror", "does not match", keys.rsa2048},
	}
	for _, tc := range cases {
		t.Run(tc.sel, func(t *testing.T) {
			head := strings.Replace(rawHead, "s=rsa2048", "s="+tc.sel, 1)
			want(t, one(t, mustVerify(t, c, signRaw(t, message, tc.key, head, ""))), tc.result, tc.reason)
		})
	}
}

// More than MaxSignedHeaders names in h= is a permerror before anything
// is hashed; that message, with 150,000 header fields, once kept a core
// busy for minutes (each h= name scanned every field).
func TestSignedHeaderLimits(t *testing.T) {
	r, srv := start(t, zone(t))
	c := dkim.New(r, dkim.Options{})
	long := "DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=rsa2048; h=from" +
		strings.Repeat(":a", 60_000) + "; bh=AAAA; b=AAAA\r\n"
	fields := strings.Repeat("b:\r\n", 150_000)
	want(t, one(t, mustVerify(t, c, long+fields+message)), "permerror", "more than 100")

	hundred := "DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=rsa2048; h=from" +
		strings.Repeat(":b", 99) + "; bh=AAAA; b=AAAA\r\n"
	want(t, one(t, mustVerify(t, c, hundred+message)), "fail", "body hash")
	// So many fields are not verified at all: no key is looked up.
	before := srv.Queries("rsa2048._domainkey.example.com", 16)
	want(t, one(t, mustVerify(t, c, hundred+fields+message)), "neutral", "header fields, more than 1000")
	if n := srv.Queries("rsa2048._domainkey.example.com", 16); n != before {
		t.Errorf("%d key look-ups for a message that is not verified", n-before)
	}
	// Within the limits the picking is linear: 100 names over 1,000
	// fields, all of them signed.
	many := strings.Repeat("B: x\r\n", 990)
	signed := signRaw(t, many+message, keys.rsa2048, "v=1; a=rsa-sha256; c=simple/simple; d=example.com; s=rsa2048; h=from"+strings.Repeat(":b", 99)+";", "")
	want(t, one(t, mustVerify(t, c, signed)), "pass", "")
}

// A field of 100,000 continuation lines is built once, not once per
// line (that was 41 s of CPU for 240,000 lines).
func TestLongFoldedField(t *testing.T) {
	r, _ := start(t, zone(t))
	c := dkim.New(r, dkim.Options{})
	msg := sign(t, message, signOpts{domain: "example.com", selector: "rsa2048", key: keys.rsa2048})
	msg = "X-Long: a\r\n" + strings.Repeat(" x\r\n", 100_000) + msg
	allocs := testing.AllocsPerRun(1, func() { mustVerify(t, c, msg) })
	if allocs > 10_000 {
		t.Errorf("%.0f allocations for one folded field", allocs)
	}
	want(t, one(t, mustVerify(t, c, msg)), "pass", "")
}

// A verification given up stops: body bytes written after the context
// ended are not hashed, and no goroutine of the verifier outlives Finish
// and Close. The fixture server's handler stays asleep on the delayed
// query, and the resolver's shared exchange waits out its own bounded
// timeout on the socket (it serves other callers too, and burns no CPU),
// so only the verifier's goroutines are counted.
func TestGivenUpVerificationStops(t *testing.T) {
	srv := testenv.StartDNS(t, zone(t))
	srv.Delay("rsa2048._domainkey.example.com", 30*time.Second)
	// A resolver timeout longer than the wait below: only the verifier's
	// cancellation can end the look-up in time.
	r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 20 * time.Second, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	c := dkim.New(r, dkim.Options{})
	msg := sign(t, message, signOpts{domain: "example.com", selector: "rsa2048", key: keys.rsa2048})
	ctx, cancel := context.WithCancel(context.Background())
	v := c.NewVerifier(ctx)
	head := strings.Index(msg, "\r\n\r\n") + 4
	v.Write([]byte(msg[:head]))
	if verifierGoroutines() == 0 {
		t.Fatal("no look-up running")
	}
	cancel()
	v.Write([]byte(msg[head:]))
	want(t, one(t, v.Finish(context.Background())), "temperror", "stopped")
	v.Close()
	deadline := time.Now().Add(5 * time.Second)
	for verifierGoroutines() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := verifierGoroutines(); n > 0 {
		t.Errorf("%d goroutines of the verifier left running after Close", n)
	}
}

// verifierGoroutines counts the goroutines running the verifier's code
// (its key look-ups), leaving out the test's own.
func verifierGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "mailward/checks/dkim.") && !strings.Contains(g, "dkim_test.") {
			n++
		}
	}
	return n
}

// BenchmarkHostileHeader is the message that once kept a core busy for
// 150 s: h= of 60,000 names over 150,000 header fields. It now costs one
// pass over the header block.
func BenchmarkHostileHeader(b *testing.B) {
	r, _ := start(b, zone(b))
	c := dkim.New(r, dkim.Options{})
	msg := []byte("DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=rsa2048; h=from" +
		strings.Repeat(":a", 60_000) + "; bh=AAAA; b=AAAA\r\n" + strings.Repeat("b:\r\n", 150_000) + message)
	ctx := context.Background()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		v := c.NewVerifier(ctx)
		v.Write(msg)
		if res := v.Finish(ctx); len(res) != 1 || res[0].Result != "permerror" {
			b.Fatalf("%+v", res)
		}
	}
}
