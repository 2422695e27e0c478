package deliver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/internal/testenv"
)

// pyReport reads a message as an independent consumer: Python's email
// package finds the application/gzip part; it prints the file name and
// the SHA-256 of the gunzipped contents.
const pyReport = `
import email, email.policy, gzip, hashlib, sys
msg = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=email.policy.default)
parts = [p for p in msg.walk() if p.get_content_type() == "application/gzip"]
assert len(parts) == 1, len(parts)
print(parts[0].get_filename())
print(hashlib.sha256(gzip.decompress(parts[0].get_payload(decode=True))).hexdigest())
print(" ".join(str(msg["Subject"]).split()))
`

// TestReportThroughPostfix sends a report through a private Postfix, over
// STARTTLS with a verified certificate, to a sink behind it, and reads
// what arrived as a report consumer would.
func TestReportThroughPostfix(t *testing.T) {
	if !testenv.E2E() {
		t.Skip("set MAILWARD_E2E=1 to send a report through a private Postfix")
	}
	sink := testenv.StartSink(t)
	cert := testenv.SelfSignedCert(t, "127.0.0.1")
	pf := testenv.StartPostfix(t, testenv.PostfixConfig{RelayTo: sink.Addr(), Main: map[string]string{
		"smtpd_tls_cert_file":       cert.CertFile,
		"smtpd_tls_key_file":        cert.KeyFile,
		"smtpd_tls_security_level":  "may",
		"smtpd_tls_received_header": "yes",
	}})
	dnsSrv := testenv.StartDNS(t, zone)
	res, err := resolver.New(resolver.Config{Servers: []string{dnsSrv.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Relay = pf.SMTPAddr()
	cfg.From = "dmarc-reports@mx.example.net"
	cfg.HELO = "mx.example.net"
	cfg.StartTLS = StartTLSRequire
	cfg.TLSCAFile = cert.CertFile
	cfg.RetryBackoff = cache.Duration(time.Second)
	s, err := New(cfg, Deps{Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	r := testReport("mailto:dmarc@example.com", "mailto:agg@example.net!50m", "mailto:agg@example.org")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Send(ctx, r); err != nil {
		t.Fatal(err)
	}
	msgs, err := sink.Wait(2, 30*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, pf.Log())
	}
	time.Sleep(500 * time.Millisecond) // a third message, to example.org, would be a defect
	msgs = sink.Messages()
	if len(msgs) != 2 {
		t.Fatalf("sink got %d messages, want 2 (example.org does not confirm)", len(msgs))
	}
	got := map[string]bool{}
	sum := sha256.Sum256(r.XML)
	for _, m := range msgs {
		got[strings.Join(m.To, ",")] = true
		if !strings.Contains(m.Header(), "using TLS") {
			t.Errorf("Postfix's Received header shows no TLS:\n%s", m.Header())
		}
		p := parseDelivered(t, m.Data)
		if !bytes.Equal(p.xml, r.XML) || p.filename != wantFilename {
			t.Errorf("delivered report %q differs:\n%s", p.filename, p.xml)
		}
		py, err := exec.LookPath("python3")
		if err != nil {
			t.Fatal("python3 is needed to read the report independently")
		}
		file := filepath.Join(t.TempDir(), "msg.eml")
		if err := os.WriteFile(file, m.Data, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(py, "-c", pyReport, file).CombinedOutput()
		if err != nil {
			t.Fatalf("python3's email package: %v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		want := []string{wantFilename, hex.EncodeToString(sum[:]), "Report Domain: example.com Submitter: mx.example.net Report-ID: <1764720000.example.com@mx.example.net>"}
		if strings.Join(lines, "\n") != strings.Join(want, "\n") {
			t.Errorf("python3 read\n%s\nwant\n%s", out, strings.Join(want, "\n"))
		}
	}
	if !got["dmarc@example.com"] || !got["agg@example.net"] {
		t.Errorf("recipients %v, want dmarc@example.com and agg@example.net", got)
	}
}
