package deliver

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"mime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/idna"
)

// payload is a report ready to be mailed: compressed once, addressed per
// destination.
type payload struct {
	subject  string
	filename string
	gz       []byte
	report   Report
}

// newPayload compresses r and names it per RFC 9990 section 2.5.2.
func newPayload(r Report, submitter string) (*payload, error) {
	// The Subject and file name want a domain-name: A-labels.
	if d, err := idna.Lookup.ToASCII(strings.TrimSuffix(r.PolicyDomain, ".")); err == nil {
		r.PolicyDomain = strings.ToLower(d)
	}
	if err := checkReport(r); err != nil {
		return nil, err
	}
	p := &payload{report: r}
	begin, end := strconv.FormatInt(r.Begin.Unix(), 10), strconv.FormatInt(r.End.Unix(), 10)
	base := submitter + "!" + r.PolicyDomain + "!" + begin + "!" + end
	// unique-id is 1*(ALPHA / DIGIT) and must equal the Report-ID when
	// used (section 2.1.5): only a purely alphanumeric ID can be both.
	if isAlnum(r.ReportID) {
		base += "!" + r.ReportID
	}
	p.filename = base + ".xml.gz"
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	zw.Name = base + ".xml"
	zw.ModTime = r.End
	if _, err := zw.Write(r.XML); err != nil {
		return nil, fmt.Errorf("compressing the report: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compressing the report: %w", err)
	}
	p.gz = buf.Bytes()
	// Folded at the FWS the ABNF allows, as the RFC's example is.
	p.subject = "Report Domain: " + r.PolicyDomain + "\r\n Submitter: " + submitter + "\r\n Report-ID: <" + r.ReportID + ">"
	return p, nil
}

// checkReport rejects a report that cannot be named as the RFC wants.
func checkReport(r Report) error {
	if !isDomain(r.PolicyDomain) {
		return fmt.Errorf("report policy domain %q is not a domain name", r.PolicyDomain)
	}
	if !isRidfmt(r.ReportID) {
		return fmt.Errorf("report ID %q: want dot-atom text, optionally @ and dot-atom text (RFC 9990 section 2.5.1)", r.ReportID)
	}
	if r.Begin.IsZero() || r.End.Before(r.Begin) || r.Begin.Unix() < 0 {
		return fmt.Errorf("report period %s to %s is not a time range", r.Begin, r.End)
	}
	if len(r.XML) == 0 {
		return fmt.Errorf("report %s has no XML", r.ReportID)
	}
	return nil
}

// message is the RFC 5322 message for one destination: a text part for
// people and the compressed report as an application/gzip attachment.
func (p *payload) message(from, to string, now time.Time) []byte {
	boundary := newBoundary()
	r := p.report
	var b bytes.Buffer
	h := func(name, value string) { b.WriteString(name + ": " + value + "\r\n") }
	h("From", "<"+from+">")
	h("To", "<"+to+">")
	h("Date", now.Format(time.RFC1123Z))
	h("Subject", p.subject)
	h("Message-ID", "<"+messageID(r.ReportID, to)+">")
	// RFC 3834: no vacation replies or bounces-to-bounces loops.
	h("Auto-Submitted", "auto-generated")
	h("MIME-Version", "1.0")
	h("Content-Type", mime.FormatMediaType("multipart/mixed", map[string]string{"boundary": boundary}))
	b.WriteString("\r\n")
	b.WriteString("This is a DMARC aggregate report (RFC 9990), in MIME format.\r\n")
	b.WriteString("\r\n--" + boundary + "\r\n")
	b.WriteString("Content-Type: text/plain; charset=us-ascii\r\n")
	b.WriteString("Content-Transfer-Encoding: 7bit\r\n\r\n")
	fmt.Fprintf(&b, "DMARC aggregate report for %s\r\n", r.PolicyDomain)
	fmt.Fprintf(&b, "Period: %s to %s (UTC)\r\n", r.Begin.UTC().Format(time.DateTime), r.End.UTC().Format(time.DateTime))
	fmt.Fprintf(&b, "Report-ID: %s\r\n", r.ReportID)
	b.WriteString("\r\n--" + boundary + "\r\n")
	b.WriteString("Content-Type: " + mime.FormatMediaType("application/gzip", map[string]string{"name": p.filename}) + "\r\n")
	b.WriteString("Content-Disposition: " + mime.FormatMediaType("attachment", map[string]string{"filename": p.filename}) + "\r\n")
	b.WriteString("Content-Transfer-Encoding: base64\r\n\r\n")
	enc := base64.StdEncoding.EncodeToString(p.gz)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	if enc != "" {
		b.WriteString(enc + "\r\n")
	}
	b.WriteString("\r\n--" + boundary + "--\r\n")
	return b.Bytes()
}

// messageID is the Report-ID with a tag of the destination: the same on
// a re-send, which lets a receiver spot the duplicate (section 2.5.1).
func messageID(reportID, to string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(to)))
	local, domain, ok := strings.Cut(reportID, "@")
	if !ok {
		domain = "dmarc.invalid"
	}
	return local + "." + hex.EncodeToString(sum[:4]) + "@" + domain
}

func newBoundary() string {
	var b [12]byte
	rand.Read(b[:])
	return "=_dmarc_" + hex.EncodeToString(b[:])
}

func isAlnum(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// isRidfmt is dot-atom-text ["@" dot-atom-text] (RFC 5322), at most 200 bytes.
func isRidfmt(s string) bool {
	if len(s) > 200 {
		return false
	}
	local, domain, at := strings.Cut(s, "@")
	return isDotAtom(local) && (!at || isDotAtom(domain))
}

func isDotAtom(s string) bool {
	if s == "" {
		return false
	}
	for a := range strings.SplitSeq(s, ".") {
		if a == "" {
			return false
		}
		for i := 0; i < len(a); i++ {
			if !isAtext(a[i]) {
				return false
			}
		}
	}
	return true
}

func isAtext(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// isDomain accepts an LDH domain name (A-labels included) of at least
// two labels.
func isDomain(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if len(s) > 253 || !strings.Contains(s, ".") {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
