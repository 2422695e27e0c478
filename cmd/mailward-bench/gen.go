package main

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// The classes of a corpus, each with the verdict it must get.
var classes = []string{"pass", "dkim_only", "spf_only", "dmarc_reject", "dmarc_quarantine", "forged_ar", "multi_rcpt"}

const (
	benchOrigin   = "bench.test."
	benchAuthserv = "mx.bench.test"
	clientIP      = "192.0.2.10"
	clientName    = "mail.sender.bench.test"
)

func runGen(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "corpus `DIR` to write (required)")
	domains := fs.Int("domains", 20, "number of sender domains")
	messages := fs.Int("messages", 700, "number of messages")
	size := fs.Int("size", 4096, "approximate body size in `BYTES`")
	html := fs.Float64("html", 0, "`FRACTION` of messages written as multipart/alternative, quoted-printable text and HTML with links, as newsletters are")
	dnsAddr := fs.String("dns", "127.0.0.1:5300", "address the corpus DNS server will listen on, written into the bench config")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || *domains < 1 || *messages < 1 || *size < 0 || *html < 0 || *html > 1 {
		fs.Usage()
		return fmt.Errorf("gen: --out is required; --domains and --messages must be positive, --html between 0 and 1")
	}
	if err := os.MkdirAll(filepath.Join(*out, "msg"), 0o755); err != nil {
		return fmt.Errorf("creating corpus: %w", err)
	}
	g := &generator{size: *size, html: *html}
	if err := g.zoneHeader(); err != nil {
		return err
	}
	for i := 0; i < *domains; i++ {
		if err := g.addDomain(i); err != nil {
			return err
		}
	}
	m := Manifest{Zone: "zone.txt", Origin: benchOrigin, AuthServ: benchAuthserv}
	for n := 0; n < *messages; n++ {
		class := classes[n%len(classes)]
		d := g.domains[n%len(g.domains)]
		it, raw, err := g.message(n, class, d)
		if err != nil {
			return err
		}
		it.File = fmt.Sprintf("msg/%06d.eml", n)
		if err := os.WriteFile(filepath.Join(*out, it.File), raw, 0o644); err != nil {
			return fmt.Errorf("writing message: %w", err)
		}
		m.Items = append(m.Items, it)
	}
	if err := os.WriteFile(filepath.Join(*out, "zone.txt"), g.zone.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing zone: %w", err)
	}
	mb, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(*out, "manifest.json"), mb, 0o644); err != nil {
		return fmt.Errorf("writing manifest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(*out, "rules.yaml"), []byte(benchRules), 0o644); err != nil {
		return err
	}
	// Relative paths in a config are read from its own directory.
	cfg := fmt.Sprintf(benchConfig, benchAuthserv, *dnsAddr, "rules.yaml")
	if err := os.WriteFile(filepath.Join(*out, "mailward.yaml"), []byte(cfg), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %d messages over %d domains to %s\n", *messages, *domains, *out)
	return nil
}

const benchRules = `rules:
  - name: blocked-recipient
    description: the multi_rcpt class sends to one refused recipient
    when: rcpt startsWith "blocked@"
    action: reject
    code: "550 5.1.1"
    message: No such user here
`

const benchConfig = `# mailward config for a bench run over this corpus; serve the zone with
# mailward-bench dns --corpus DIR --listen ADDR first.
hostname: %s
milter:
  listen: inet:127.0.0.1:8891
# For mailward-bench smtp --addr 127.0.0.1:2525 --xclient --sink 127.0.0.1:2526
smtp:
  listen: 127.0.0.1:2525
  upstream: 127.0.0.1:2526
  upstream_tls: "off"
  trusted_networks: [127.0.0.1]
  max_connections_per_ip: 200
# For mailward-bench policy --addr 127.0.0.1:10040
policy:
  listen: inet:127.0.0.1:10040
admin:
  listen: ""
dns:
  servers: [%q]
dmarc:
  enforce: true
rules:
  files: [%q]
log:
  level: warn
`

type domain struct {
	name    string // d3.bench.test
	qname   string // q3.bench.test, p=quarantine
	rsa     crypto.Signer
	ed      crypto.Signer
	counter int
}

type generator struct {
	zone    bytes.Buffer
	domains []*domain
	size    int
	html    float64 // fraction of messages with an HTML alternative
}

func (g *generator) zoneHeader() error {
	fmt.Fprintf(&g.zone, "$ORIGIN %s\n$TTL 3600\n", benchOrigin)
	fmt.Fprintf(&g.zone, "@ IN SOA ns.bench.test. hostmaster.bench.test. 1 3600 600 86400 300\n@ IN NS ns.bench.test.\nns IN A 127.0.0.1\n")
	// The sending host: forward-confirmed reverse DNS.
	fmt.Fprintf(&g.zone, "mail.sender IN A %s\n", clientIP)
	fmt.Fprintf(&g.zone, "2.0.192.in-addr.arpa. IN SOA ns.bench.test. hostmaster.bench.test. 1 3600 600 86400 300\n")
	fmt.Fprintf(&g.zone, "10.2.0.192.in-addr.arpa. IN PTR %s.\n", clientName)
	// The unaligned bounce domain of an email service provider, whose SPF refuses the client.
	fmt.Fprintf(&g.zone, "esp IN TXT \"v=spf1 -all\"\nesp IN MX 10 mail.sender\n")
	return nil
}

func (g *generator) addDomain(i int) error {
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	d := &domain{name: fmt.Sprintf("d%d.bench.test", i), qname: fmt.Sprintf("q%d.bench.test", i), rsa: rsaKey, ed: edKey}
	pub, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	if err != nil {
		return err
	}
	for _, n := range []string{d.name, d.qname} {
		fmt.Fprintf(&g.zone, "%s. IN MX 10 mail.sender\n", n)
		fmt.Fprintf(&g.zone, "%s. IN TXT \"v=spf1 ip4:192.0.2.0/24 -all\"\n", n)
		fmt.Fprintf(&g.zone, "rsa._domainkey.%s. IN TXT %s\n", n, txtChunks("v=DKIM1; k=rsa; p="+base64.StdEncoding.EncodeToString(pub)))
		fmt.Fprintf(&g.zone, "ed._domainkey.%s. IN TXT \"v=DKIM1; k=ed25519; p=%s\"\n", n, base64.StdEncoding.EncodeToString(edKey.Public().(ed25519.PublicKey)))
	}
	fmt.Fprintf(&g.zone, "_dmarc.%s. IN TXT \"v=DMARC1; p=reject; rua=mailto:dmarc@%s\"\n", d.name, d.name)
	fmt.Fprintf(&g.zone, "_dmarc.%s. IN TXT \"v=DMARC1; p=quarantine\"\n", d.qname)
	g.domains = append(g.domains, d)
	return nil
}

// txtChunks splits a long TXT value into 255-byte character-strings.
func txtChunks(s string) string {
	var parts []string
	for len(s) > 255 {
		parts = append(parts, `"`+s[:255]+`"`)
		s = s[255:]
	}
	return strings.Join(append(parts, `"`+s+`"`), " ")
}

func (g *generator) message(n int, class string, d *domain) (Item, []byte, error) {
	it := Item{Class: class, IP: clientIP, Helo: clientName, Rcpts: []string{fmt.Sprintf("user%d@rcpt.bench.test", n)}, Expect: "accept"}
	author := d.name
	sign := true
	it.From = "bounce@" + d.name
	var extra []string
	switch class {
	case "dkim_only":
		it.From = "bounce@esp.bench.test"
	case "spf_only":
		sign = false
	case "dmarc_reject":
		it.From, sign, it.Expect = "bounce@esp.bench.test", false, "reject"
	case "dmarc_quarantine":
		author = d.qname
		it.From, sign, it.Expect = "bounce@esp.bench.test", false, "quarantine"
	case "forged_ar":
		extra = append(extra, "Authentication-Results: "+benchAuthserv+"; dkim=pass header.d=bank.example")
		it.RemoveHeader = "Authentication-Results"
	case "multi_rcpt":
		it.Rcpts = append(it.Rcpts, fmt.Sprintf("blocked@rcpt.bench.test"), fmt.Sprintf("other%d@rcpt.bench.test", n))
		it.RejectRcpts = []string{"blocked@rcpt.bench.test"}
	}
	var b bytes.Buffer
	for _, e := range extra {
		b.WriteString(e + "\r\n")
	}
	fmt.Fprintf(&b, "From: Sender %d <news@%s>\r\nTo: %s\r\nSubject: bench message %d (%s)\r\n", n, author, it.Rcpts[0], n, class)
	fmt.Fprintf(&b, "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <%d.%s@%s>\r\nMIME-Version: 1.0\r\n", n, class, author)
	// The golden-ratio sequence picks the fraction evenly over the
	// message numbers without following the classes' cycle.
	if _, f := math.Modf(float64(n) * 0.6180339887498949); f < g.html {
		g.alternative(&b, n, author)
	} else {
		b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\n")
		line := "The quick brown fox jumps over the lazy dog; mail filters keep spam away.\r\n"
		for written := 0; written < g.size; written += len(line) {
			b.WriteString(line)
		}
	}
	if !sign {
		return it, b.Bytes(), nil
	}
	signer, sel := d.rsa, "rsa"
	if d.counter++; d.counter%2 == 0 {
		signer, sel = d.ed, "ed"
	}
	var signed bytes.Buffer
	err := dkim.Sign(&signed, bytes.NewReader(b.Bytes()), &dkim.SignOptions{
		Domain: author, Selector: sel, Signer: signer,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
		HeaderKeys: []string{"From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"},
	})
	if err != nil {
		return it, nil, fmt.Errorf("signing message %d: %w", n, err)
	}
	return it, signed.Bytes(), nil
}

// alternative writes a newsletter's body of about g.size bytes: a
// quoted-printable text part and an HTML part with a few links each, one
// of them to a domain of its own per message, so that link look-ups are
// not all cache hits.
func (g *generator) alternative(b *bytes.Buffer, n int, author string) {
	boundary := fmt.Sprintf("=_alt_%d", n)
	fmt.Fprintf(b, "Content-Type: multipart/alternative; boundary=%q\r\n\r\n", boundary)
	fmt.Fprintf(b, "--%s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n", boundary)
	text := "Gr=C3=BC=C3=9Fe! The quick brown fox jumps over the lazy dog; mail filters keep =\r\nspam away. Read more at https://www." + author + "/news/" + fmt.Sprint(n) + "\r\n"
	for written := 0; written < g.size/2; written += len(text) {
		b.WriteString(text)
	}
	fmt.Fprintf(b, "\r\n--%s\r\nContent-Type: text/html; charset=utf-8\r\n\r\n", boundary)
	b.WriteString("<html><head><style>p { color: #333 }</style></head><body>\r\n")
	para := fmt.Sprintf("<p>The quick brown fox jumps over the <b>lazy dog</b>; see <a href=\"https://www.%s/offer?id=%d\">our offer</a>"+
		" and <a href=\"http://shop%d.example.com/item\">the shop</a>.</p>\r\n", author, n, n)
	for written := 0; written < g.size/2; written += len(para) {
		b.WriteString(para)
	}
	fmt.Fprintf(b, "<img src=\"https://cdn.bench.test/logo.png\"></body></html>\r\n--%s--\r\n", boundary)
}
