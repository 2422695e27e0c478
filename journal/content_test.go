package journal

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/rules"
)

// TestReplayKeepsLinks: the links and what the content scan found go
// into the line, and a replay's rules read them back without the body.
func TestReplayKeepsLinks(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "links.yaml")
	os.WriteFile(file, []byte(`rules:
  - name: ip-link
    when: any(urls, .domain == "") && "shop.example" in url_domains
    action: score
    score: 2
  - name: deceit
    when: phish_links > 0 && html && text_parts == 1
    action: reject
`), 0o644)
	set, err := rules.Load(rules.Config{Files: []string{file}}, rules.Options{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	settings := policy.Settings{Hostname: "mx.test", OnError: policy.Tempfail}
	cfg := testConfig(t)
	w, err := Open(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e := policy.NewEngine(settings, newRecorded(results()), set, quiet())
	e.SetRecorder(w)
	c, _ := e.Connect(ctx, policy.ConnInfo{IP: netip.MustParseAddr("192.0.2.7"), Front: "milter"})
	c.Helo(ctx, "mx.example.org")
	c.Mail(ctx, "alice@example.org", policy.MailInfo{})
	c.Rcpt(ctx, "bob@example.net")
	c.Header("Content-Type", "text/html")
	c.EndOfHeaders(ctx)
	c.Body([]byte("<a href=\"http://198.51.100.7/x\">www.bank.example</a> https://www.shop.example/\r\n"))
	live := c.EndOfMessage(ctx)
	c.Close()
	w.Close()
	if live.Action != policy.Reject {
		t.Fatalf("live: %+v", live)
	}
	raw, _ := os.ReadFile(cfg.Path)
	if !strings.Contains(string(raw), `"urls":[{"scheme":"http","host":"198.51.100.7","path":"/x"},{"scheme":"http","host":"www.bank.example","domain":"bank.example"}`) ||
		!strings.Contains(string(raw), `"content":{"html":true,"text_parts":1,"url_count":3,"phish_links":1}`) {
		t.Errorf("line lacks the links:\n%s", raw)
	}
	lines := readAll(t, cfg.Path)
	rp := &Replayer{Settings: settings, Rules: set, Log: quiet()}
	out, err := rp.Replay(ctx, lines[0])
	if err != nil {
		t.Fatal(err)
	}
	if out.Verdict.Action != live.Action || len(out.Facts.URLs) != 3 || !slices.Equal(names(out.Matches), []string{"ip-link", "deceit"}) {
		t.Errorf("replayed %+v, matches %v, urls %+v", out.Verdict, names(out.Matches), out.Facts.URLs)
	}
}

func names(ms []policy.Match) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Rule)
	}
	return out
}

// A diff says which rules read the text the journal does not keep.
func TestDiffNamesTextRules(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "text.yaml")
	os.WriteFile(file, []byte("rules:\n  - name: lure\n    when: body_matches(\"(?i)invoice\")\n    action: reject\n  - name: links\n    when: len(urls) > 3\n    action: reject\n"), 0o644)
	set, err := rules.Load(rules.Config{Files: []string{file}}, rules.Options{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
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
