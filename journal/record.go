// Package journal keeps one line per finished transaction: what the rules
// could read, what the checks said and what was decided, never the body.
// `mailward rules replay` and `rules diff` play the lines through another
// rule set to show what it would have answered.
package journal

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/mailward/mailward/checks/spf"
	"github.com/mailward/mailward/policy"
)

// Version is the line format this build writes. Readers take every
// version up to it: fields are added, never renamed or given a new
// meaning; a change that cannot be read the old way raises the version.
const Version = 1

// Record is one journal line. The JSON names are a contract with
// scripts and with the journals already on disk (see README.md).
type Record struct {
	V          int       `json:"v"`
	Time       time.Time `json:"time"`
	Front      string    `json:"front"`
	QueueID    string    `json:"queue_id,omitempty"`
	IP         string    `json:"ip,omitempty"`
	ClientName string    `json:"client_name,omitempty"`
	Helo       string    `json:"helo,omitempty"`
	MailFrom   string    `json:"mail_from"`
	AuthUser   string    `json:"auth_user,omitempty"`
	TLS        bool      `json:"tls,omitempty"`
	TLSVersion string    `json:"tls_version,omitempty"`
	// Rcpts are every recipient offered, refused ones included, in order.
	Rcpts   []Rcpt   `json:"rcpts,omitempty"`
	Headers []Header `json:"headers,omitempty"`
	// Omitted names the header fields left out by journal.omit_headers.
	Omitted []string `json:"omitted_headers,omitempty"`
	// HeadersTruncated says the fields past the journal's bound were left out.
	HeadersTruncated bool         `json:"headers_truncated,omitempty"`
	Size             int64        `json:"size,omitempty"`
	Attachments      []Attachment `json:"attachments,omitempty"`
	// URLs and Content are what the content scan found; the decoded
	// text is not kept (a replay's rules read body_text as "").
	URLs    []URL    `json:"urls,omitempty"`
	Content *Content `json:"content,omitempty"`
	// Checks are the check results as the engine had them, each in its
	// check's own type and JSON (policy.Results).
	Checks policy.Results `json:"checks"`
	// Lookups are what rule functions learned from the network, e.g.
	// "org_domain:example.com": "example.com".
	Lookups map[string]string `json:"lookups,omitempty"`
	// Reached is the last stage the engine ran.
	Reached    string  `json:"reached"`
	Score      float64 `json:"score"`
	Verdict    Verdict `json:"verdict"`
	Matches    []Match `json:"matches,omitempty"`
	DurationMS float64 `json:"duration_ms"`
}

// Rcpt is one recipient and what was answered to it.
type Rcpt struct {
	Rcpt string `json:"rcpt"`
	// Action is accept, reject or tempfail.
	Action string `json:"action"`
	Code   int    `json:"code,omitempty"`
}

// Header is one header field, unfolded as rules see it.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// URL is one link of the message.
type URL struct {
	Scheme string `json:"scheme"`
	Host   string `json:"host"`
	Domain string `json:"domain,omitempty"`
	Path   string `json:"path,omitempty"`
}

// Content is what the content scan found besides the text and links.
type Content struct {
	HTML                bool   `json:"html,omitempty"`
	TextParts           int    `json:"text_parts"`
	URLCount            int    `json:"url_count,omitempty"`
	PhishLinks          int    `json:"phish_links,omitempty"`
	FromDisplayMismatch bool   `json:"from_display_mismatch,omitempty"`
	Limit               string `json:"limit,omitempty"`
}

// Attachment is one attachment's metadata.
type Attachment struct {
	Name        string `json:"name,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	Size        int64  `json:"size"`
}

// Verdict is what the transaction came to.
type Verdict struct {
	Action   string `json:"action"`
	Stage    string `json:"stage"`
	Code     int    `json:"code,omitempty"`
	Enhanced string `json:"enhanced_code,omitempty"`
	Message  string `json:"message,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Rule     string `json:"rule,omitempty"`
	// Unknown names facts the deciding rule read that a check's
	// temporary error left unknown.
	Unknown string `json:"unknown,omitempty"`
}

// Match is one rule that matched.
type Match struct {
	Rule    string  `json:"rule"`
	Action  string  `json:"action"`
	Stage   string  `json:"stage"`
	Monitor bool    `json:"monitor,omitempty"`
	Score   float64 `json:"score,omitempty"`
	Unknown string  `json:"unknown,omitempty"`
}

// newRecord turns a finished transaction into a line's content, leaving
// out the header fields omit names (lower case).
func newRecord(f *policy.Finished, omit map[string]bool) *Record {
	fa := &f.Facts
	r := &Record{
		V: Version, Time: fa.Time.UTC(), Front: f.Front, QueueID: fa.QueueID, ClientName: fa.ClientName,
		Helo: fa.Helo, MailFrom: fa.MailFrom, AuthUser: fa.AuthUser, TLS: fa.TLS, TLSVersion: fa.TLSVersion,
		Size: fa.Size, Reached: f.Reached.String(), Score: fa.Score, Verdict: verdictOf(f.Verdict),
		DurationMS: float64(f.Duration.Microseconds()) / 1000, Lookups: fa.Lookups,
	}
	if fa.IP.IsValid() {
		r.IP = fa.IP.String()
	}
	for _, o := range f.Rcpts {
		a := o.Action
		if !a.Final() {
			a = policy.Accept
		}
		r.Rcpts = append(r.Rcpts, Rcpt{Rcpt: o.Rcpt, Action: a.String(), Code: o.Code})
	}
	r.Headers = make([]Header, 0, len(fa.Headers))
	for _, h := range fa.Headers {
		if omit[strings.ToLower(h.Name)] {
			if !slices.Contains(r.Omitted, h.Name) {
				r.Omitted = append(r.Omitted, h.Name)
			}
			continue
		}
		r.Headers = append(r.Headers, Header(h))
	}
	for _, a := range fa.Attachments {
		r.Attachments = append(r.Attachments, Attachment(a))
	}
	for _, u := range fa.URLs {
		r.URLs = append(r.URLs, URL(u))
	}
	if x := fa.Content; x != nil {
		c := Content(*x)
		r.Content = &c
	}
	r.Checks = fa.Results
	for _, m := range f.Matches {
		r.Matches = append(r.Matches, Match{Rule: m.Rule, Action: m.Action, Stage: m.Stage.String(), Monitor: m.Monitor, Score: m.Score, Unknown: m.Unknown})
	}
	return r
}

func verdictOf(v policy.Verdict) Verdict {
	out := Verdict{Action: v.Action.String(), Stage: v.Stage.String(), Rule: v.Rule, Reason: v.Reason, Unknown: v.Unknown}
	if v.Action == policy.Reject || v.Action == policy.Tempfail {
		out.Code, out.Enhanced, out.Message = v.Code, v.Enhanced, v.Text
	}
	return out
}

// checked turns a line back into what the engine reads. It is the
// inverse of newRecord for everything the rules and checks can see.
type checked struct {
	ip      netip.Addr
	rcpts   []string
	reached policy.Stage
	headers []policy.Header
	attach  []policy.Attachment
	urls    []policy.URL
	content *policy.Content
	res     policy.Results
}

// decode checks a line's version and fields and converts them.
func (r *Record) decode() (*checked, error) {
	switch {
	case r.V == 0:
		return nil, fmt.Errorf("no version (\"v\"): not a journal line")
	case r.V > Version:
		return nil, fmt.Errorf("version %d is newer than this mailward reads (%d): replay with a newer mailward", r.V, Version)
	}
	out := &checked{}
	if r.IP != "" {
		ip, err := netip.ParseAddr(r.IP)
		if err != nil {
			return nil, fmt.Errorf("ip %q: %w", r.IP, err)
		}
		out.ip = ip
	}
	st, err := policy.ParseStage(r.Reached)
	if err != nil {
		return nil, fmt.Errorf("reached: %w", err)
	}
	out.reached = st
	for _, rc := range r.Rcpts {
		out.rcpts = append(out.rcpts, rc.Rcpt)
	}
	for _, h := range r.Headers {
		out.headers = append(out.headers, policy.Header(h))
	}
	for _, a := range r.Attachments {
		out.attach = append(out.attach, policy.Attachment(a))
	}
	for _, u := range r.URLs {
		out.urls = append(out.urls, policy.URL(u))
	}
	if x := r.Content; x != nil {
		c := policy.Content(*x)
		out.content = &c
	}
	out.res = r.Checks
	// Lines before the identity was kept have it by position.
	identity := func(x *spf.Result, id string) *spf.Result {
		if x == nil || x.Identity != "" {
			return x
		}
		y := *x
		y.Identity = id
		return &y
	}
	out.res.SPFHelo, out.res.SPF = identity(out.res.SPFHelo, "helo"), identity(out.res.SPF, "mailfrom")
	return out, nil
}
