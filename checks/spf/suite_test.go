package spf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"gopkg.in/yaml.v3"

	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/internal/testenv"
)

// The open-spf RFC 7208 test suite, served by the fixture DNS server and
// evaluated through the real resolver.

type suite struct {
	Description string
	Tests       map[string]suiteTest
	ZoneData    map[string][]map[string]yaml.Node `yaml:"zonedata"`
}

type suiteTest struct {
	Helo        string
	Host        string
	MailFrom    string `yaml:"mailfrom"`
	Result      yaml.Node
	Explanation string
}

func loadSuites(t *testing.T, path string) []suite {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []suite
	dec := yaml.NewDecoder(f)
	for {
		var s suite
		err := dec.Decode(&s)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("decoding %s: %v", path, err)
		}
		out = append(out, s)
	}
}

func strings_(n yaml.Node) []string {
	var one string
	if n.Decode(&one) == nil {
		return []string{one}
	}
	var many []string
	n.Decode(&many)
	return many
}

// zoneName writes a domain in master-file form, escaping what needs it.
func zoneName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			b.WriteByte(c)
		case c <= ' ' || c > '~' || strings.IndexByte(`"();\@$`, c) >= 0:
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	return dns.Fqdn(b.String())
}

func zoneText(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c > '~':
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// serveSuite turns the suite's zonedata into a zone and faults. As in the
// suite's reference driver: SPF-type records stand in for TXT when a name
// has no TXT (and no "TXT: NONE"); TIMEOUT makes every type not listed
// before it go unanswered.
func serveSuite(t *testing.T, s suite) *testenv.DNSServer {
	t.Helper()
	var zone strings.Builder
	type drop struct {
		name     string
		answered map[uint16]bool
	}
	var drops []drop
	for domain, recs := range s.ZoneData {
		owner := zoneName(domain)
		hasTXT := false
		for _, r := range recs {
			if _, ok := r["TXT"]; ok {
				hasTXT = true
			}
		}
		answered := map[uint16]bool{}
		timeout := false
		for _, r := range recs {
			for typ, v := range r {
				if timeout {
					continue
				}
				switch typ {
				case "TIMEOUT":
					timeout = true
				case "CNAMELOOP":
					fmt.Fprintf(&zone, "%s 300 IN CNAME %s\n", owner, owner)
				case "A", "AAAA":
					for _, a := range strings_(v) {
						fmt.Fprintf(&zone, "%s 300 IN %s %s\n", owner, typ, a)
					}
					answered[dns.StringToType[typ]] = true
				case "PTR", "CNAME":
					for _, n := range strings_(v) {
						fmt.Fprintf(&zone, "%s 300 IN %s %s\n", owner, typ, zoneName(n))
					}
					answered[dns.StringToType[typ]] = true
				case "MX":
					var mx []any
					if err := v.Decode(&mx); err != nil || len(mx) != 2 {
						t.Fatalf("%s: bad MX %v", domain, mx)
					}
					host := mx[1].(string)
					if host == "" {
						host = "."
					}
					fmt.Fprintf(&zone, "%s 300 IN MX %d %s\n", owner, mx[0], zoneName(host))
					answered[dns.TypeMX] = true
				case "TXT", "SPF":
					if typ == "SPF" && hasTXT {
						continue
					}
					var parts []string
					if v.Kind == yaml.SequenceNode {
						// One record made of several strings.
						v.Decode(&parts)
						if len(parts) == 0 {
							continue // a TXT record with no strings cannot be written
						}
						var q []string
						for _, p := range parts {
							q = append(q, zoneText(p))
						}
						fmt.Fprintf(&zone, "%s 300 IN TXT %s\n", owner, strings.Join(q, " "))
					} else {
						var one string
						v.Decode(&one)
						if typ == "TXT" && one == "NONE" {
							continue
						}
						fmt.Fprintf(&zone, "%s 300 IN TXT %s\n", owner, zoneText(one))
					}
					answered[dns.TypeTXT] = true
				default:
					t.Fatalf("%s: unknown record type %s", domain, typ)
				}
			}
		}
		if timeout {
			drops = append(drops, drop{domain, answered})
		}
	}
	srv := testenv.StartDNS(t, zone.String())
	for _, d := range drops {
		for _, typ := range []uint16{dns.TypeTXT, dns.TypeA, dns.TypeAAAA, dns.TypeMX, dns.TypePTR} {
			if !d.answered[typ] {
				srv.DropType(d.name, typ)
			}
		}
	}
	return srv
}

func TestRFC7208Suite(t *testing.T) {
	suites := loadSuites(t, "testdata/rfc7208-tests.yml")
	if len(suites) < 10 {
		t.Fatalf("only %d suites loaded", len(suites))
	}
	total := 0
	for _, s := range suites {
		total += len(s.Tests)
		t.Run(s.Description, func(t *testing.T) {
			t.Parallel()
			srv := serveSuite(t, s)
			r, err := resolver.New(resolver.Config{Servers: []string{srv.Addr()}, Timeout: 200 * time.Millisecond, Retries: -1})
			if err != nil {
				t.Fatal(err)
			}
			c := New(r, Options{Hostname: "mx.receiver.example"})
			names := make([]string, 0, len(s.Tests))
			for n := range s.Tests {
				names = append(names, n)
			}
			slices.Sort(names)
			for _, name := range names {
				tc := s.Tests[name]
				t.Run(name, func(t *testing.T) {
					ip, err := netip.ParseAddr(tc.Host)
					if err != nil {
						t.Fatalf("bad host %q", tc.Host)
					}
					res := c.CheckMailFrom(context.Background(), ip, tc.Helo, tc.MailFrom)
					want := strings_(tc.Result)
					if !slices.Contains(want, res.Result) {
						t.Errorf("%s from %s (helo %q): %s (%s), want %v", tc.MailFrom, tc.Host, tc.Helo, res.Result, res.Reason, want)
					}
					// The suite spells IPv6 nibbles in upper case; RFC 7208's
					// own examples use lower case, which is what we produce.
					if tc.Explanation != "" && tc.Explanation != "DEFAULT" && !strings.EqualFold(res.Explanation, tc.Explanation) {
						t.Errorf("explanation %q, want %q", res.Explanation, tc.Explanation)
					}
				})
			}
		})
	}
	t.Logf("%d suites, %d tests", len(suites), total)
}
