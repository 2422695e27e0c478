package reports

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults of a Local store.
const (
	// DefaultSnapshotEvery is how often a Local store with a file saves:
	// a crash loses at most this much; a clean stop loses nothing.
	DefaultSnapshotEvery = time.Minute
	// maxSnapshot bounds the file read at start.
	maxSnapshot     = 256 << 20
	snapshotVersion = 1
)

// LocalConfig sets up a Local store.
type LocalConfig struct {
	Interval   time.Duration // the period, as reports.interval
	MaxRows    int           // rows per report; 0: DefaultMaxRows
	MaxDomains int           // policy domains per period; 0: DefaultMaxDomains
	// Path, if set, is the file the aggregates are saved to every
	// SnapshotEvery, after each report and on Close, and loaded from at
	// start, so that a restart in the middle of a period loses nothing.
	Path          string
	SnapshotEvery time.Duration
	// ReadOnly loads the file and never writes it: a preview beside a
	// running instance.
	ReadOnly bool
	// Exclusive locks the file (flock on Path+".lock") for as long as
	// the store is open, and fails when another process holds it: two
	// processes sending from one file would both report its periods.
	Exclusive bool
	Log       *slog.Logger
	// maxDone bounds the bytes of the done log read at start;
	// 0: maxSnapshot.
	maxDone int64
}

// Local is the Store of one instance: the aggregates in memory, saved
// to a file. It is safe for concurrent use.
type Local struct {
	agg  *Aggregates
	cfg  LocalConfig
	log  *slog.Logger
	save sync.Mutex // one write of the file at a time
	// dirty says something changed since the last save.
	dirty   atomic.Bool
	dropped atomic.Int64
	lock    *os.File
	stop    chan struct{}
	done    sync.WaitGroup
	once    sync.Once
}

// snapshot is the file's content.
type snapshot struct {
	Version int       `json:"version"`
	Saved   time.Time `json:"saved"`
	Reports []*Domain `json:"reports"`
}

// NewLocal returns a Local store, loading cfg.Path if it exists. A file
// that cannot be read as a snapshot is moved aside (".bad") and logged,
// never a reason not to start: reports must not stop mail.
func NewLocal(cfg LocalConfig) (*Local, error) {
	if cfg.SnapshotEvery <= 0 {
		cfg.SnapshotEvery = DefaultSnapshotEvery
	}
	l := &Local{agg: NewAggregates(cfg.Interval, cfg.MaxRows, cfg.MaxDomains), cfg: cfg, log: cfg.Log, stop: make(chan struct{})}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Path == "" {
		return l, nil
	}
	if cfg.Exclusive && !cfg.ReadOnly {
		f, err := os.OpenFile(cfg.Path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("locking the DMARC report store: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			return nil, fmt.Errorf("the DMARC report store %s is in use by another process (mailward serve?): %w", cfg.Path, err)
		}
		l.lock = f
	}
	if err := l.load(); err != nil {
		l.unlock()
		return nil, err
	}
	if cfg.ReadOnly {
		return l, nil
	}
	l.done.Add(1)
	go l.loop()
	return l, nil
}

// load reads the snapshot file, if there is one.
func (l *Local) load() error {
	f, err := os.Open(l.cfg.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the DMARC report store: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSnapshot+1))
	if err != nil {
		return fmt.Errorf("reading the DMARC report store: %w", err)
	}
	var s snapshot
	switch err := json.Unmarshal(b, &s); {
	case len(b) > maxSnapshot:
		err = fmt.Errorf("larger than %d bytes", maxSnapshot)
		fallthrough
	case err != nil || s.Version != snapshotVersion:
		if err == nil {
			err = fmt.Errorf("version %d, want %d", s.Version, snapshotVersion)
		}
		if l.cfg.ReadOnly {
			return fmt.Errorf("reading the DMARC report store %s: %w", l.cfg.Path, err)
		}
		bad := l.cfg.Path + ".bad"
		l.log.Error("DMARC report store unreadable; moved aside, starting empty", "path", l.cfg.Path, "moved_to", bad, "err", err)
		if err := os.Rename(l.cfg.Path, bad); err != nil {
			return fmt.Errorf("moving the unreadable DMARC report store aside: %w", err)
		}
		return nil
	}
	lost := 0
	for _, d := range s.Reports {
		if d == nil || d.Policy.Domain == "" {
			continue
		}
		lost += l.agg.restore(d)
	}
	if lost > 0 {
		l.log.Warn("DMARC report store held more than the bounds allow", "path", l.cfg.Path, "rows_dropped", lost)
	}
	return l.loadDone()
}

func (l *Local) loop() {
	defer l.done.Done()
	t := time.NewTicker(l.cfg.SnapshotEvery)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			if l.dirty.Load() {
				if err := l.Save(); err != nil {
					l.log.Warn("DMARC report store not saved", "err", err)
				}
			}
		}
	}
}

// Save writes the aggregates to the file, atomically: a new file
// renamed over the old, so a crash leaves one or the other whole.
func (l *Local) Save() error {
	if l.cfg.Path == "" || l.cfg.ReadOnly {
		return nil
	}
	l.save.Lock()
	defer l.save.Unlock()
	l.dirty.Store(false)
	s := snapshot{Version: snapshotVersion, Saved: time.Now().UTC(), Reports: l.agg.Current()}
	var b bytes.Buffer
	if err := json.NewEncoder(&b).Encode(&s); err != nil {
		l.dirty.Store(true)
		return fmt.Errorf("encoding the DMARC report store: %w", err)
	}
	if err := writeAtomic(l.cfg.Path, b.Bytes()); err != nil {
		l.dirty.Store(true)
		return fmt.Errorf("saving the DMARC report store: %w", err)
	}
	// The snapshot holds what the done log said.
	if err := os.Remove(l.donePath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("clearing the DMARC report store's done log: %w", err)
	}
	return nil
}

// writeAtomic writes data to a temporary file beside path, syncs it and
// renames it over path.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // the rename itself survives a crash
		d.Close()
	}
	return nil
}

// Add implements Store.
func (l *Local) Add(_ context.Context, t time.Time, o Observation) error {
	if !l.agg.Add(t, o) {
		return ErrBound
	}
	l.dirty.Store(true)
	return nil
}

// Ended implements Store.
func (l *Local) Ended(_ context.Context, now time.Time) ([]Key, error) {
	keys := l.agg.endedKeys(now)
	out := keys[:0]
	for _, k := range keys {
		// As Redis lets them expire: a report that could not be sent
		// for a week is given up, so that an outage cannot pile them up.
		if l.agg.end(k.Begin).Add(DefaultKeep).Before(now) {
			l.agg.remove(k)
			l.dirty.Store(true)
			l.log.Warn("DMARC report given up: not sent within a week of its period", "policy_domain", k.Domain, "period", k.Begin.Format(time.RFC3339))
			continue
		}
		out = append(out, k)
	}
	return out, nil
}

// Claim implements Store: one instance has nobody to share with.
func (l *Local) Claim(_ context.Context, k Key) (func(), bool, error) {
	return func() {}, l.agg.get(k) != nil, nil
}

// Load implements Store.
func (l *Local) Load(_ context.Context, k Key) (*Domain, error) { return l.agg.get(k), nil }

// Done implements Store. It appends k to the done log, synced, before
// it returns, so that a restart never reports it again; the next
// snapshot takes it in.
func (l *Local) Done(_ context.Context, k Key) error {
	d := l.agg.get(k)
	l.agg.remove(k)
	l.dirty.Store(true)
	if err := l.logDone(doneLine{Begin: k.Begin.UTC(), Domain: k.Domain}); err != nil {
		// Not done, so kept: the next snapshot would lose it otherwise.
		if d != nil {
			l.agg.restore(d)
		}
		return fmt.Errorf("marking the DMARC report of %s done: %w", k.Domain, err)
	}
	return nil
}

// Undo implements Store; the next snapshot holds the aggregate again.
func (l *Local) Undo(_ context.Context, k Key, d *Domain) error {
	l.agg.restore(d)
	l.dirty.Store(true)
	if err := l.logDone(doneLine{Begin: k.Begin.UTC(), Domain: k.Domain, Undo: true}); err != nil {
		return fmt.Errorf("keeping the DMARC report of %s for later: %w", k.Domain, err)
	}
	return nil
}

// Current implements Store.
func (l *Local) Current(context.Context) ([]*Domain, error) { return l.agg.Current(), nil }

// End implements Store.
func (l *Local) End(begin time.Time) time.Time { return l.agg.end(begin) }

// Dropped implements Store.
func (l *Local) Dropped() int64 { return l.agg.Dropped() + l.dropped.Load() }

// Close implements Store: it stops the periodic save and saves.
func (l *Local) Close() error {
	var err error
	l.once.Do(func() {
		close(l.stop)
		l.done.Wait()
		err = l.Save()
		l.unlock()
	})
	return err
}

func (l *Local) unlock() {
	if l.lock != nil {
		l.lock.Close() // closing releases the flock
		l.lock = nil
	}
}
