package content

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/testenv"
)

// cpuTime is the CPU time the process has used: on a shared machine a
// steadier measure than the wall clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkScan scans the corpus, one message per op, in 4 KiB writes
// as a milter front gets them.
func BenchmarkScan(b *testing.B) {
	msgs := testenv.ContentCorpus("list.example")
	total := 0
	for _, m := range msgs {
		total += len(m)
	}
	b.SetBytes(int64(total / len(msgs)))
	b.ReportAllocs()
	i := 0
	start := cpuTime()
	for b.Loop() {
		m := msgs[i%len(msgs)]
		i++
		s := NewScanner(Options{})
		for len(m) > 0 {
			k := min(4096, len(m))
			s.Write([]byte(m[:k]))
			m = m[k:]
		}
		s.Finish()
	}
	b.ReportMetric(float64((cpuTime()-start).Nanoseconds())/1e3/float64(i), "cpu-µs/msg")
}

// BenchmarkScanHostile is the worst of the bounds tests: 100,000 links
// in 3 MB of HTML.
func BenchmarkScanHostile(b *testing.B) {
	var msg []byte
	msg = append(msg, "Content-Type: text/html\r\n\r\n"...)
	for i := 0; len(msg) < 3<<20; i++ {
		msg = append(msg, "<a href=\"http://l"...)
		msg = append(msg, byte('a'+i%26), byte('a'+i/26%26), byte('a'+i/676%26))
		msg = append(msg, ".example/\">x</a>\r\n"...)
	}
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		s := NewScanner(Options{})
		s.Write(msg)
		s.Finish()
	}
}

// BenchmarkScanLinkRuns is text of runs each holding hundreds of links
// and ending in a full stop: past the links looked at, such text must
// cost what plain text does.
func BenchmarkScanLinkRuns(b *testing.B) {
	run := strings.Repeat("http://a/", 455) + ". "
	msg := []byte("\r\n" + strings.Repeat(run, (8<<20)/len(run)) + "\r\n")
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		s := NewScanner(Options{})
		s.Write(msg)
		s.Finish()
	}
}
