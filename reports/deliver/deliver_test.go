package deliver

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/internal/testenv"
)

// zone: example.com publishes DMARC; example.net confirms it takes
// example.com's reports; example.org does not; override.example
// confirms with its own rua, elsewhere.example points away.
const zone = `
$TTL 300
$ORIGIN example.com.
@       IN SOA ns hostmaster 1 3600 600 86400 60
_dmarc  IN TXT "v=DMARC1; p=none; rua=mailto:dmarc@example.com"
$ORIGIN example.net.
@       IN SOA ns hostmaster 1 3600 600 86400 60
_dmarc  IN TXT "v=DMARC1; p=none"
example.com._report._dmarc IN TXT "v=DMARC1;"
$ORIGIN example.org.
@       IN SOA ns hostmaster 1 3600 600 86400 60
_dmarc  IN TXT "v=DMARC1; p=reject"
example.com._report._dmarc IN TXT "v=spf1 -all"
$ORIGIN override.example.
@       IN SOA ns hostmaster 1 3600 600 86400 60
example.com._report._dmarc IN TXT "v=DMARC1; rua=mailto:inbox@override.example!1m"
$ORIGIN elsewhere.example.
@       IN SOA ns hostmaster 1 3600 600 86400 60
example.com._report._dmarc IN TXT "v=DMARC1; rua=mailto:inbox@attacker.example"
$ORIGIN wild.example.
@       IN SOA ns hostmaster 1 3600 600 86400 60
*._report._dmarc IN TXT "v=DMARC1"
$ORIGIN flaky.example.
@       IN SOA ns hostmaster 1 3600 600 86400 60
example.com._report._dmarc IN TXT "v=DMARC1"
`

const reportXML = `<?xml version="1.0" encoding="UTF-8"?>
<feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0">
  <version>1.0</version>
  <report_metadata><org_name>mx.example.net</org_name><report_id>r1</report_id></report_metadata>
</feedback>
`

func testReport(rua ...string) Report {
	return Report{
		PolicyDomain: "example.com",
		ReportID:     "1764720000.example.com@mx.example.net",
		Begin:        time.Unix(1764633600, 0).UTC(),
		End:          time.Unix(1764720000, 0).UTC(),
		XML:          []byte(reportXML),
		RUA:          rua,
	}
}

type fixture struct {
	dns    *testenv.DNSServer
	relay  *testRelay
	sender *Sender
	waits  []time.Duration
	mu     sync.Mutex
	// onWait, if set, runs at each backoff or rate wait.
	onWait func(n int)
}

// newFixture starts fixture DNS and a relay, and a Sender for them whose
// waits are recorded rather than slept.
func newFixture(t *testing.T, cert *testenv.TestCert, edit func(*Config)) *fixture {
	t.Helper()
	f := &fixture{dns: testenv.StartDNS(t, zone), relay: startRelay(t, cert)}
	res, err := resolver.New(resolver.Config{Servers: []string{f.dns.Addr()}, Timeout: 300 * time.Millisecond, Retries: -1, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Relay = f.relay.addr
	cfg.From = "dmarc-reports@mx.example.net"
	cfg.HELO = "mx.example.net"
	cfg.Timeout = cache.Duration(10 * time.Second)
	cfg.RetryBackoff = cache.Duration(time.Second)
	cfg.MaxPerHour = 0
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg, Deps{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	s.sleep = func(ctx context.Context, d time.Duration) error {
		f.mu.Lock()
		f.waits = append(f.waits, d)
		n := len(f.waits)
		f.mu.Unlock()
		if f.onWait != nil {
			f.onWait(n)
		}
		return ctx.Err()
	}
	f.sender = s
	return f
}

// parsed is a delivered report message taken apart.
type parsed struct {
	header   mail.Header
	subject  string
	filename string
	ctype    string
	xml      []byte
}

// parseDelivered reads a delivered message as a report consumer would:
// the MIME part of type application/gzip, its file name, its contents
// gunzipped.
func parseDelivered(t testing.TB, data []byte) parsed {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("delivered message does not parse: %v\n%s", err, data)
	}
	out := parsed{header: m.Header, subject: m.Header.Get("Subject")}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || !strings.HasPrefix(mt, "multipart/") {
		t.Fatalf("Content-Type %q: want multipart (%v)", m.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading MIME parts: %v", err)
		}
		ct, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		if ct != "application/gzip" {
			continue
		}
		if out.ctype != "" {
			t.Fatal("more than one application/gzip part")
		}
		out.ctype = ct
		out.filename = part.FileName()
		if cte := part.Header.Get("Content-Transfer-Encoding"); !strings.EqualFold(cte, "base64") {
			t.Fatalf("report part Content-Transfer-Encoding %q, want base64", cte)
		}
		zr, err := gzip.NewReader(base64.NewDecoder(base64.StdEncoding, part))
		if err != nil {
			t.Fatalf("report part is not gzip: %v", err)
		}
		if out.xml, err = io.ReadAll(zr); err != nil {
			t.Fatalf("gunzip: %v", err)
		}
	}
	if out.ctype == "" {
		t.Fatalf("no application/gzip part in\n%s", data)
	}
	return out
}

const wantFilename = "mx.example.net!example.com!1764633600!1764720000.xml.gz"

func TestSendMessageFollowsRFC9990(t *testing.T) {
	f := newFixture(t, nil, nil)
	r := testReport("mailto:dmarc@example.com")
	if err := f.sender.Send(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	msgs := f.relay.messages()
	if len(msgs) != 1 {
		t.Fatalf("relay got %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From != "dmarc-reports@mx.example.net" || len(m.To) != 1 || m.To[0] != "dmarc@example.com" {
		t.Errorf("envelope %s -> %v", m.From, m.To)
	}
	if m.HELO != "mx.example.net" {
		t.Errorf("EHLO %q, want mx.example.net", m.HELO)
	}
	p := parseDelivered(t, m.Data)
	if !bytes.Equal(p.xml, r.XML) {
		t.Errorf("gunzipped report differs:\n%s", p.xml)
	}
	if p.filename != wantFilename {
		t.Errorf("filename %q, want %q", p.filename, wantFilename)
	}
	wantSubject := "Report Domain: example.com Submitter: mx.example.net Report-ID: <1764720000.example.com@mx.example.net>"
	if got := strings.Join(strings.Fields(p.subject), " "); got != wantSubject {
		t.Errorf("Subject %q, want %q", got, wantSubject)
	}
	for k, want := range map[string]string{"From": "<dmarc-reports@mx.example.net>", "To": "<dmarc@example.com>", "MIME-Version": "1.0", "Auto-Submitted": "auto-generated"} {
		if got := p.header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if _, err := p.header.Date(); err != nil {
		t.Errorf("Date: %v", err)
	}
	if id := p.header.Get("Message-ID"); !strings.HasPrefix(id, "<1764720000.example.com.") {
		t.Errorf("Message-ID %q does not carry the Report-ID", id)
	}
}

func TestFilenameUniqueIDOnlyWhenAlphanumeric(t *testing.T) {
	r := testReport()
	r.ReportID = "abc123"
	p, err := newPayload(r, "mx.example.net")
	if err != nil {
		t.Fatal(err)
	}
	if want := "mx.example.net!example.com!1764633600!1764720000!abc123.xml.gz"; p.filename != want {
		t.Errorf("filename %q, want %q", p.filename, want)
	}
	r.ReportID = "bad id"
	if _, err := newPayload(r, "mx.example.net"); err == nil {
		t.Error("a Report-ID with a space was taken")
	}
}

func TestRetriesTemporaryFailures(t *testing.T) {
	f := newFixture(t, nil, nil)
	f.relay.failNext(451, 421)
	if err := f.sender.Send(context.Background(), testReport("mailto:dmarc@example.com")); err != nil {
		t.Fatal(err)
	}
	if n := len(f.relay.messages()); n != 1 {
		t.Fatalf("relay holds %d messages, want 1", n)
	}
	if n := f.relay.attempts(); n != 3 {
		t.Errorf("%d DATA attempts, want 3", n)
	}
	if want := []time.Duration{time.Second, 2 * time.Second}; !equalDurations(f.waits, want) {
		t.Errorf("backoff waits %v, want %v", f.waits, want)
	}
}

func TestPermanentFailureIsNotRetried(t *testing.T) {
	f := newFixture(t, nil, nil)
	f.relay.failNext(554)
	err := f.sender.Send(context.Background(), testReport("mailto:dmarc@example.com"))
	var se *SendError
	if !errors.As(err, &se) || se.Temporary() || len(se.Failed) != 1 {
		t.Fatalf("Send: %v, want a permanent *SendError for one destination", err)
	}
	if n := f.relay.attempts(); n != 1 {
		t.Errorf("%d DATA attempts after a 554, want 1", n)
	}
}

func TestRetriesAreBounded(t *testing.T) {
	f := newFixture(t, nil, func(c *Config) { c.Retries = 2 })
	f.relay.failNext(451, 451, 451, 451)
	err := f.sender.Send(context.Background(), testReport("mailto:dmarc@example.com"))
	var se *SendError
	if !errors.As(err, &se) || !se.Temporary() {
		t.Fatalf("Send: %v, want a temporary *SendError", err)
	}
	if n := f.relay.attempts(); n != 3 {
		t.Errorf("%d attempts with retries: 2, want 3", n)
	}
	if got := se.URIs(); len(got) != 1 || got[0] != "mailto:dmarc@example.com" {
		t.Errorf("URIs to retry: %v", got)
	}
}

func TestCancelStopsRetries(t *testing.T) {
	f := newFixture(t, nil, nil)
	f.relay.failNext(451, 451, 451, 451, 451, 451)
	ctx, cancel := context.WithCancel(context.Background())
	f.onWait = func(int) { cancel() }
	err := f.sender.Send(ctx, testReport("mailto:dmarc@example.com"))
	if err == nil {
		t.Fatal("Send succeeded against a relay that only tempfails")
	}
	if n := f.relay.attempts(); n != 1 {
		t.Errorf("%d attempts after cancelling at the first wait, want 1", n)
	}
}

func TestConnectionErrorIsRetried(t *testing.T) {
	f := newFixture(t, nil, nil)
	real := f.sender.cfg.Relay
	f.sender.cfg.Relay = "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	f.onWait = func(int) { f.sender.cfg.Relay = real }
	if err := f.sender.Send(context.Background(), testReport("mailto:dmarc@example.com")); err != nil {
		t.Fatal(err)
	}
	if len(f.waits) != 1 || len(f.relay.messages()) != 1 {
		t.Errorf("waits %v, messages %d: want one retry, then delivery", f.waits, len(f.relay.messages()))
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestCancelEndsBackoffWait: with the real clock, a Send waiting an hour
// to retry returns as soon as its context ends.
func TestCancelEndsBackoffWait(t *testing.T) {
	f := newFixture(t, nil, func(c *Config) { c.RetryBackoff = cache.Duration(time.Hour) })
	f.sender.sleep = sleepCtx
	f.relay.failNext(451)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	err := f.sender.Send(ctx, testReport("mailto:dmarc@example.com"))
	if err == nil || !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatalf("Send: %v", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("Send returned %s after cancel", d)
	}
}

// TestRetryDoesNotResendOrRetryFinalOutcomes: when one destination is
// retried, the one that got its report and the one refused with a 5xx
// are left alone.
func TestRetryDoesNotResendOrRetryFinalOutcomes(t *testing.T) {
	f := newFixture(t, nil, nil)
	f.relay.failNext(0, 550, 451) // a@ taken, b@ refused for good, c@ deferred once
	err := f.sender.Send(context.Background(), testReport("mailto:a@example.com", "mailto:b@example.com", "mailto:c@example.com"))
	var se *SendError
	if !errors.As(err, &se) || len(se.Failed) != 1 || se.Failed[0].Address != "b@example.com" || se.Temporary() {
		t.Fatalf("Send: %v, want a permanent failure for b@example.com only", err)
	}
	if n := f.relay.attempts(); n != 4 {
		t.Errorf("%d DATA commands, want 4 (a, b, c, c again)", n)
	}
	var to []string
	for _, m := range f.relay.messages() {
		to = append(to, m.To[0])
	}
	if strings.Join(to, ",") != "a@example.com,c@example.com" {
		t.Errorf("delivered to %v", to)
	}
}
