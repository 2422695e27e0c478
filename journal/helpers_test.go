package journal

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/rules"
)

// rulesOf loads one rule file of the given text.
func rulesOf(t *testing.T, text string) *rules.Set {
	t.Helper()
	file := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return loadRules(t, file)
}

// journalOne sends one message with the header field and body through an
// engine on res and set that records into a new journal; it returns the
// live verdict, the journal's text and the transaction replayed from it.
func journalOne(t *testing.T, settings policy.Settings, res *checked, set *rules.Set, header [2]string, body string) (policy.Verdict, string, *policy.Outcome) {
	t.Helper()
	cfg := testConfig(t)
	w, err := Open(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e := policy.NewEngine(settings, newRecorded(res), set, quiet())
	e.SetRecorder(w)
	c, _ := e.Connect(ctx, policy.ConnInfo{IP: netip.MustParseAddr("192.0.2.7"), Front: "milter"})
	c.Helo(ctx, "mx.example.org")
	c.Mail(ctx, "alice@example.org", policy.MailInfo{})
	c.Rcpt(ctx, "bob@example.net")
	c.Header(header[0], header[1])
	c.EndOfHeaders(ctx)
	c.Body([]byte(body))
	live := c.EndOfMessage(ctx)
	c.Close()
	w.Close()
	raw, err := os.ReadFile(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	rp := &Replayer{Settings: settings, Rules: set, Log: quiet()}
	out, err := rp.Replay(ctx, readAll(t, cfg.Path)[0])
	if err != nil {
		t.Fatal(err)
	}
	return live, string(raw), out
}
