package rules

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
)

func parseTestList(t *testing.T, kind, content string) *list {
	t.Helper()
	var p problems
	l := parseList("t", kind, "t.txt", []byte(content), &p)
	if len(p.list) > 0 {
		t.Fatalf("problems: %v", p.list)
	}
	return l
}

func TestIPList(t *testing.T) {
	l := parseTestList(t, listIP, `
# partners
192.0.2.0/25     # first half
192.0.2.128/25
198.51.100.7
10.0.0.0/8
10.1.0.0/16      # inside the /8
2001:db8:1::/48
::ffff:203.0.113.5
`)
	if len(l.ips) != 5 {
		t.Errorf("ranges not merged: %d ranges", len(l.ips))
	}
	for addr, want := range map[string]bool{
		"192.0.2.0": true, "192.0.2.255": true, "192.0.3.0": false, "192.0.1.255": false,
		"198.51.100.7": true, "198.51.100.8": false, "198.51.100.6": false,
		"10.255.255.255": true, "11.0.0.0": false, "9.255.255.255": false,
		"2001:db8:1:ffff::1": true, "2001:db8:2::": false,
		"::ffff:192.0.2.9": true, "203.0.113.5": true, "[2001:db8:1::1]": true,
		"not-an-ip": false, "": false,
	} {
		if got := l.contains(addr); got != want {
			t.Errorf("contains(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestIPSetEdges(t *testing.T) {
	l := parseTestList(t, listIP, "0.0.0.0/0\n::/0\n")
	for _, a := range []string{"0.0.0.0", "255.255.255.255", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"} {
		if !l.contains(a) {
			t.Errorf("everything lists must hold %s", a)
		}
	}
	l = parseTestList(t, listIP, "192.0.2.1\n192.0.2.2\n192.0.2.4\n")
	if len(l.ips) != 2 || !l.contains("192.0.2.2") || l.contains("192.0.2.3") {
		t.Errorf("adjacent single addresses: %v", l.ips)
	}
}

func TestDomainList(t *testing.T) {
	l := parseTestList(t, listDomain, "Example.COM.\n*.partner.example\n# comment\nxn--bcher-kva.example\n")
	for d, want := range map[string]bool{
		"example.com": true, "EXAMPLE.com.": true, "mail.example.com": false,
		"partner.example": false, "a.partner.example": true, "a.b.partner.example": true, "xpartner.example": false,
		"bob@A.Partner.Example": true, "xn--bcher-kva.example": true, "": false,
	} {
		if got := l.contains(d); got != want {
			t.Errorf("contains(%q) = %v, want %v", d, got, want)
		}
	}
}

func TestAddressList(t *testing.T) {
	l := parseTestList(t, listAddress, "Alice@Example.org\n@partner.example\n@*.sub.example\n")
	for a, want := range map[string]bool{
		"alice@example.org": true, "<ALICE@example.org>": true, "bob@example.org": false,
		"anyone@partner.example": true, "x@mail.partner.example": false,
		"x@a.sub.example": true, "x@sub.example": false, "example.org": false,
	} {
		if got := l.contains(a); got != want {
			t.Errorf("contains(%q) = %v, want %v", a, got, want)
		}
	}
}

func TestRegexpList(t *testing.T) {
	l := parseTestList(t, listRegexp, "# one per line\n^dyn-[0-9]+\\.\n(?i)\\.pool\\.\nkeep#this\n# skip-me\n")
	for v, want := range map[string]bool{"dyn-12.example": true, "x.POOL.example": true, "static.example": false, "a keep#this": true, "skip-me": false} {
		if got := l.contains(v); got != want {
			t.Errorf("contains(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestBadListLines(t *testing.T) {
	cases := map[string]string{
		listIP:      "192.0.2.1\n\n192.0.2.300\n",
		listDomain:  "ok.example\n\nbad..example\n",
		listAddress: "a@b.example\n\nnot-an-address\n",
		listRegexp:  "^ok\n\n(unclosed\n",
	}
	for kind, content := range cases {
		var p problems
		parseList("t", kind, "t.txt", []byte(content), &p)
		if len(p.list) != 1 || p.list[0].Pos.String() != "t.txt:3:1" {
			t.Errorf("%s list: problems %v, want one at t.txt:3:1", kind, p.list)
		}
	}
	l := parseTestList(t, listDomain, "")
	if l.contains("x.example") {
		t.Error("empty list holds something")
	}
	var p problems
	parseList("t", listDomain, "t.txt", []byte("a.*.example\n"), &p)
	if len(p.list) != 1 || !strings.Contains(p.list[0].Msg, "wildcard may only lead") {
		t.Errorf("got %v", p.list)
	}
}

func TestListsInRules(t *testing.T) {
	dir := testenv.WriteFiles(t, map[string]string{
		"lists/nets.txt":    "198.51.100.0/24\n",
		"lists/domains.txt": "*.partner.example\n",
		"rules/r.yaml": `
lists:
  local: {file: local.txt, type: address}
rules:
  - name: net
    when: in_cidr(ip, "nets")
    action: accept
  - name: dom
    when: in_list("domains", mail_from)
    action: accept
  - name: loc
    when: in_list("local", rcpt)
    action: reject
`,
		"rules/local.txt": "nobody@example.net\n",
	})
	cfg := Config{Files: []string{"rules/*.yaml"}, Lists: map[string]ListConfig{
		"nets":    {File: "lists/nets.txt", Type: "ip"},
		"domains": {File: "lists/domains.txt", Type: "domain"},
	}}
	s, err := Load(cfg, Options{BaseDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	files := s.Files()
	for _, want := range []string{"lists/nets.txt", "lists/domains.txt", "rules/r.yaml", "rules/local.txt"} {
		found := false
		for _, f := range files {
			found = found || f == filepath.Join(dir, want)
		}
		if !found {
			t.Errorf("Files() %v lacks %s", files, want)
		}
	}
	f := fullFacts()
	f.IP = netip.MustParseAddr("198.51.100.20")
	if v := s.Eval(context.Background(), policy.StageConnect, f, nil); v.Rule != "net" {
		t.Errorf("ip list: %+v", v)
	}
	f.MailFrom = "x@mx.partner.example"
	if v := s.Eval(context.Background(), policy.StageMail, f, nil); v.Rule != "dom" {
		t.Errorf("domain list: %+v", v)
	}
	f.Rcpt = "Nobody@example.net"
	if v := s.Eval(context.Background(), policy.StageRcpt, f, nil); v.Rule != "loc" {
		t.Errorf("file-declared list: %+v", v)
	}

	// in_cidr needs an ip list; a list declared twice is an error.
	cfg.Lists["local"] = ListConfig{File: "lists/nets.txt", Type: "ip"}
	cfg.Lists["domains"] = ListConfig{File: "lists/domains.txt", Type: "domain"}
	dir2 := testenv.WriteFiles(t, map[string]string{"lists/domains.txt": "x.example\n", "lists/nets.txt": "10.0.0.0/8\n",
		"rules/r.yaml": "rules:\n  - {name: a, when: 'in_cidr(ip, \"domains\")', action: accept}\n"})
	_, err = Load(Config{Files: []string{"rules/r.yaml"}, Lists: cfg.Lists}, Options{BaseDir: dir2})
	if err == nil || !strings.Contains(err.Error(), `in_cidr needs an ip list; "domains" is a domain list`) {
		t.Errorf("got %v", err)
	}
	_, err = Load(cfg, Options{BaseDir: dir})
	if err == nil || !strings.Contains(err.Error(), `list "local" is declared twice`) {
		t.Errorf("got %v", err)
	}
	// Bad declarations and bad lines are all reported.
	_, err = Load(Config{Lists: map[string]ListConfig{
		"a": {File: "lists/nets.txt", Type: "cidr"},
		"b": {Type: "ip"},
		"c": {File: "missing.txt", Type: "ip"},
		"d": {File: "rules/r.yaml", Type: "ip"},
	}}, Options{BaseDir: dir})
	for _, want := range []string{`unknown type "cidr"`, `list "b" has no file`, "missing.txt", "r.yaml:2:1: list \"d\""} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

func BenchmarkListLookup(b *testing.B) {
	var ips, doms strings.Builder
	for i := 0; i < 100000; i++ {
		fmt.Fprintf(&ips, "10.%d.%d.0/24\n", i/256%256, i%256)
		fmt.Fprintf(&doms, "*.d%d.example\n", i)
	}
	var p problems
	ipl := parseList("ips", listIP, "ips", []byte(ips.String()), &p)
	dl := parseList("doms", listDomain, "doms", []byte(doms.String()), &p)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if !ipl.contains("10.3.4.5") || dl.contains("a.b.c.d99999x.example") {
			b.Fatal("wrong answer")
		}
	}
}
