package rules

import (
	"context"
	"mime"
	"net/mail"
	"reflect"
	"strings"
	"time"

	"github.com/expr-lang/expr/vm"

	"github.com/mailward/mailward/policy"
)

// Attachment is one attachment as rules see it.
type Attachment struct {
	Name        string `expr:"name"`
	ContentType string `expr:"content_type"`
	Size        int    `expr:"size"`
}

// DKIMResult is one verified signature as rules see it.
type DKIMResult struct {
	Domain    string `expr:"domain"`
	Selector  string `expr:"selector"`
	Algorithm string `expr:"algorithm"`
	Result    string `expr:"result"`
	Reason    string `expr:"reason"`
}

// DMARCResult is the message's DMARC outcome as rules see it; all fields
// are empty when DMARC was not evaluated.
type DMARCResult struct {
	Result       string `expr:"result"`
	Policy       string `expr:"policy"`
	Domain       string `expr:"domain"`
	PolicyDomain string `expr:"policy_domain"`
	OrgDomain    string `expr:"org_domain"`
	Testing      bool   `expr:"testing"`
	Reason       string `expr:"reason"`
}

// URL is one link of the message as rules see it.
type URL struct {
	Scheme string `expr:"scheme"`
	Host   string `expr:"host"`
	Domain string `expr:"domain"`
	Path   string `expr:"path"`
}

// env is what expressions read. The names in the tags are a user
// contract, documented in README.md; keep them.
type env struct {
	IP               string              `expr:"ip"`
	IPVersion        int                 `expr:"ip_version"`
	PTR              string              `expr:"ptr"`
	FCrDNS           bool                `expr:"fcrdns"`
	IPRev            string              `expr:"iprev"`
	DNSBL            map[string][]string `expr:"dnsbl"`
	DNSBLNames       map[string][]string `expr:"dnsbl_names"`
	DNSBLErrors      map[string]string   `expr:"dnsbl_errors"`
	Now              time.Time           `expr:"now"`
	QueueID          string              `expr:"queue_id"`
	Helo             string              `expr:"helo"`
	SPFHelo          string              `expr:"spf_helo"`
	MailFrom         string              `expr:"mail_from"`
	MailFromDomain   string              `expr:"mail_from_domain"`
	AuthUser         string              `expr:"auth_user"`
	TLS              bool                `expr:"tls"`
	SPF              string              `expr:"spf"`
	Rcpt             string              `expr:"rcpt"`
	Rcpts            []string            `expr:"rcpts"`
	RcptCount        int                 `expr:"rcpt_count"`
	Headers          map[string][]string `expr:"headers"`
	Header           func(string) string `expr:"header"`
	Subject          string              `expr:"subject"`
	HeaderFrom       string              `expr:"header_from"`
	HeaderFromDomain string              `expr:"header_from_domain"`
	MessageID        string              `expr:"message_id"`
	Size             int                 `expr:"size"`
	Attachments      []Attachment        `expr:"attachments"`
	DKIM             []DKIMResult        `expr:"dkim"`
	DMARC            DMARCResult         `expr:"dmarc"`
	URIBL            map[string][]string `expr:"uribl"`
	URIBLErrors      map[string]string   `expr:"uribl_errors"`
	BodyText         string              `expr:"body_text"`
	HTML             bool                `expr:"html"`
	TextParts        int                 `expr:"text_parts"`
	URLs             []URL               `expr:"urls"`
	URLDomains       []string            `expr:"url_domains"`
	URLCount         int                 `expr:"url_count"`
	PhishLinks       int                 `expr:"phish_links"`
	FromMismatch     bool                `expr:"from_display_mismatch"`
	Score            float64             `expr:"score"`
	// Ctx reaches functions that take a context; rules do not name it.
	Ctx context.Context `expr:"$ctx"`
}

// Variable ids, one bit each in a rule's read set.
const (
	vIP = iota
	vIPVersion
	vPTR
	vFCrDNS
	vIPRev
	vDNSBL
	vDNSBLNames
	vDNSBLErrors
	vNow
	vQueueID
	vHelo
	vSPFHelo
	vMailFrom
	vMailFromDomain
	vAuthUser
	vTLS
	vSPF
	vRcpt
	vRcpts
	vRcptCount
	vHeaders
	vHeader
	vSubject
	vHeaderFrom
	vHeaderFromDomain
	vMessageID
	vSize
	vAttachments
	vDKIM
	vDMARC
	vURIBL
	vURIBLErrors
	vBodyText
	vHTML
	vTextParts
	vURLs
	vURLDomains
	vURLCount
	vPhishLinks
	vFromMismatch
	vScore
	numVars
)

const allVars = uint64(1)<<numVars - 1

// contentVars are read from the message itself: a front that never sees
// it (policy.Facts.NoContent) skips the rules that read them.
const contentVars = 1<<vHeaders | 1<<vHeader | 1<<vSubject | 1<<vHeaderFrom | 1<<vHeaderFromDomain |
	1<<vMessageID | 1<<vAttachments | 1<<vDKIM | 1<<vDMARC | uriListVars | bodyVars

// bodyVars are what the content scan (checks/content) finds.
const bodyVars = 1<<vBodyText | 1<<vHTML | 1<<vTextParts | 1<<vURLs | 1<<vURLDomains |
	1<<vURLCount | 1<<vPhishLinks | 1<<vFromMismatch

// variableID finds a variable by name.
func variableID(name string) (int, bool) {
	for i, v := range variables {
		if v.name == name {
			return i, true
		}
	}
	return 0, false
}

// envTypes returns what expressions are compiled against: each name of
// the env struct with a value of its type. Programs then read a map of
// the same shape, filled once per stage: a map read costs no allocation,
// a struct field read through reflection costs one.
func envTypes() map[string]any {
	out := map[string]any{}
	t := reflect.TypeOf(env{})
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		out[f.Tag.Get("expr")] = reflect.Zero(f.Type).Interface()
	}
	// An interface's zero value has no type; give the context one.
	out[ctxName] = context.Background()
	return out
}

// ctxName is how functions that take a context reach it.
const ctxName = "$ctx"

// state is one evaluation's scratch space: the env filled once per stage,
// the values programs read, and a VM, reused through the Set's pool.
type state struct {
	env     env
	vals    map[string]any
	filled  uint64 // variables set in vals
	vm      vm.VM
	facts   *policy.Facts
	headers map[string][]string
	dnsbl   map[string][]string
	names   map[string][]string // dnsbl_names
	errs    map[string]string   // dnsbl_errors
	header  func(string) string

	// The element a native predicate is looking at.
	curAttachment *Attachment
	curDKIM       *DKIMResult
	curString     string
}

func newState() *state {
	st := &state{vals: envTypes(), headers: map[string][]string{}, dnsbl: map[string][]string{},
		names: map[string][]string{}, errs: map[string]string{}}
	st.header = st.headerValue
	return st
}

// zeroValues are the boxed zero values of the variables, to reset with.
var zeroValues = func() [numVars]any {
	var out [numVars]any
	var e env
	for id := range out {
		out[id] = e.value(id)
	}
	return out
}()

func (st *state) headerValue(name string) string {
	if st.facts == nil {
		return ""
	}
	return st.facts.Header(name)
}

// reset drops everything from the last evaluation so nothing of one
// message lingers into another.
func (st *state) reset() {
	for id := 0; id < numVars; id++ {
		if st.filled&(1<<id) != 0 {
			st.vals[variables[id].name] = zeroValues[id]
		}
	}
	st.filled = 0
	st.vals[ctxName] = context.Background()
	st.env = env{}
	st.facts = nil
	clear(st.headers)
	clear(st.dnsbl)
	clear(st.names)
	clear(st.errs)
}

// setScore updates the score programs see after a score rule matched.
func (st *state) setScore(score float64) {
	st.env.Score = score
	if st.filled&(1<<vScore) != 0 {
		st.vals["score"] = score
	}
}

// fill sets the variables in need from f, and boxes those in box into
// the map the VM reads.
func (st *state) fill(ctx context.Context, f *policy.Facts, need, box uint64) {
	st.facts = f
	e := &st.env
	e.Ctx = ctx
	e.Header = st.header
	e.Score = f.Score
	st.vals[ctxName] = ctx
	defer func() {
		for id := 0; id < numVars; id++ {
			if box&(1<<id) != 0 {
				st.vals[variables[id].name] = e.value(id)
			}
		}
		st.filled = box
	}()
	for id := 0; id < numVars; id++ {
		if need&(1<<id) != 0 && variables[id].fill != nil {
			variables[id].fill(st, f)
		}
	}
}

// value returns a variable's current value, for explanations.
func (e *env) value(id int) any { return variables[id].value(e) }

// decodeHeader decodes RFC 2047 encoded words; charsets the standard
// library does not know leave the value as received.
func decodeHeader(v string) string {
	var d mime.WordDecoder
	if s, err := d.DecodeHeader(v); err == nil {
		return s
	}
	return v
}

// headerAddress returns the first address of an address header such as
// From, leniently: broken headers still give what looks like an address.
func headerAddress(v string) string {
	v = strings.TrimSpace(v)
	if v == "" {
		return ""
	}
	if a, err := mail.ParseAddress(v); err == nil {
		return a.Address
	}
	if as, err := mail.ParseAddressList(v); err == nil && len(as) > 0 {
		return as[0].Address
	}
	if i := strings.LastIndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			return strings.TrimSpace(v[i+1 : i+j])
		}
	}
	return v
}
