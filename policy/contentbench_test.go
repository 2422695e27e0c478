package policy_test

import (
	"testing"
	"time"

	"github.com/mailward/mailward/internal/testenv"
)

// contentCorpus is testenv's content corpus from the world's domain,
// each message signed.
func contentCorpus(b *testing.B, w *world) []string {
	var out []string
	for _, m := range testenv.ContentCorpus("example.test") {
		out = append(out, w.sign(b, m))
	}
	return out
}

// BenchmarkContentCost compares the CPU time per message of the engine
// with real checks (SPF, DKIM, DMARC, iprev on the fixture DNS server)
// with the content scan off and on, over the same corpus, rounds
// interleaved (off, on, off, on) so that a busy machine weighs on both
// alike. The target is 1.3 times or less:
//
//	go test -run - -bench ContentCost -benchtime 20x ./policy
func BenchmarkContentCost(b *testing.B) {
	w := newWorld(b)
	msgs := contentCorpus(b, w)
	on := w.engine(b, nil)
	w.contentOff = true
	off := w.engine(b, nil)
	rc := []string{"bob@example.net"}
	const perRound = 25 // times the corpus
	var cpuOff, cpuOn time.Duration
	n := 0
	for b.Loop() {
		start := cpuTime()
		for range perRound {
			for _, m := range msgs {
				send(b, off, "192.0.2.1", "alice@example.test", rc, m)
			}
		}
		cpuOff += cpuTime() - start
		start = cpuTime()
		for range perRound {
			for _, m := range msgs {
				send(b, on, "192.0.2.1", "alice@example.test", rc, m)
			}
		}
		cpuOn += cpuTime() - start
		n += perRound * len(msgs)
	}
	b.ReportMetric(float64(cpuOff.Microseconds())/float64(n), "off-cpu-µs/msg")
	b.ReportMetric(float64(cpuOn.Microseconds())/float64(n), "on-cpu-µs/msg")
	b.ReportMetric(float64(cpuOn)/float64(cpuOff), "on/off")
}
