package rules

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/dmarc"
	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/checks/spf"
	"github.com/mailward/mailward/checks/uribl"
	"github.com/mailward/mailward/policy"
)

// testCase is one parsed test: the input, what checks are assumed to
// say, and the expectation.
type testCase struct {
	name string
	pos  Pos

	ip       netip.Addr
	helo     string
	mailFrom string
	rcpts    []string
	authUser string
	tls      bool
	queueID  string
	headers  []policy.Header // as policy.ReadHeader gives them
	body     []byte

	checks assumedChecks
	expect expectation
}

type expectation struct {
	action   *policy.Action
	stage    *policy.Stage
	rules    []string
	notRules []string
	score    *float64
	code     int
	enhanced string
	message  *string
	headers  []policy.Header
}

var testKeys = []string{"name", "ip", "helo", "mail_from", "rcpt", "auth_user", "tls", "queue_id", "headers", "eml", "body",
	"ptr", "fcrdns", "iprev", "dnsbl", "dnsbl_names", "dnsbl_errors", "uribl", "uribl_errors", "spf", "spf_helo", "dkim", "dmarc", "expect"}

var expectKeys = []string{"action", "stage", "rules", "not_rules", "score", "code", "message", "headers"}

// testDefaults fill in what a test leaves out, so a short test still
// makes a whole transaction.
const (
	defaultTestIP   = "192.0.2.1"
	defaultTestRcpt = "postmaster@example.net"
)

// parseTests reads the tests: entries of one file. Rule names in
// expectations must be known.
func parseTests(fs *fileSpec, known map[string]bool, p *problems) []*testCase {
	var out []*testCase
	for _, n := range fs.tests {
		if tc := parseTest(fs.src, n, known, p); tc != nil {
			out = append(out, tc)
		}
	}
	return out
}

// testParser reads one test case, noting problems as it goes.
type testParser struct {
	src *source
	p   *problems
	ok  bool
}

func (tp *testParser) errorf(n *yaml.Node, format string, args ...any) {
	tp.p.errorf(tp.src.pos(n), format, args...)
	tp.ok = false
}

func (tp *testParser) scalar(n *yaml.Node, key string) string {
	if n.Kind != yaml.ScalarNode {
		tp.errorf(n, "%s must be a single value", key)
		return ""
	}
	return n.Value
}

func (tp *testParser) boolean(n *yaml.Node, key string) bool {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
		tp.errorf(n, "%s must be true or false", key)
	}
	return b
}

func (tp *testParser) strings(n *yaml.Node, key string) []string {
	switch n.Kind {
	case yaml.ScalarNode:
		return []string{n.Value}
	case yaml.SequenceNode:
		var out []string
		for _, c := range n.Content {
			out = append(out, tp.scalar(c, key))
		}
		return out
	}
	tp.errorf(n, "%s must be a value or a list of values", key)
	return nil
}

func parseTest(src *source, n *yaml.Node, known map[string]bool, p *problems) *testCase {
	tp := &testParser{src: src, p: p, ok: true}
	if n.Kind != yaml.MappingNode {
		tp.errorf(n, "a test is a mapping with name, the input and expect:")
		return nil
	}
	fields, ok := mappingFields(src, n, testKeys, "test", p)
	tp.ok = ok
	tc := &testCase{pos: src.pos(n), ip: netip.MustParseAddr(defaultTestIP), rcpts: []string{defaultTestRcpt}}
	if f := fields["name"]; f != nil {
		tc.name = tp.scalar(f, "name")
		tc.pos = src.pos(f)
	} else {
		tp.errorf(n, "test has no name")
	}
	if f := fields["ip"]; f != nil {
		a, err := netip.ParseAddr(tp.scalar(f, "ip"))
		if err != nil {
			tp.errorf(f, "ip %q is not an address", f.Value)
		}
		tc.ip = a
	}
	str := func(key string, dst *string) {
		if f := fields[key]; f != nil {
			*dst = tp.scalar(f, key)
		}
	}
	str("helo", &tc.helo)
	str("mail_from", &tc.mailFrom)
	str("auth_user", &tc.authUser)
	str("queue_id", &tc.queueID)
	if f := fields["tls"]; f != nil {
		tc.tls = tp.boolean(f, "tls")
	}
	if f := fields["rcpt"]; f != nil {
		tc.rcpts = tp.strings(f, "rcpt")
		if len(tc.rcpts) == 0 {
			tp.errorf(f, "rcpt needs at least one recipient")
		}
	}
	if f := fields["headers"]; f != nil {
		// As a message has them: the value is all after the colon.
		for _, h := range tp.headers(f) {
			tc.headers = append(tc.headers, policy.Header{Name: h.Name, Value: " " + h.Value})
		}
	}
	if f := fields["body"]; f != nil {
		tc.body = []byte(tp.scalar(f, "body"))
	}
	if f := fields["eml"]; f != nil {
		if fields["headers"] != nil || fields["body"] != nil {
			tp.errorf(f, "give either eml or headers and body, not both")
		}
		path := resolve(filepath.Dir(src.name), tp.scalar(f, "eml"))
		data, err := os.ReadFile(path)
		if err != nil {
			tp.errorf(f, "eml: %v", err)
		} else if tc.headers, tc.body, err = readMessage(data); err != nil {
			tp.errorf(f, "eml %s: %v", path, err)
		}
	}
	tp.checks(fields, &tc.checks)
	if f := fields["expect"]; f != nil {
		tp.expectation(f, known, &tc.expect)
	} else {
		tp.errorf(n, "test %s has no expect:", tc.name)
	}
	if !tp.ok {
		return nil
	}
	return tc
}

// headers reads a mapping (a list value repeats the header) or a list of
// "Name: value" lines.
func (tp *testParser) headers(n *yaml.Node) []policy.Header {
	var out []policy.Header
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			name := n.Content[i].Value
			for _, v := range tp.strings(n.Content[i+1], "header "+name) {
				out = append(out, policy.Header{Name: name, Value: v})
			}
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			name, value, ok := strings.Cut(tp.scalar(c, "headers"), ":")
			if !ok || !validHeaderName(name) {
				tp.errorf(c, "header %q: want \"Name: value\"", c.Value)
				continue
			}
			out = append(out, policy.Header{Name: name, Value: strings.TrimSpace(value)})
		}
	default:
		tp.errorf(n, "headers is a mapping of name to value, or a list of \"Name: value\"")
	}
	return out
}

// checks reads what the test says the checks found.
// zoneMap reads a field that maps DNS list zones to what they answered,
// calling each for every zone in order; what ends the error's sentence.
func (tp *testParser) zoneMap(fields map[string]*yaml.Node, key, what string, each func(zone string, v *yaml.Node)) {
	f := fields[key]
	if f == nil {
		return
	}
	if f.Kind != yaml.MappingNode {
		tp.errorf(f, "%s maps zones %s", key, what)
		return
	}
	for i := 0; i+1 < len(f.Content); i += 2 {
		each(f.Content[i].Value, f.Content[i+1])
	}
}

func (tp *testParser) checks(fields map[string]*yaml.Node, c *assumedChecks) {
	if f := fields["ptr"]; f != nil {
		c.ptr = tp.scalar(f, "ptr")
		c.iprevSet = true
	}
	if f := fields["fcrdns"]; f != nil {
		c.fcrdns = tp.boolean(f, "fcrdns")
		c.iprevSet = true
	}
	if f := fields["iprev"]; f != nil {
		c.iprev = tp.result(f, "iprev", "pass", "fail", "temperror", "permerror")
		c.iprevSet = true
	}
	tp.zoneMap(fields, "dnsbl", "to their codes, e.g. {zen.spamhaus.org: [127.0.0.2]}", func(zone string, v *yaml.Node) {
		c.DNSBL = append(c.DNSBL, dnsbl.Result{Zone: zone, Codes: tp.strings(v, "dnsbl codes")})
	})
	if f := fields["dnsbl_names"]; f != nil {
		if f.Kind != yaml.MappingNode {
			tp.errorf(f, "dnsbl_names maps zones to the names of their codes, e.g. {zen.spamhaus.org: [sbl]}")
		} else {
			for i := 0; i+1 < len(f.Content); i += 2 {
				zone := f.Content[i].Value
				j := slices.IndexFunc(c.DNSBL, func(r dnsbl.Result) bool { return r.Zone == zone })
				if j < 0 {
					tp.errorf(f.Content[i], "dnsbl_names: zone %s is not in dnsbl", zone)
					continue
				}
				c.DNSBL[j].Names = tp.strings(f.Content[i+1], "dnsbl names")
			}
		}
	}
	tp.zoneMap(fields, "dnsbl_errors", "whose look-up failed to the error, e.g. {zen.spamhaus.org: timed out}", func(zone string, v *yaml.Node) {
		c.DNSBL = append(c.DNSBL, dnsbl.Result{Zone: zone, Error: tp.scalar(v, "dnsbl error")})
	})
	tp.zoneMap(fields, "uribl", "to the names of their listings, e.g. {multi.uribl.com: [black]}", func(zone string, v *yaml.Node) {
		c.URIBL = append(c.URIBL, uribl.Result{Zone: zone, Names: tp.strings(v, "uribl names")})
	})
	tp.zoneMap(fields, "uribl_errors", "whose look-up failed to the error, e.g. {multi.uribl.com: timed out}", func(zone string, v *yaml.Node) {
		c.URIBL = append(c.URIBL, uribl.Result{Zone: zone, Error: tp.scalar(v, "uribl error")})
	})
	if f := fields["spf"]; f != nil {
		c.Results.SPF = &spf.Result{Result: tp.result(f, "spf", "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"), Identity: "mailfrom"}
	}
	if f := fields["spf_helo"]; f != nil {
		c.Results.SPFHelo = &spf.Result{Result: tp.result(f, "spf_helo", "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"), Identity: "helo"}
	}
	if f := fields["dkim"]; f != nil {
		items := []*yaml.Node{f}
		if f.Kind == yaml.SequenceNode {
			items = f.Content
		}
		for _, it := range items {
			var d dkim.Result
			if it.Kind != yaml.MappingNode {
				tp.errorf(it, "dkim is a list of {domain, selector, algorithm, result, reason}")
				continue
			}
			df, ok := mappingFields(tp.src, it, []string{"domain", "selector", "algorithm", "result", "reason"}, "dkim", tp.p)
			tp.ok = tp.ok && ok
			for k, v := range df {
				s := tp.scalar(v, "dkim "+k)
				switch k {
				case "domain":
					d.Domain = s
				case "selector":
					d.Selector = s
				case "algorithm":
					d.Algorithm = s
				case "result":
					d.Result = tp.result(v, "dkim result", "pass", "fail", "neutral", "policy", "temperror", "permerror", "none")
				case "reason":
					d.Reason = s
				}
			}
			c.DKIM = append(c.DKIM, d)
		}
	}
	if f := fields["dmarc"]; f != nil {
		d := &dmarc.Result{}
		switch f.Kind {
		case yaml.ScalarNode:
			d.Result = tp.result(f, "dmarc", "pass", "fail", "none", "temperror", "permerror")
		case yaml.MappingNode:
			df, ok := mappingFields(tp.src, f, []string{"result", "policy", "domain", "policy_domain", "org_domain", "testing", "reason"}, "dmarc", tp.p)
			tp.ok = tp.ok && ok
			for k, v := range df {
				switch k {
				case "result":
					d.Result = tp.result(v, "dmarc result", "pass", "fail", "none", "temperror", "permerror")
				case "policy":
					d.Policy = tp.result(v, "dmarc policy", "none", "quarantine", "reject")
				case "domain":
					d.Domain = tp.scalar(v, k)
				case "policy_domain":
					d.PolicyDomain = tp.scalar(v, k)
				case "org_domain":
					d.OrgDomain = tp.scalar(v, k)
				case "testing":
					d.Testing = tp.boolean(v, k)
				case "reason":
					d.Reason = tp.scalar(v, k)
				}
			}
		default:
			tp.errorf(f, "dmarc is a result or {result, policy, domain, ...}")
		}
		c.DMARC = d
	}
}

// result reads one of the words a check can say.
func (tp *testParser) result(n *yaml.Node, key string, allowed ...string) string {
	s := tp.scalar(n, key)
	if !slices.Contains(allowed, s) {
		tp.errorf(n, "%s %q: want one of %s", key, s, strings.Join(allowed, ", "))
	}
	return s
}

func (tp *testParser) expectation(n *yaml.Node, known map[string]bool, e *expectation) {
	if n.Kind != yaml.MappingNode {
		tp.errorf(n, "expect is a mapping: action, stage, rules, not_rules, score, code, message, headers")
		return
	}
	fields, ok := mappingFields(tp.src, n, expectKeys, "expect", tp.p)
	tp.ok = tp.ok && ok
	if len(fields) == 0 {
		tp.errorf(n, "expect says nothing to check")
	}
	if f := fields["action"]; f != nil {
		a, err := policy.ParseAction(tp.scalar(f, "action"))
		if err != nil || a == policy.Continue {
			tp.errorf(f, "action %q: want accept, reject, tempfail, discard or quarantine", f.Value)
		}
		e.action = &a
	}
	if f := fields["stage"]; f != nil {
		st, err := policy.ParseStage(tp.scalar(f, "stage"))
		if err != nil {
			tp.errorf(f, "%v", err)
		}
		e.stage = &st
	}
	names := func(key string) []string {
		f := fields[key]
		if f == nil {
			return nil
		}
		list := tp.strings(f, key)
		for i, name := range list {
			if !known[name] {
				node := f
				if f.Kind == yaml.SequenceNode {
					node = f.Content[i]
				}
				tp.errorf(node, "%s: no rule is named %q", key, name)
			}
		}
		return list
	}
	e.rules = names("rules")
	e.notRules = names("not_rules")
	if f := fields["score"]; f != nil {
		v, err := strconv.ParseFloat(tp.scalar(f, "score"), 64)
		if err != nil {
			tp.errorf(f, "score %q is not a number", f.Value)
		}
		e.score = &v
	}
	if f := fields["code"]; f != nil {
		parts := strings.Fields(tp.scalar(f, "code"))
		var err error
		if len(parts) == 0 || len(parts) > 2 {
			err = fmt.Errorf("bad")
		} else {
			e.code, err = strconv.Atoi(parts[0])
			if len(parts) == 2 {
				e.enhanced = parts[1]
			}
		}
		if err != nil {
			tp.errorf(f, "code %q: want 550 or \"550 5.7.1\"", f.Value)
		}
	}
	if f := fields["message"]; f != nil {
		m := tp.scalar(f, "message")
		e.message = &m
	}
	if f := fields["headers"]; f != nil {
		e.headers = tp.headers(f)
	}
}

// readMessage splits a message file as `mailward check` reads one: the
// header fields as they are written, and the body.
func readMessage(data []byte) ([]policy.Header, []byte, error) {
	br := bufio.NewReader(bytes.NewReader(data))
	hs, err := policy.ReadHeader(br)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(br)
	return hs, body, err
}
