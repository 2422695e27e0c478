package journal

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/dmarc"
	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/checks/iprev"
	"github.com/mailward/mailward/checks/spf"
	"github.com/mailward/mailward/policy"
)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func testConfig(t *testing.T) Config {
	c := DefaultConfig()
	c.Path = filepath.Join(t.TempDir(), "journal.jsonl")
	return c
}

// results are what the checks of the engine tests say.
func results() *checked {
	return &checked{res: policy.Results{
		IPRev:   &iprev.Result{Result: "pass", PTR: "mx.example.org", FCrDNS: true},
		DNSBL:   []dnsbl.Result{{Zone: "zen.test", Query: "192.0.2.7", Codes: []string{"127.0.0.2"}, Names: []string{"sbl"}}},
		SPFHelo: &spf.Result{Result: "none", Identity: "helo"},
		SPF:     &spf.Result{Result: "pass", Domain: "example.org", Identity: "mailfrom"},
		DKIM:    []dkim.Result{{Domain: "example.org", Selector: "s1", Algorithm: "rsa-sha256", Result: "pass"}},
		DMARC:   &dmarc.Result{Result: "pass", Policy: "reject", Domain: "example.org"},
	}}
}

// send plays one message through a real engine whose recorder is r.
func send(t *testing.T, r policy.Recorder, rules policy.Rules) {
	t.Helper()
	ctx := context.Background()
	e := policy.NewEngine(policy.Settings{Hostname: "mx.test"}, newRecorded(results()), rules, quiet())
	e.SetRecorder(r)
	c, _ := e.Connect(ctx, policy.ConnInfo{IP: netip.MustParseAddr("192.0.2.7"), Front: "milter"})
	defer c.Close()
	c.Helo(ctx, "mx.example.org")
	c.Mail(ctx, "<alice@example.org>", policy.MailInfo{QueueID: "Q1", TLS: true})
	c.Rcpt(ctx, "<bob@example.net>")
	c.Rcpt(ctx, "<nobody@example.net>")
	c.Header("Subject", "quarterly figures")
	c.Header("From", "Alice <alice@example.org>")
	c.EndOfHeaders(ctx)
	c.Body([]byte("the secret body\r\n"))
	c.EndOfMessage(ctx)
}

// refuseNobody is a rule set: it refuses one recipient and scores a header.
var refuseNobody = policy.RulesFunc(func(_ context.Context, st policy.Stage, f *policy.Facts, m *[]policy.Match) policy.Verdict {
	switch {
	case st == policy.StageRcpt && strings.HasPrefix(f.Rcpt, "nobody@"):
		*m = append(*m, policy.Match{Rule: "no-such-user", Action: "reject", Stage: st})
		return policy.Verdict{Action: policy.Reject, Rule: "no-such-user", Code: 550, Enhanced: "5.1.1", Text: "No such user"}
	case st == policy.StageData && f.Header("From") != "":
		f.Score += 1.5
		*m = append(*m, policy.Match{Rule: "has-from", Action: "score", Stage: st, Score: 1.5})
	}
	return policy.Verdict{Action: policy.Continue}
})

func readAll(t *testing.T, files ...string) []*Line {
	t.Helper()
	var out []*Line
	ps, err := Read(files, func(l *Line) error { out = append(out, l); return nil })
	if err != nil || len(ps) > 0 {
		t.Fatalf("reading the journal: %v %v", err, ps)
	}
	return out
}

// TestWriterRecordsTransaction: a message through the engine becomes one
// line with the envelope, headers (less the omitted), check results,
// score, verdict and matches, and never the body.
func TestWriterRecordsTransaction(t *testing.T) {
	cfg := testConfig(t)
	cfg.OmitHeaders = []string{"subject"}
	w, err := Open(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	send(t, w, refuseNobody)
	w.Close()
	raw, _ := os.ReadFile(cfg.Path)
	if strings.Contains(string(raw), "secret body") || strings.Contains(string(raw), "quarterly") {
		t.Fatalf("the journal holds the body or an omitted header:\n%s", raw)
	}
	lines := readAll(t, cfg.Path)
	if len(lines) != 1 {
		t.Fatalf("got %d lines, want 1:\n%s", len(lines), raw)
	}
	r := lines[0].Record
	if r.V != Version || r.Front != "milter" || r.IP != "192.0.2.7" || r.Helo != "mx.example.org" || r.MailFrom != "alice@example.org" || r.QueueID != "Q1" || !r.TLS {
		t.Errorf("envelope: %+v", r)
	}
	if len(r.Rcpts) != 2 || r.Rcpts[0] != (Rcpt{Rcpt: "bob@example.net", Action: "accept"}) || r.Rcpts[1] != (Rcpt{Rcpt: "nobody@example.net", Action: "reject", Code: 550}) {
		t.Errorf("rcpts: %+v", r.Rcpts)
	}
	if len(r.Headers) != 1 || r.Headers[0] != (Header{"From", "Alice <alice@example.org>"}) || len(r.Omitted) != 1 || r.Omitted[0] != "Subject" {
		t.Errorf("headers %+v, omitted %v", r.Headers, r.Omitted)
	}
	c := r.Checks
	if c.IPRev == nil || c.IPRev.PTR != "mx.example.org" || len(c.DNSBL) != 1 || c.DNSBL[0].Names[0] != "sbl" || c.SPF == nil || c.SPF.Result != "pass" ||
		c.SPFHelo == nil || len(c.DKIM) != 1 || c.DKIM[0].Selector != "s1" || c.DMARC == nil || c.DMARC.Policy != "reject" {
		t.Errorf("checks: %s", raw)
	}
	if r.Score != 1.5 || r.Reached != "eom" || r.Verdict.Action != "accept" || r.Verdict.Stage != "eom" || r.Size == 0 {
		t.Errorf("outcome: score %g reached %s verdict %+v size %d", r.Score, r.Reached, r.Verdict, r.Size)
	}
	if len(r.Matches) != 2 || r.Matches[0].Rule != "no-such-user" || r.Matches[1] != (Match{Rule: "has-from", Action: "score", Stage: "data", Score: 1.5}) {
		t.Errorf("matches: %+v", r.Matches)
	}
	if st := w.Stats(); st.Written != 1 || st.Dropped != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestWriterRecordsAbortedTransaction: a client that gives up after its
// recipients were refused leaves a line that says how far it got.
func TestWriterRecordsAbortedTransaction(t *testing.T) {
	cfg := testConfig(t)
	w, err := Open(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e := policy.NewEngine(policy.Settings{}, nil, refuseNobody, quiet())
	e.SetRecorder(w)
	c, _ := e.Connect(ctx, policy.ConnInfo{IP: netip.MustParseAddr("192.0.2.8"), Front: "smtp"})
	c.Helo(ctx, "client.test")
	c.Mail(ctx, "a@client.test", policy.MailInfo{})
	c.Rcpt(ctx, "nobody@example.net")
	c.Close()
	w.Close()
	lines := readAll(t, cfg.Path)
	// Every recipient refused: the refusal is what the message came to.
	if len(lines) != 1 || lines[0].Reached != "rcpt" || lines[0].Verdict.Action != "reject" || lines[0].Rcpts[0].Action != "reject" {
		t.Fatalf("got %+v", lines)
	}
}

// TestWriterFullDiskDrops: a disk that refuses the write loses journal
// lines, counted, and nothing else.
func TestWriterFullDiskDrops(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full on this system")
	}
	cfg := DefaultConfig()
	cfg.Path = "/dev/full"
	w, err := Open(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		send(t, w, nil)
	}
	w.Close()
	if st := w.Stats(); st.Dropped != 3 || st.Written != 0 {
		t.Fatalf("stats %+v, want 3 dropped", st)
	}
}

// TestWriterNeverBlocks: when the disk does not keep up, recording
// returns at once and the lines that do not fit in the queue are dropped.
func TestWriterNeverBlocks(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "slow.jsonl")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	// A reader that reads nothing: the pipe fills and writes stall.
	rd, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Path, cfg.Queue = fifo, 2
	w, err := Open(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000 // far more than a pipe holds
	for range n {
		send(t, w, nil)
	}
	if st := w.Stats(); st.Dropped == 0 {
		t.Fatalf("stats %+v: nothing dropped with the disk stalled", st)
	}
	// Unstall: read everything, then the writer can finish.
	done := make(chan int64)
	go func() {
		syscall.SetNonblock(int(rd.Fd()), false)
		k, _ := io.Copy(io.Discard, rd)
		done <- k
	}()
	w.Close()
	rd.Close()
	<-done
	if st := w.Stats(); st.Dropped+st.Written != n {
		t.Fatalf("stats %+v: %d lines unaccounted for", st, n-st.Dropped-st.Written)
	}
}

// TestWriterRotatesBySize: files are moved aside at max_size and the
// oldest are removed beyond max_total; every line stays whole.
func TestWriterRotatesBySize(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxSize, cfg.MaxTotal = 4096, 3*4096
	w, err := Open(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	for range 60 {
		send(t, w, nil)
		time.Sleep(time.Millisecond) // let each line be its own batch
	}
	w.Close()
	rotated, err := Rotated(cfg.Path)
	if err != nil || len(rotated) < 2 {
		t.Fatalf("rotated files %v, %v", rotated, err)
	}
	var total int64
	for _, f := range append(rotated, cfg.Path) {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		total += st.Size()
		if st.Size() > cfg.MaxSize {
			t.Errorf("%s: %d bytes, more than max_size", f, st.Size())
		}
	}
	if total > cfg.MaxTotal {
		t.Errorf("journal files hold %d bytes, more than max_total %d", total, cfg.MaxTotal)
	}
	files, err := Expand([]string{filepath.Dir(cfg.Path)})
	if err != nil {
		t.Fatal(err)
	}
	if files[len(files)-1] != cfg.Path {
		t.Errorf("the file being written should come last: %v", files)
	}
	lines := readAll(t, files...)
	if len(lines) == 0 || len(lines) >= 60 {
		t.Errorf("%d lines kept of 60: the oldest should be gone, the newest kept", len(lines))
	}
}

// TestWriterRotatesByAge: a file whose first line is older than max_age
// is moved aside at the next write, across a restart.
func TestWriterRotatesByAge(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxAge = cache.Duration(time.Hour)
	old, _ := json.Marshal(Record{V: Version, Time: time.Now().Add(-2 * time.Hour), Reached: "eom"})
	if err := os.WriteFile(cfg.Path, append(old, '\n'), 0o640); err != nil {
		t.Fatal(err)
	}
	w, err := Open(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	send(t, w, nil)
	w.Close()
	rotated, _ := Rotated(cfg.Path)
	if len(rotated) != 1 {
		t.Fatalf("rotated %v, want the old file moved aside", rotated)
	}
	if got := readAll(t, cfg.Path); len(got) != 1 {
		t.Fatalf("the new file holds %d lines, want 1", len(got))
	}
}

// TestReadSkipsBadLines: a torn last line or a line of another program
// is reported with its position and the rest is read.
func TestReadSkipsBadLines(t *testing.T) {
	dir := t.TempDir()
	good, _ := json.Marshal(Record{V: Version, Reached: "eom", Verdict: Verdict{Action: "accept", Stage: "eom"}})
	newer, _ := json.Marshal(Record{V: Version + 1, Reached: "eom"})
	long := `{"v":1,"x":"` + strings.Repeat("a", maxLine) + `"}`
	data := fmt.Sprintf("%s\nhello\n%s\n%s\n\n%s\n%s", good, newer, long, good, good[:20])
	f := filepath.Join(dir, "j.jsonl")
	os.WriteFile(f, []byte(data), 0o600)
	var n int
	ps, err := Read([]string{f}, func(*Line) error { n++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("read %d good lines, want 2", n)
	}
	want := []string{":2: not a journal line", ":3: version 2 is newer", ":4: line longer", ":7: not a journal line"}
	if len(ps) != len(want) {
		t.Fatalf("problems %v", ps)
	}
	for i, p := range ps {
		if !strings.Contains(p.Error(), want[i]) {
			t.Errorf("problem %d: %v, want %q", i, p, want[i])
		}
	}
}
