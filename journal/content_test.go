package journal

import (
	"slices"
	"strings"
	"testing"

	"github.com/mailward/mailward/policy"
)

// TestReplayKeepsLinks: the links and what the content scan found go
// into the line, and a replay's rules read them back without the body.
func TestReplayKeepsLinks(t *testing.T) {
	set := rulesOf(t, `rules:
  - name: ip-link
    when: any(urls, .domain == "") && "shop.example" in url_domains
    action: score
    score: 2
  - name: deceit
    when: phish_links > 0 && html && text_parts == 1
    action: reject
`)
	settings := policy.Settings{Hostname: "mx.test", OnError: policy.Tempfail}
	live, raw, out := journalOne(t, settings, results(), set, [2]string{"Content-Type", "text/html"},
		"<a href=\"http://198.51.100.7/x\">www.bank.example</a> https://www.shop.example/\r\n")
	if live.Action != policy.Reject {
		t.Fatalf("live: %+v", live)
	}
	if !strings.Contains(raw, `"urls":[{"scheme":"http","host":"198.51.100.7","path":"/x"},{"scheme":"http","host":"www.bank.example","domain":"bank.example"}`) ||
		!strings.Contains(raw, `"content":{"html":true,"text_parts":1,"url_count":3,"phish_links":1}`) {
		t.Errorf("line lacks the links:\n%s", raw)
	}
	if out.Verdict.Action != live.Action || len(out.Facts.URLs) != 3 || !slices.Equal(matchNames(out.Matches), []string{"ip-link", "deceit"}) {
		t.Errorf("replayed %+v, matches %v, urls %+v", out.Verdict, matchNames(out.Matches), out.Facts.URLs)
	}
}

// A diff says which rules read the text the journal does not keep.
func TestDiffNamesTextRules(t *testing.T) {
	set := rulesOf(t, "rules:\n  - name: lure\n    when: body_matches(\"(?i)invoice\")\n    action: reject\n  - name: links\n    when: len(urls) > 3\n    action: reject\n")
	d := &Differ{Settings: policy.Settings{Hostname: "mx.test"}, Old: set, New: set, Log: quiet()}
	if got := d.Result().TextRules; !slices.Equal(got, []string{"lure"}) {
		t.Errorf("text rules %v", got)
	}
	var b strings.Builder
	d.Result().Print(&b)
	if !strings.Contains(b.String(), `lure read body_text and saw ""`) {
		t.Errorf("report:\n%s", b.String())
	}
}
