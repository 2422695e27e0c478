package rules

import (
	"fmt"
	"slices"
	"testing"

	"github.com/mailward/mailward/policy"
)

func bodyFacts() *policy.Facts {
	return &policy.Facts{
		BodyText: "Your account is suspended. Verify at https://login.bank.example.evil.example/x",
		URLs: []policy.URL{
			{Scheme: "https", Host: "login.bank.example.evil.example", Domain: "evil.example", Path: "/x"},
			{Scheme: "http", Host: "192.0.2.7", Path: "/"},
			{Scheme: "https", Host: "cdn.evil.example", Domain: "evil.example"},
			{Scheme: "https", Host: "www.example.org", Domain: "example.org"},
		},
		Content: &policy.Content{HTML: true, TextParts: 2, URLCount: 250, PhishLinks: 1, FromDisplayMismatch: true},
	}
}

func TestBodyVariables(t *testing.T) {
	s := loadRules(t, `
rules:
  - name: suspended
    when: body_matches("(?i)account is suspended")
    action: score
    score: 1
  - name: not-there
    when: body_matches("lottery") || body_text contains "prize"
    action: score
    score: 1
  - name: ip-link
    when: any(urls, .domain == "" && .host matches "^[0-9.]+$")
    action: score
    score: 1
  - name: domains
    when: url_domains == ["evil.example", "example.org"]
    action: score
    score: 1
  - name: meta
    when: html && text_parts == 2 && url_count == 250 && phish_links > 0 && from_display_mismatch
    action: score
    score: 1
  - name: https
    when: all(urls, .scheme startsWith "http") && len(urls) > 0 && urls[0].path == "/x"
    action: score
    score: 1
  - name: dynamic
    when: body_matches(lower("SUSPENDED"))
    action: score
    score: 1
`)
	_, ms := evalAll(s, bodyFacts())
	if got := matchNames(ms); !slices.Equal(got, []string{"suspended", "ip-link", "domains", "meta", "https", "dynamic"}) {
		t.Errorf("matched %v", got)
	}
	// No scan (content.enabled false): nothing matches, nothing fails.
	_, ms = evalAll(s, &policy.Facts{})
	if len(ms) != 0 {
		t.Errorf("without content matched %v", matchNames(ms))
	}
	if got := s.ContentRules(); len(got) != 7 {
		t.Errorf("ContentRules() = %v: body rules read the message", got)
	}
}

func TestBodyMatchesErrors(t *testing.T) {
	ps := loadProblems(t, `
rules:
  - name: bad
    when: body_matches("a(b")
    action: reject
`)
	wantProblem(t, ps, 4, 24, "body_matches: error parsing regexp: missing closing ): `a(b`")
	ps = loadProblems(t, `
rules:
  - name: two
    when: body_matches("a", "b")
    action: reject
`)
	wantProblem(t, ps, 4, 11, "body_matches takes one regular expression")
}

func TestURLDomainsDistinctInOrder(t *testing.T) {
	var urls []policy.URL
	var want []string
	for i := 0; i < 40; i++ {
		d := fmt.Sprintf("d%d.example", i%30)
		urls = append(urls, policy.URL{Host: "www." + d, Domain: d}, policy.URL{Host: "192.0.2.1"})
		if i < 30 {
			want = append(want, d)
		}
	}
	if got := urlDomains(urls); !slices.Equal(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}

// BenchmarkURLDomains is the largest content.max_urls, every link on
// its own domain: a look through those kept for each cost 0.2 s.
func BenchmarkURLDomains(b *testing.B) {
	var urls []policy.URL
	for i := 0; i < 10000; i++ {
		d := fmt.Sprintf("d%05d.example", i)
		urls = append(urls, policy.URL{Host: d, Domain: d})
	}
	for b.Loop() {
		urlDomains(urls)
	}
}
