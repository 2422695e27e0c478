package rules

import (
	"context"
	"net/netip"
	"testing"

	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/dmarc"
	"github.com/mailward/mailward/checks/iprev"
	"github.com/mailward/mailward/checks/spf"
	"github.com/mailward/mailward/policy"
)

// factVariants are messages that make conditions come out differently.
func factVariants() []*policy.Facts {
	full := fullFacts()
	full.Rcpt = "carol@example.net"

	other := fullFacts()
	other.IP = netip.MustParseAddr("2001:db8::5")
	other.IPRev = &iprev.Result{Result: "fail", PTR: "dyn-1-2.pool.example"}
	other.Helo = "DYN-12.example"
	other.SPF = &spf.Result{Result: "fail"}
	other.MailFrom = "Spam@Bad.example"
	other.Rcpt = "trap@example.net"
	other.Rcpts = []string{"a@example.net", "trap@example.net", "b@example.net"}
	other.Headers = []policy.Header{{Name: "Subject", Value: "FREE MONEY"}, {Name: "From", Value: "x@bad.example"}, {Name: "X-Mailer", Value: "mass 1"}}
	other.Attachments = []policy.Attachment{{Name: "a.exe", ContentType: "application/octet-stream", Size: 5}, {Name: "b.txt", Size: 10000}}
	other.DKIM = []dkim.Result{{Domain: "bad.example", Result: "fail"}, {Domain: "relay.example", Result: "pass"}}
	other.DMARC = &dmarc.Result{Result: "fail", Policy: "quarantine", Domain: "bad.example", Testing: true}
	other.Size = 50000
	other.Score = 7.5

	return []*policy.Facts{full, other, {}}
}

// nativeCases are conditions the native compiler must take, with the
// answers checked against the VM.
var nativeCases = []string{
	`true`, `false`, `tls`, `!tls`, `not fcrdns`,
	`ip == "192.0.2.7"`, `ip != "192.0.2.7"`, `ip_version == 6`, `ip_version >= 4.5`,
	`ptr endsWith ".pool.example"`, `ptr startsWith "mail"`, `ptr contains "1-2"`,
	`helo matches "(?i)^dyn-[0-9]+"`, `lower(helo) == "dyn-12.example"`, `upper(helo) startsWith "DYN"`,
	`spf == "fail" && spf_helo == "pass"`, `spf == "fail" || mail_from_domain == "example.org"`,
	`mail_from_domain in ["bad.example", "worse.example"]`, `"zen.example" in dnsbl`, `"subject" in headers`,
	`rcpt in rcpts`, `"a@example.net" in rcpts`, `rcpt_count > 2`, `len(rcpts) == 3`, `len(attachments) >= 1`,
	`len(subject) > 5`, `len(dnsbl) == 1`, `len(headers) > 3`, `len(dkim) == 2`,
	`subject == upper(subject)`, `header("x-mailer") startsWith "mass"`, `header("From") == header_from`,
	`header_from_domain != mail_from_domain`, `message_id == "<1@example.org>"`,
	`size > 10000`, `size <= 2048`, `score >= 7.5`, `score < 1`,
	`dmarc.result == "fail" && dmarc.policy == "quarantine"`, `dmarc.testing`, `dmarc.domain == header_from_domain`,
	`dmarc.policy_domain == "" && dmarc.org_domain == "" && dmarc.reason == ""`,
	`any(attachments, lower(.name) endsWith ".exe")`, `all(attachments, .size < 2000)`, `none(attachments, .content_type == "application/pdf")`,
	`one(attachments, .size > 1)`, `any(dkim, .result == "pass" && .domain == header_from_domain)`,
	`all(dkim, .result == "pass")`, `any(dkim, .selector == "s1" || .algorithm == "ed25519-sha256" || .reason != "")`,
	`any(rcpts, # endsWith "@example.net")`, `none(rcpts, # == "trap@example.net")`,
	`in_list("senders", mail_from)`, `in_cidr(ip, "192.0.2.0/24", "2001:db8::/32")`, `in_cidr(ip, ["198.51.100.0/24"])`,
	`domain_of(mail_from) == "bad.example"`, `org_domain(helo) == "example"`, `queue_id == "ABC123"`, `auth_user == ""`,
	`tls == fcrdns`, `(ip_version == 4) != tls`,
}

// vmCases are conditions left to the VM; they must still work.
var vmCases = []string{
	`dnsbl["zen.example"][0] == "127.0.0.2"`,
	`let d = mail_from_domain; d == "example.org"`,
	`attachments[0].size > 100`,
	`now.Hour() >= 0`,
	`subject < "m"`,
	`any(dkim, any(attachments, .size > 1))`,
	`headers["received"] == ["from a", "from b"]`,
	`size % 2 == 0`,
}

func TestNativeMatchesVM(t *testing.T) {
	for _, cond := range append(append([]string{}, nativeCases...), vmCases...) {
		t.Run(cond, func(t *testing.T) {
			s := loadRules(t, "lists:\n  senders: {file: s.txt, type: address}\nrules:\n  - name: r\n    when: '"+escapeSingle(cond)+"'\n    stage: eom\n    action: reject\n",
				"s.txt", "@bad.example\n")
			r := s.rules[0]
			isNative := !contains(vmCases, cond)
			if (r.native != nil) != isNative {
				t.Fatalf("native = %v, want %v", r.native != nil, isNative)
			}
			for i, f := range factVariants() {
				vmResult := evalVM(t, s, r, f)
				got := s.Eval(context.Background(), policy.StageEOM, f, nil).Action == policy.Reject
				if got != vmResult {
					t.Errorf("facts %d: set says %v, VM says %v", i, got, vmResult)
				}
			}
		})
	}
}

// evalVM evaluates r with the VM alone.
func evalVM(t testing.TB, s *Set, r *rule, f *policy.Facts) bool {
	st := s.pool.Get().(*state)
	defer func() { st.reset(); s.pool.Put(st) }()
	st.fill(context.Background(), f, allVars, allVars)
	out, err := st.vm.Run(r.prog, st.vals)
	if err != nil {
		return false
	}
	b, _ := out.(bool)
	return b
}

func escapeSingle(s string) string {
	out := ""
	for _, r := range s {
		if r == '\'' {
			out += "''"
		} else {
			out += string(r)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
