package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"reflect"
	"strings"

	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/rules"
)

// checkReport is what `mailward check --json` prints. Field names are a
// contract with scripts: add, never rename. Every field is always
// present: empty strings, zero, false and [] stand for nothing; a check
// that did not run is null (spf, spf_helo, dmarc, iprev). Only explain
// depends on a flag (--explain). README.md lists the fields. The checks'
// results are not declared here: they are policy.Results, printed with
// every field of the checks' own types (see MarshalJSON).
type checkReport struct {
	File           string              `json:"file"` // the message checked; - for standard input
	Action         string              `json:"action"`
	SMTPCode       int                 `json:"smtp_code"`
	EnhancedCode   string              `json:"enhanced_code"`
	Message        string              `json:"message"`
	Reason         string              `json:"reason"`
	Stage          string              `json:"stage"`
	Rcpts          []rcptReport        `json:"rcpts"`
	URLs           []urlReport         `json:"urls"`
	Content        *contentReport      `json:"content"`
	Rules          []string            `json:"rules"`
	Matches        []matchReport       `json:"matches"`
	Score          float64             `json:"score"`
	HeadersAdded   []headerReport      `json:"headers_added"`
	HeadersRemoved []policy.HeaderRef  `json:"headers_removed"`
	Stages         []stageReport       `json:"stages"`
	Explain        []rules.Explanation `json:"explain,omitempty"`
	// Checks are spf, spf_helo, dkim, dmarc, iprev, dnsbl, uribl, ...
	Checks policy.Results `json:"-"`
}

// MarshalJSON prints the report's own fields, then every field of the
// checks' results.
func (r *checkReport) MarshalJSON() ([]byte, error) {
	type plain checkReport // without this method
	head, err := json.Marshal((*plain)(r))
	if err != nil {
		return nil, err
	}
	var checks bytes.Buffer
	if err := writeEveryField(&checks, reflect.ValueOf(r.Checks)); err != nil {
		return nil, err
	}
	if checks.Len() <= 2 {
		return head, nil
	}
	out := append(head[:len(head)-1], ',')
	return append(out, checks.Bytes()[1:]...), nil
}

var jsonMarshaler = reflect.TypeFor[json.Marshaler]()

// writeEveryField writes v as JSON with every field present, whatever
// its omitempty says: strings, numbers and bools as they are, a nil
// slice as [], a nil pointer as null; json:"-" fields stay out. So one
// declaration of a result type serves the journal, which leaves empty
// fields out, and `check --json`, which shows them all.
func writeEveryField(b *bytes.Buffer, v reflect.Value) error {
	if v.Type().Implements(jsonMarshaler) {
		data, err := json.Marshal(v.Interface())
		b.Write(data)
		return err
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			b.WriteString("null")
			return nil
		}
		return writeEveryField(b, v.Elem())
	case reflect.Struct:
		b.WriteByte('{')
		first := true
		for i := range v.NumField() {
			f := v.Type().Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if !first {
				b.WriteByte(',')
			}
			first = false
			key, _ := json.Marshal(cmp.Or(name, f.Name))
			b.Write(key)
			b.WriteByte(':')
			if err := writeEveryField(b, v.Field(i)); err != nil {
				return err
			}
		}
		b.WriteByte('}')
		return nil
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			break
		}
		b.WriteByte('[')
		for i := range v.Len() {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeEveryField(b, v.Index(i)); err != nil {
				return err
			}
		}
		b.WriteByte(']')
		return nil
	}
	data, err := json.Marshal(v.Interface())
	b.Write(data)
	return err
}

type stageReport struct {
	Stage   string `json:"stage"`
	Subject string `json:"subject"` // the HELO name, sender or recipient
	Action  string `json:"action"`
	Reply   string `json:"reply"` // the SMTP reply of a reject or tempfail
}

type rcptReport struct {
	Rcpt   string `json:"rcpt"`
	Action string `json:"action"`
	Code   int    `json:"code"`
}

// urlReport is one link of the message (checks/content).
type urlReport struct {
	Scheme string `json:"scheme"`
	Host   string `json:"host"`
	Domain string `json:"domain"`
	Path   string `json:"path"`
}

// contentReport is what the content scan found besides the links; null
// when it did not run.
type contentReport struct {
	HTML                bool   `json:"html"`
	TextParts           int    `json:"text_parts"`
	TextBytes           int    `json:"text_bytes"`
	URLCount            int    `json:"url_count"`
	PhishLinks          int    `json:"phish_links"`
	FromDisplayMismatch bool   `json:"from_display_mismatch"`
	Limit               string `json:"limit"`
}

type matchReport struct {
	Rule    string  `json:"rule"`
	Action  string  `json:"action"`
	Stage   string  `json:"stage"`
	Monitor bool    `json:"monitor"`
	Score   float64 `json:"score"`
	Unknown string  `json:"unknown"` // facts a temporary error left unknown
}

type headerReport struct {
	Name    string `json:"name"`
	Value   string `json:"value"`
	Replace bool   `json:"replace"`
}

// newCheckReport turns a driven transaction into the report.
func newCheckReport(out *policy.Outcome) *checkReport {
	v, f := out.Verdict, &out.Facts
	rep := &checkReport{
		Action: v.Action.String(), Stage: v.Stage.String(), Reason: v.Reason, Score: f.Score,
		Rcpts: []rcptReport{}, URLs: []urlReport{}, Rules: []string{},
		Matches: []matchReport{}, HeadersAdded: []headerReport{}, HeadersRemoved: []policy.HeaderRef{}, Stages: []stageReport{},
		Checks: f.Results,
	}
	if v.Action == policy.Reject || v.Action == policy.Tempfail {
		rep.SMTPCode, rep.EnhancedCode, rep.Message = v.Code, v.Enhanced, v.Text
	}
	for _, s := range out.Steps {
		sr := stageReport{Stage: s.Stage.String(), Subject: s.Subject, Action: s.Verdict.Action.String()}
		if s.Verdict.Action == policy.Reject || s.Verdict.Action == policy.Tempfail {
			sr.Reply = s.Verdict.Reply()
		}
		rep.Stages = append(rep.Stages, sr)
	}
	for _, r := range out.Rcpts {
		rep.Rcpts = append(rep.Rcpts, rcptReport{Rcpt: r.Rcpt, Action: r.Action.String(), Code: r.Code})
	}
	for _, u := range f.URLs {
		rep.URLs = append(rep.URLs, urlReport(u))
	}
	if c := f.Content; c != nil {
		rep.Content = &contentReport{HTML: c.HTML, TextParts: c.TextParts, TextBytes: len(f.BodyText), URLCount: c.URLCount,
			PhishLinks: c.PhishLinks, FromDisplayMismatch: c.FromDisplayMismatch, Limit: c.Limit}
	}
	for _, m := range out.Matches {
		rep.Rules = append(rep.Rules, m.Rule)
		rep.Matches = append(rep.Matches, matchReport{Rule: m.Rule, Action: m.Action, Stage: m.Stage.String(),
			Monitor: m.Monitor, Score: m.Score, Unknown: m.Unknown})
	}
	for _, h := range v.Headers {
		rep.HeadersAdded = append(rep.HeadersAdded, headerReport{Name: h.Name, Value: h.Value, Replace: h.Replace})
	}
	rep.HeadersRemoved = append(rep.HeadersRemoved, v.Remove...)
	return rep
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
