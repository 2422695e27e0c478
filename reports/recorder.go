package reports

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailward/mailward/policy"
)

// DefaultQueue is how many finished transactions may wait for the
// aggregating goroutine.
const DefaultQueue = 4096

// Recorder is a policy.Recorder that adds every DMARC evaluation to
// Aggregates on a goroutine of its own, so that recording never slows
// mail: when the queue is full the transaction is dropped and counted.
type Recorder struct {
	store   Store
	enforce bool
	queue   chan *policy.Finished
	// stop, not closing queue: a transaction that ends after Close (a
	// shutdown that timed out) must not panic on a closed channel.
	stop    chan struct{}
	closed  atomic.Bool
	done    sync.WaitGroup
	once    sync.Once
	dropped atomic.Int64
}

// NewRecorder starts recording into store; enforce is dmarc.enforce, which
// says why a failing message was not refused. Close stops it.
func NewRecorder(store Store, enforce bool, queue int) *Recorder {
	if queue <= 0 {
		queue = DefaultQueue
	}
	r := &Recorder{store: store, enforce: enforce, queue: make(chan *policy.Finished, queue), stop: make(chan struct{})}
	r.done.Add(1)
	go r.loop()
	return r
}

// Record implements policy.Recorder; it never blocks.
func (r *Recorder) Record(f *policy.Finished) {
	if f.Facts.DMARC == nil {
		return
	}
	if r.closed.Load() {
		r.dropped.Add(1)
		return
	}
	select {
	case r.queue <- f:
	default:
		r.dropped.Add(1)
	}
}

func (r *Recorder) loop() {
	defer r.done.Done()
	for {
		select {
		case f := <-r.queue:
			r.add(f)
		case <-r.stop:
			for {
				select {
				case f := <-r.queue:
					r.add(f)
				default:
					return
				}
			}
		}
	}
}

func (r *Recorder) add(f *policy.Finished) {
	if o, ok := Observe(f, r.enforce); ok {
		t := f.Facts.Time
		if t.IsZero() {
			t = time.Now()
		}
		// Store faults and bounds are counted by the store.
		_ = r.store.Add(context.Background(), t, o)
	}
}

// Dropped is how many transactions a full queue or a bound of the
// aggregates kept out.
func (r *Recorder) Dropped() int64 { return r.dropped.Load() + r.store.Dropped() }

// Close records what is queued and stops.
func (r *Recorder) Close() {
	r.once.Do(func() {
		r.closed.Store(true)
		close(r.stop)
	})
	r.done.Wait()
}
