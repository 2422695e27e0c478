package journal

import (
	"context"
	"runtime/debug"
	"syscall"
	"testing"
	"time"

	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/rules"
)

// exampleJournal is the journal of examples/journal, made by
// mailward-bench traffic through the example rules.
const exampleJournal = "../examples/journal/journal.jsonl"

func exampleLines(b *testing.B) []*Line {
	var lines []*Line
	ps, err := Read([]string{exampleJournal}, func(l *Line) error { lines = append(lines, l); return nil })
	if err != nil || len(ps) > 0 || len(lines) == 0 {
		b.Fatalf("reading %s: %v %v", exampleJournal, err, ps)
	}
	return lines
}

func exampleRules(b *testing.B) *rules.Set {
	s, err := rules.LoadPaths([]string{"../examples/rules"}, nil, rules.Options{BaseDir: ".", Logger: quiet()})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkReplay reads, decodes and replays the example journal through
// the example rules, as `rules replay` does: the target is 20,000
// transactions a second or more on two cores. Run it with
//
//	go test -run - -bench Replay ./journal
func BenchmarkReplay(b *testing.B) {
	n := len(exampleLines(b))
	files := make([]string, 0, 64)
	for range cap(files) {
		files = append(files, exampleJournal)
	}
	rp := &Replayer{Settings: policy.Settings{Hostname: "mx.example.com"}, Rules: exampleRules(b), Log: quiet()}
	ctx := context.Background()
	// As mailward rules replay sets it (cmd/mailward, replayGCPercent).
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu := time.Now(), cpuTime()
	total := 0
	for range b.N {
		ps, err := rp.Run(ctx, files, func(*Line, *policy.Outcome) error { total++; return nil })
		if err != nil || len(ps) > 0 {
			b.Fatal(err, ps)
		}
	}
	if total != b.N*n*len(files) {
		b.Fatalf("replayed %d of %d", total, b.N*n*len(files))
	}
	b.ReportMetric(float64(total)/time.Since(start).Seconds(), "tx/s")
	// The machine is shared: transactions per CPU second (of both cores
	// together) says what an idle machine would do, whatever the load.
	b.ReportMetric(float64(total)/(cpuTime()-cpu).Seconds(), "tx/cpu-s")
}

// BenchmarkReplayOne is one transaction's replay alone, without reading
// or decoding.
func BenchmarkReplayOne(b *testing.B) {
	lines := exampleLines(b)
	rp := &Replayer{Settings: policy.Settings{Hostname: "mx.example.com"}, Rules: exampleRules(b), Log: quiet()}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if _, err := rp.Replay(ctx, lines[i%len(lines)]); err != nil {
			b.Fatal(err)
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
