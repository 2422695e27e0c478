package rules

import (
	"testing"

	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
)

// A rule reading a domain list runs once the sender's domain has been
// looked up; one reading only IP lists stays at connect.
func TestDNSListStages(t *testing.T) {
	dir := testenv.WriteFiles(t, map[string]string{"rules.yaml": `
rules:
  - {name: ip-list, when: '"zen.test" in dnsbl', action: reject}
  - {name: ip-list-names, when: '"sbl" in dnsbl_names["zen.test"]', action: reject}
  - {name: domain-list, when: '"dbl.test" in dnsbl', action: reject}
  - {name: domain-list-index, when: 'len(dnsbl["DBL.test."]) > 0', action: reject}
  - {name: any-list, when: 'len(dnsbl) > 0', action: reject}
  - {name: errors, when: 'len(dnsbl_errors) > 0', action: tempfail}
  - {name: too-early, when: '"dbl.test" in dnsbl', stage: helo, action: reject}
`})
	_, err := Load(Config{Files: []string{"rules.yaml"}}, Options{BaseDir: dir, DomainZones: []string{"dbl.test"}})
	if err == nil {
		t.Fatal("a domain list rule at helo loaded")
	}
	wantProblem(t, err.(Problems), 9, 59, "stage helo is too early: the rule uses dnsbl zone dbl.test (a domain list")

	dir = testenv.WriteFiles(t, map[string]string{"rules.yaml": `
rules:
  - {name: ip-list, when: '"zen.test" in dnsbl', action: reject}
  - {name: ip-list-names, when: '"sbl" in dnsbl_names["zen.test"]', action: reject}
  - {name: domain-list, when: '"dbl.test" in dnsbl', action: reject}
  - {name: domain-list-index, when: 'len(dnsbl["DBL.test."]) > 0', action: reject}
  - {name: any-list, when: 'len(dnsbl) > 0', action: reject}
  - {name: errors, when: 'len(dnsbl_errors) > 0', action: tempfail}
`})
	for _, c := range []struct {
		zones []string
		want  map[string]policy.Stage
	}{
		{[]string{"dbl.test"}, map[string]policy.Stage{"ip-list": policy.StageConnect, "ip-list-names": policy.StageConnect,
			"domain-list": policy.StageMail, "domain-list-index": policy.StageMail, "any-list": policy.StageMail, "errors": policy.StageMail}},
		{nil, map[string]policy.Stage{"ip-list": policy.StageConnect, "ip-list-names": policy.StageConnect,
			"domain-list": policy.StageConnect, "domain-list-index": policy.StageConnect, "any-list": policy.StageConnect, "errors": policy.StageConnect}},
	} {
		s, err := Load(Config{Files: []string{"rules.yaml"}}, Options{BaseDir: dir, DomainZones: c.zones})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range s.Rules() {
			if r.Stage != c.want[r.Name] {
				t.Errorf("domain zones %v: %s at %s, want %s", c.zones, r.Name, r.Stage, c.want[r.Name])
			}
		}
	}
}
