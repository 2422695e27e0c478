package policy_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/journal"
	"github.com/mailward/mailward/policy"
)

// newsletter is a message with the header fields most mail has, so that
// its journal line is of the usual size.
const newsletter = "From: Alice <alice@example.test>\r\nTo: bob@example.net\r\nSubject: Your December newsletter\r\n" +
	"Date: Thu, 3 Dec 2026 07:00:00 +0000\r\nMessage-ID: <20261203070000.1234@example.test>\r\nMIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\nList-Unsubscribe: <mailto:unsubscribe@example.test>\r\n" +
	"Received: from mail.example.test (mail.example.test [192.0.2.1]) by mx.receiver.test with ESMTPS id 4XyZ1; Thu, 3 Dec 2026 07:00:00 +0000\r\n\r\n"

// capture keeps the last transaction the engine finished.
type capture struct{ last *policy.Finished }

func (c *capture) Record(f *policy.Finished) { c.last = f }

// BenchmarkJournalCost compares the CPU time journaling costs per message
// with the CPU time of the message itself, through the engine with real
// checks (SPF, DKIM, DMARC, iprev on the fixture DNS server). Rounds
// alternate (A, B, A, B): A runs messages without a journal; B records
// as many transactions as A ran into a journal, writer goroutine and
// file writes included (it is closed, every line written, before the
// round's CPU time is read). Measured apart, the journal's share does
// not drown in the noise of a shared machine. The target is 5 % or less:
//
//	go test -run - -bench JournalCost ./policy
func BenchmarkJournalCost(b *testing.B) {
	w := newWorld(b)
	msg := w.sign(b, newsletter+strings.Repeat("A line of the newsletter body, as long as most lines are.\r\n", 60))
	e := w.engine(b, nil)
	rc := []string{"bob@example.net"}
	var last capture
	e.SetRecorder(&last)
	const perRound = 500
	var message, journaling time.Duration
	n := 0
	for b.Loop() {
		start := cpuTime()
		for range perRound {
			send(b, e, "192.0.2.1", "alice@example.test", rc, msg)
		}
		message += cpuTime() - start

		cfg := journal.DefaultConfig()
		cfg.Path = filepath.Join(b.TempDir(), "journal.jsonl")
		jw, err := journal.Open(cfg, quietLog())
		if err != nil {
			b.Fatal(err)
		}
		start = cpuTime()
		for range perRound {
			f := *last.last
			jw.Record(&f)
		}
		jw.Close()
		journaling += cpuTime() - start
		if st := jw.Stats(); st.Written != perRound {
			b.Fatalf("journal: %+v of %d lines", st, perRound)
		}
		n += perRound
	}
	b.ReportMetric(float64(message.Microseconds())/float64(n), "message-cpu-µs")
	b.ReportMetric(float64(journaling.Microseconds())/float64(n), "journal-cpu-µs")
	b.ReportMetric(100*float64(journaling)/float64(message), "journal-%")
}
