package reports

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"
)

// Namespace is the RFC 9990 XML namespace of aggregate reports.
const Namespace = "urn:ietf:params:xml:ns:dmarc-2.0"

// Meta is the report_metadata the reporting organisation gives.
type Meta struct {
	OrgName          string
	Email            string
	ExtraContactInfo string
	// Submitter is the reporting domain, part of the Report-ID.
	Submitter string
	Generator string
}

// ReportID is the Report-ID of a policy domain's report for the period
// beginning at begin: the same on a re-send, alphanumeric so that the
// file name may carry it too (RFC 9990 section 2.5.2).
func ReportID(submitter, domain string, begin time.Time) string {
	sum := sha256.Sum256([]byte(submitter + "\x00" + domain))
	return strconv.FormatInt(begin.Unix(), 10) + hex.EncodeToString(sum[:6])
}

type feedback struct {
	XMLName  xml.Name `xml:"feedback"`
	NS       string   `xml:"xmlns,attr"`
	Version  string   `xml:"version"`
	Metadata struct {
		OrgName   string `xml:"org_name"`
		Email     string `xml:"email"`
		Extra     string `xml:"extra_contact_info,omitempty"`
		ReportID  string `xml:"report_id"`
		DateRange struct {
			Begin int64 `xml:"begin"`
			End   int64 `xml:"end"`
		} `xml:"date_range"`
		Generator string `xml:"generator,omitempty"`
	} `xml:"report_metadata"`
	Policy struct {
		Domain    string `xml:"domain"`
		Discovery string `xml:"discovery_method,omitempty"`
		P         string `xml:"p"`
		SP        string `xml:"sp,omitempty"`
		NP        string `xml:"np,omitempty"`
		FO        string `xml:"fo,omitempty"`
		ADKIM     string `xml:"adkim,omitempty"`
		ASPF      string `xml:"aspf,omitempty"`
		Testing   string `xml:"testing"`
	} `xml:"policy_published"`
	Records []record `xml:"record"`
}

type record struct {
	Row struct {
		SourceIP  string `xml:"source_ip"`
		Count     int64  `xml:"count"`
		Evaluated struct {
			Disposition string      `xml:"disposition"`
			DKIM        string      `xml:"dkim"`
			SPF         string      `xml:"spf"`
			Reasons     []xmlReason `xml:"reason"`
		} `xml:"policy_evaluated"`
	} `xml:"row"`
	Identifiers struct {
		HeaderFrom   string `xml:"header_from"`
		EnvelopeFrom string `xml:"envelope_from"`
	} `xml:"identifiers"`
	Auth struct {
		DKIM []struct {
			Domain   string `xml:"domain"`
			Selector string `xml:"selector"`
			Result   string `xml:"result"`
		} `xml:"dkim"`
		SPF *struct {
			Domain string `xml:"domain"`
			Scope  string `xml:"scope"`
			Result string `xml:"result"`
		} `xml:"spf"`
	} `xml:"auth_results"`
}

type xmlReason struct {
	Type    string `xml:"type"`
	Comment string `xml:"comment,omitempty"`
}

// Build writes the RFC 9990 document for d, whose period ends at end
// (exclusive). Records come sorted by count, then by content, so the
// same aggregate always gives the same bytes.
func Build(m Meta, d *Domain, end time.Time) ([]byte, error) {
	if len(d.Rows) == 0 {
		return nil, errors.New("no records: a report needs at least one")
	}
	var f feedback
	f.NS, f.Version = Namespace, "1.0"
	md := &f.Metadata
	md.OrgName, md.Email, md.Extra, md.Generator = m.OrgName, m.Email, m.ExtraContactInfo, m.Generator
	md.ReportID = ReportID(m.Submitter, d.Policy.Domain, d.Begin)
	// The period's last second: begin and end both belong to it.
	md.DateRange.Begin, md.DateRange.End = d.Begin.Unix(), end.Unix()-1
	p := d.Policy
	pp := &f.Policy
	pp.Domain, pp.Discovery, pp.P, pp.SP, pp.NP, pp.FO, pp.ADKIM, pp.ASPF = p.Domain, p.Discovery, p.P, p.SP, p.NP, p.FO, p.ADKIM, p.ASPF
	pp.Testing = "n"
	if p.Testing {
		pp.Testing = "y"
	}
	keys := slices.Collect(maps.Keys(d.Rows))
	slices.SortFunc(keys, func(a, b string) int {
		if d.Rows[a] != d.Rows[b] {
			return int(d.Rows[b] - d.Rows[a])
		}
		return bytes.Compare([]byte(a), []byte(b))
	})
	for _, k := range keys {
		var r Row
		if err := json.Unmarshal([]byte(k), &r); err != nil {
			return nil, fmt.Errorf("reading a stored row: %w", err)
		}
		f.Records = append(f.Records, toRecord(r, d.Rows[k]))
	}
	var b bytes.Buffer
	b.WriteString(xml.Header)
	enc := xml.NewEncoder(&b)
	enc.Indent("", "  ")
	if err := enc.Encode(&f); err != nil {
		return nil, fmt.Errorf("writing the report: %w", err)
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}

func toRecord(r Row, n int64) record {
	var x record
	x.Row.SourceIP, x.Row.Count = r.SourceIP, n
	ev := &x.Row.Evaluated
	ev.Disposition, ev.DKIM, ev.SPF = r.Disposition, passFail(r.DKIMAligned), passFail(r.SPFAligned)
	for _, rs := range r.Reasons {
		ev.Reasons = append(ev.Reasons, xmlReason(rs))
	}
	// envelope_from stays, empty, for the null reverse-path.
	x.Identifiers.HeaderFrom, x.Identifiers.EnvelopeFrom = r.HeaderFrom, r.EnvelopeFrom
	for _, d := range r.DKIM {
		x.Auth.DKIM = append(x.Auth.DKIM, struct {
			Domain   string `xml:"domain"`
			Selector string `xml:"selector"`
			Result   string `xml:"result"`
		}{d.Domain, d.Selector, d.Result})
	}
	if r.SPF != nil {
		x.Auth.SPF = &struct {
			Domain string `xml:"domain"`
			Scope  string `xml:"scope"`
			Result string `xml:"result"`
		}{r.SPF.Domain, "mfrom", r.SPF.Result}
	}
	return x
}

func passFail(ok bool) string {
	if ok {
		return "pass"
	}
	return "fail"
}
