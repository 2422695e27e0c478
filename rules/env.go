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
	vScore
	numVars
)

const allVars = uint64(1)<<numVars - 1

// contentVars are read from the message itself: a front that never sees
// it (policy.Facts.NoContent) skips the rules that read them.
const contentVars = 1<<vHeaders | 1<<vHeader | 1<<vSubject | 1<<vHeaderFrom | 1<<vHeaderFromDomain |
	1<<vMessageID | 1<<vAttachments | 1<<vDKIM | 1<<vDMARC

// variable describes one name rules can read and the stage it becomes known.
type variable struct {
	name  string
	stage policy.Stage
}

var variables = [numVars]variable{
	vIP:               {"ip", policy.StageConnect},
	vIPVersion:        {"ip_version", policy.StageConnect},
	vPTR:              {"ptr", policy.StageConnect},
	vFCrDNS:           {"fcrdns", policy.StageConnect},
	vIPRev:            {"iprev", policy.StageConnect},
	vDNSBL:            {"dnsbl", policy.StageConnect},
	vDNSBLNames:       {"dnsbl_names", policy.StageConnect},
	vDNSBLErrors:      {"dnsbl_errors", policy.StageConnect},
	vNow:              {"now", policy.StageConnect},
	vQueueID:          {"queue_id", policy.StageConnect},
	vHelo:             {"helo", policy.StageHelo},
	vSPFHelo:          {"spf_helo", policy.StageHelo},
	vMailFrom:         {"mail_from", policy.StageMail},
	vMailFromDomain:   {"mail_from_domain", policy.StageMail},
	vAuthUser:         {"auth_user", policy.StageMail},
	vTLS:              {"tls", policy.StageMail},
	vSPF:              {"spf", policy.StageMail},
	vRcpt:             {"rcpt", policy.StageRcpt},
	vRcpts:            {"rcpts", policy.StageRcpt},
	vRcptCount:        {"rcpt_count", policy.StageRcpt},
	vHeaders:          {"headers", policy.StageData},
	vHeader:           {"header", policy.StageData},
	vSubject:          {"subject", policy.StageData},
	vHeaderFrom:       {"header_from", policy.StageData},
	vHeaderFromDomain: {"header_from_domain", policy.StageData},
	vMessageID:        {"message_id", policy.StageData},
	vSize:             {"size", policy.StageEOM},
	vAttachments:      {"attachments", policy.StageEOM},
	vDKIM:             {"dkim", policy.StageEOM},
	vDMARC:            {"dmarc", policy.StageEOM},
	vScore:            {"score", policy.StageEOM},
}

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
		if need&(1<<id) == 0 {
			continue
		}
		switch id {
		case vIP:
			if f.IP.IsValid() {
				e.IP = f.IP.Unmap().WithZone("").String()
			}
		case vIPVersion:
			switch {
			case !f.IP.IsValid():
			case f.IP.Unmap().Is4():
				e.IPVersion = 4
			default:
				e.IPVersion = 6
			}
		case vPTR:
			if f.IPRev != nil {
				e.PTR = f.IPRev.PTR
			}
		case vFCrDNS:
			e.FCrDNS = f.IPRev != nil && f.IPRev.FCrDNS
		case vIPRev:
			if f.IPRev != nil {
				e.IPRev = f.IPRev.Result
			}
		case vDNSBL:
			for _, r := range f.DNSBL {
				if len(r.Codes) == 0 {
					continue
				}
				old := st.dnsbl[r.Zone]
				// A full slice expression makes append copy, never write into the facts.
				st.dnsbl[r.Zone] = append(old[:len(old):len(old)], r.Codes...)
			}
			e.DNSBL = st.dnsbl
		case vDNSBLNames:
			for _, r := range f.DNSBL {
				if len(r.Names) == 0 {
					continue
				}
				old := st.names[r.Zone]
				st.names[r.Zone] = append(old[:len(old):len(old)], r.Names...)
			}
			e.DNSBLNames = st.names
		case vDNSBLErrors:
			for _, r := range f.DNSBL {
				if r.Error != "" && st.errs[r.Zone] == "" {
					st.errs[r.Zone] = r.Error
				}
			}
			e.DNSBLErrors = st.errs
		case vNow:
			e.Now = f.Time
		case vQueueID:
			e.QueueID = f.QueueID
		case vHelo:
			e.Helo = f.Helo
		case vSPFHelo:
			if f.SPFHelo != nil {
				e.SPFHelo = f.SPFHelo.Result
			}
		case vMailFrom:
			e.MailFrom = f.MailFrom
		case vMailFromDomain:
			e.MailFromDomain = policy.DomainOf(f.MailFrom)
		case vAuthUser:
			e.AuthUser = f.AuthUser
		case vTLS:
			e.TLS = f.TLS
		case vSPF:
			if f.SPF != nil {
				e.SPF = f.SPF.Result
			}
		case vRcpt:
			e.Rcpt = f.Rcpt
		case vRcpts:
			e.Rcpts = f.Rcpts
		case vRcptCount:
			e.RcptCount = len(f.Rcpts)
			if f.Rcpt != "" {
				e.RcptCount++
			}
		case vHeaders:
			for _, h := range f.Headers {
				k := strings.ToLower(h.Name)
				st.headers[k] = append(st.headers[k], h.Value)
			}
			e.Headers = st.headers
		case vSubject:
			e.Subject = decodeHeader(f.Header("Subject"))
		case vHeaderFrom:
			e.HeaderFrom = headerAddress(f.Header("From"))
		case vHeaderFromDomain:
			e.HeaderFromDomain = policy.DomainOf(headerAddress(f.Header("From")))
		case vMessageID:
			e.MessageID = strings.TrimSpace(f.Header("Message-ID"))
		case vSize:
			e.Size = int(f.Size)
		case vAttachments:
			if len(f.Attachments) > 0 {
				e.Attachments = make([]Attachment, len(f.Attachments))
				for i, a := range f.Attachments {
					e.Attachments[i] = Attachment{Name: a.Name, ContentType: strings.ToLower(a.ContentType), Size: int(a.Size)}
				}
			}
		case vDKIM:
			if len(f.DKIM) > 0 {
				e.DKIM = make([]DKIMResult, len(f.DKIM))
				for i, d := range f.DKIM {
					e.DKIM[i] = DKIMResult{Domain: strings.ToLower(d.Domain), Selector: d.Selector, Algorithm: d.Algorithm, Result: d.Result, Reason: d.Reason}
				}
			}
		case vDMARC:
			if d := f.DMARC; d != nil {
				e.DMARC = DMARCResult{Result: d.Result, Policy: d.Policy, Domain: strings.ToLower(d.Domain),
					PolicyDomain: d.PolicyDomain, OrgDomain: d.OrgDomain, Testing: d.Testing, Reason: d.Reason}
			}
		}
	}
}

// value returns a variable's current value, for explanations.
func (e *env) value(id int) any {
	switch id {
	case vIP:
		return e.IP
	case vIPVersion:
		return e.IPVersion
	case vPTR:
		return e.PTR
	case vFCrDNS:
		return e.FCrDNS
	case vIPRev:
		return e.IPRev
	case vDNSBL:
		return e.DNSBL
	case vDNSBLNames:
		return e.DNSBLNames
	case vDNSBLErrors:
		return e.DNSBLErrors
	case vNow:
		return e.Now
	case vQueueID:
		return e.QueueID
	case vHelo:
		return e.Helo
	case vSPFHelo:
		return e.SPFHelo
	case vMailFrom:
		return e.MailFrom
	case vMailFromDomain:
		return e.MailFromDomain
	case vAuthUser:
		return e.AuthUser
	case vTLS:
		return e.TLS
	case vSPF:
		return e.SPF
	case vRcpt:
		return e.Rcpt
	case vRcpts:
		return e.Rcpts
	case vRcptCount:
		return e.RcptCount
	case vHeaders:
		return e.Headers
	case vSubject:
		return e.Subject
	case vHeaderFrom:
		return e.HeaderFrom
	case vHeaderFromDomain:
		return e.HeaderFromDomain
	case vMessageID:
		return e.MessageID
	case vHeader:
		return e.Header
	case vSize:
		return e.Size
	case vAttachments:
		return e.Attachments
	case vDKIM:
		return e.DKIM
	case vDMARC:
		return e.DMARC
	case vScore:
		return e.Score
	}
	return nil
}

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

// unknownVars returns the variables f leaves unknown because their check
// had a temporary error, each with the check that failed. A rule that
// reads one of them cannot be sure of its answer.
func unknownVars(f *policy.Facts) (mask uint64, cause func(id int) string) {
	const iprevVars = 1<<vPTR | 1<<vFCrDNS | 1<<vIPRev
	const listVars = 1<<vDNSBL | 1<<vDNSBLNames | 1<<vDNSBLErrors
	var failedZones []string
	if f.IPRev != nil && f.IPRev.Result == "temperror" {
		mask |= iprevVars
	}
	for _, r := range f.DNSBL {
		if r.Error != "" {
			mask |= listVars
			failedZones = append(failedZones, r.Zone)
		}
	}
	if f.SPFHelo != nil && f.SPFHelo.Result == "temperror" {
		mask |= 1 << vSPFHelo
	}
	if f.SPF != nil && f.SPF.Result == "temperror" {
		mask |= 1 << vSPF
	}
	for _, d := range f.DKIM {
		if d.Result == "temperror" {
			mask |= 1 << vDKIM
		}
	}
	if f.DMARC != nil && f.DMARC.Result == "temperror" {
		mask |= 1 << vDMARC
	}
	return mask, func(id int) string {
		switch {
		case iprevVars&(1<<id) != 0:
			return "iprev temperror"
		case listVars&(1<<id) != 0:
			return "DNS list " + strings.Join(failedZones, ", ") + " failed"
		}
		return variables[id].name + " temperror"
	}
}

// unknownText says which of the variables in read f leaves unknown, and
// why: "fcrdns, ptr (iprev temperror)"; "" when it knows them all.
func unknownText(read uint64, f *policy.Facts) string {
	mask, cause := unknownVars(f)
	read &= mask
	if read == 0 {
		return ""
	}
	var parts []string
	var names []string
	last := ""
	for id := 0; id < numVars; id++ {
		if read&(1<<id) == 0 {
			continue
		}
		c := cause(id)
		if c != last && len(names) > 0 {
			parts = append(parts, strings.Join(names, ", ")+" ("+last+")")
			names = nil
		}
		last = c
		names = append(names, variables[id].name)
	}
	parts = append(parts, strings.Join(names, ", ")+" ("+last+")")
	return strings.Join(parts, "; ")
}
