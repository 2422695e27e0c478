package reports

import (
	"testing"
	"time"

	"github.com/mailward/mailward/policy"
)

// BenchmarkRecord is what recording costs the connection's goroutine:
// a check and a channel send, the aggregation happening elsewhere.
func BenchmarkRecord(b *testing.B) {
	l, err := NewLocal(LocalConfig{Interval: 24 * time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	rec := NewRecorder(l, true, 1<<16)
	defer rec.Close()
	f := finished(b, testRecord, "pass", policy.Accept, "192.0.2.1")
	b.ReportAllocs()
	for b.Loop() {
		rec.Record(f)
	}
}

// BenchmarkAggregate is the aggregating goroutine's cost per message.
func BenchmarkAggregate(b *testing.B) {
	agg := NewAggregates(24*time.Hour, 0, 0)
	o, _ := Observe(finished(b, testRecord, "pass", policy.Accept, "192.0.2.1"), true)
	at := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		agg.Add(at, o)
	}
}
