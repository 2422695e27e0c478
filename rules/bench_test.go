package rules

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/mailward/mailward/policy"
)

// benchConditions are realistic conditions that do not match fullFacts,
// so every rule runs. %d makes each rule distinct.
var benchConditions = []string{
	`ip == "203.0.113.%d"`,
	`in_cidr(ip, "2001:db8:%x::/48")`,
	`"bl%d.example" in dnsbl`,
	`!fcrdns && ptr endsWith ".dyn%d.example"`,
	`helo == "host%d.example"`,
	`helo matches "^dyn%d-"`,
	`spf_helo == "fail" && helo endsWith ".x%d"`,
	`mail_from_domain == "spam%d.example"`,
	`spf == "fail" && mail_from_domain == "d%d.example"`,
	`auth_user == "u%d"`,
	`in_list("senders", mail_from) && tls && mail_from_domain == "s%d.example"`,
	`rcpt == "trap%d@example.net"`,
	`rcpt_count > %d + 100`,
	`subject contains "offer %d"`,
	`header("X-Mailer") == "mailer %d"`,
	`header_from_domain == "brand%d.example" && header_from_domain != mail_from_domain`,
	`message_id endsWith "@spam%d>"`,
	`size > 10000000 + %d`,
	`any(attachments, .name endsWith ".x%d")`,
	`dmarc.result == "fail" && dmarc.domain == "d%d.example"`,
	`score > 100.0 + %d`,
	`any(dkim, .domain == "d%d.example" && .result == "fail")`,
}

func benchSet(b *testing.B, n int) *Set {
	var sb strings.Builder
	sb.WriteString("lists:\n  senders: {file: senders.txt, type: address}\nrules:\n")
	actions := []string{"reject", "score\n    score: 1", "add_header\n    header: {name: X-Bench, value: \"{{ip}}\"}", "quarantine"}
	for i := 0; i < n; i++ {
		cond := fmt.Sprintf(benchConditions[i%len(benchConditions)], i)
		fmt.Fprintf(&sb, "  - name: r%d\n    when: '%s'\n    action: %s\n", i, strings.ReplaceAll(cond, "'", "''"), actions[i%len(actions)])
	}
	return loadRules(b, sb.String(), "senders.txt", "@partner.example\n")
}

// BenchmarkEval1000 evaluates 1,000 rules against one message at every
// stage, one recipient. Target: under 200µs per message.
func BenchmarkEval1000(b *testing.B) {
	benchEval(b, benchSet(b, 1000))
}

// BenchmarkEval1000VM is the same with every condition run by expr's VM,
// as conditions outside the native shapes are.
func BenchmarkEval1000VM(b *testing.B) {
	s := benchSet(b, 1000)
	for _, r := range s.rules {
		r.native = nil
		r.vmReads = r.reads
		s.box[r.stage] |= r.reads
	}
	benchEval(b, s)
}

func benchEval(b *testing.B, s *Set) {
	f := fullFacts()
	f.Headers = append(f.Headers, policy.Header{Name: "X-Mailer", Value: "Mutt"})
	ctx := context.Background()
	matches := make([]policy.Match, 0, 16)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		matches = matches[:0]
		f.Score = 0
		for _, st := range policy.Stages {
			if st == policy.StageRcpt {
				f.Rcpt = "bob@example.net"
			}
			if v := s.Eval(ctx, st, f, &matches); v.Action != policy.Continue {
				b.Fatalf("rule %s matched; the benchmark wants every rule to run", v.Rule)
			}
			f.Rcpt = ""
		}
	}
	b.StopTimer()
	if len(matches) != 0 {
		b.Fatalf("matches: %v", matches)
	}
}

// BenchmarkLoad1000 is the cost of compiling 1,000 rules, paid at each reload.
func BenchmarkLoad1000(b *testing.B) {
	for i := 0; i < b.N; i++ {
		benchSet(b, 1000)
	}
}
