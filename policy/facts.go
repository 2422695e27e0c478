package policy

import (
	"net/netip"
	"strings"
	"time"

	"github.com/mailward/mailward/checks/content"
)

// Header is one message header as received, in order.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Attachment describes one MIME part with a file name or a non-inline disposition.
type Attachment struct {
	Name        string `json:"name"`
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
}

// URL is one link found in the message (eom), normalised: the host is
// lower-case with A-labels, an IP literal without brackets. Domain is
// the registrable domain of Host (the public suffix list, as URI
// blocklists expect); "" for an IP literal or a host without one. See checks/content.
type URL = content.URL

// Content is what the content scan found besides the text and the links.
type Content = content.Summary

// Facts is everything known about a transaction so far. Each field says the
// stage at which it becomes known; before that it holds its zero value.
type Facts struct {
	// Results are the checks' results, each known at its check's stage
	// (see Results).
	Results
	// Connect.
	IP          netip.Addr   `json:"ip"`
	ClientName  string       `json:"client_name,omitempty"` // the MTA's view of the client's name
	Time        time.Time    `json:"time"`
	Helo        string       `json:"helo,omitempty"` // helo
	MailFrom    string       `json:"mail_from"`      // mail; "" is the null sender
	AuthUser    string       `json:"auth_user,omitempty"`
	TLS         bool         `json:"tls"`
	TLSVersion  string       `json:"tls_version,omitempty"`
	Rcpt        string       `json:"rcpt,omitempty"`  // rcpt: the recipient being decided
	Rcpts       []string     `json:"rcpts,omitempty"` // accepted recipients so far
	Headers     []Header     `json:"-"`               // data (end of headers)
	Size        int64        `json:"size"`            // eom: header and body bytes
	Attachments []Attachment `json:"attachments,omitempty"`
	// URLs are the links found in the message's text parts (eom), each
	// once, in order of first appearance, at most content.max_urls.
	URLs []URL `json:"urls,omitempty"`
	// BodyText is the decoded text of the text parts (eom), HTML as
	// text, at most content.max_text_bytes.
	BodyText string `json:"-"`
	// Content is the rest of what the content scan found (eom); nil
	// when it did not run (content.enabled false, no content seen).
	Content *Content `json:"content,omitempty"`
	QueueID string   `json:"queue_id,omitempty"` // whenever the MTA tells it
	Score   float64  `json:"score"`
	// Signing is how DKIM signing ended (eom): signed, missing_key,
	// not_in_table, no_from or error; empty when the message was not
	// one to sign.
	Signing string `json:"signing,omitempty"`
	// Lookups are the answers rule functions got from the network in
	// this message, by key such as "org_domain:example.com" (see Lookup).
	Lookups map[string]string `json:"-"`
	// Macros are the MTA's macros, merged over all stages so far.
	Macros map[string]string `json:"-"`
	// NoContent says the front never sees the message (a policy
	// service): rules that read its header or content do not run.
	NoContent bool `json:"-"`
}

// Header returns the first header with the name, case-insensitively.
func (f *Facts) Header(name string) string {
	for _, h := range f.Headers {
		if strings.EqualFold(h.Name, name) {
			return h.Value
		}
	}
	return ""
}

// HeaderValues returns every header with the name, in order.
func (f *Facts) HeaderValues(name string) []string {
	var out []string
	for _, h := range f.Headers {
		if strings.EqualFold(h.Name, name) {
			out = append(out, h.Value)
		}
	}
	return out
}

// DomainOf returns the domain part of an address, lower-cased; "" if none.
func DomainOf(addr string) string {
	addr = strings.Trim(strings.TrimSpace(addr), "<>")
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(addr[i+1:], "."))
}
