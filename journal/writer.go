package journal

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	segjson "github.com/segmentio/encoding/json"

	"github.com/mailward/mailward/policy"
)

// maxHeaderBytes bounds the header fields one line keeps: what a sender
// writes must not make the journal grow without bound.
const maxHeaderBytes = 64 << 10

// batchBytes is how much is written at once when lines queue up.
const batchBytes = 64 << 10

// Writer appends journal lines from a queue on a goroutine of its own.
// Recording never waits: when the queue is full or the disk refuses the
// write, lines are dropped and counted. It implements policy.Recorder.
type Writer struct {
	cfg   Config
	omit  map[string]bool
	log   *slog.Logger
	queue chan *Record
	stop  chan struct{}
	done  chan struct{}

	closed           atomic.Bool
	written, dropped atomic.Uint64
	lastWarn         atomic.Int64

	// Owned by the writing goroutine.
	f      *os.File
	size   int64
	opened time.Time // when the file's first line was written
	buf    bytes.Buffer
	enc    *segjson.Encoder
	lines  int // lines in buf
}

// Stats are the writer's counters since it was opened.
type Stats struct {
	Written, Dropped uint64
}

// Open opens (or creates) the journal file and starts writing. The error
// is about the file: a journal that cannot be written at start is a
// config problem, later failures only drop lines.
func Open(cfg Config, log *slog.Logger) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	w := &Writer{cfg: cfg, omit: map[string]bool{}, log: log, queue: make(chan *Record, cfg.Queue),
		stop: make(chan struct{}), done: make(chan struct{})}
	for _, h := range cfg.OmitHeaders {
		w.omit[strings.ToLower(h)] = true
	}
	w.enc = segjson.NewEncoder(&w.buf)
	w.enc.SetEscapeHTML(false)
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o750); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if err := w.open(); err != nil {
		return nil, err
	}
	go w.run()
	return w, nil
}

// Record queues one finished transaction; it never blocks.
func (w *Writer) Record(f *policy.Finished) {
	if w.closed.Load() {
		w.drop(1, "the journal is closed")
		return
	}
	r := newRecord(f, w.omit)
	boundHeaders(r)
	select {
	case w.queue <- r:
	default:
		w.drop(1, "the journal queue is full")
	}
}

// Stats returns the counters.
func (w *Writer) Stats() Stats { return Stats{Written: w.written.Load(), Dropped: w.dropped.Load()} }

// Close writes what is queued and closes the file.
func (w *Writer) Close() error {
	if w.closed.Swap(true) {
		return nil
	}
	close(w.stop)
	<-w.done
	return nil
}

// drop counts lines not written and says so at most once a minute.
func (w *Writer) drop(n int, why string) {
	total := w.dropped.Add(uint64(n))
	now := time.Now().UnixNano()
	last := w.lastWarn.Load()
	if now-last < int64(time.Minute) || !w.lastWarn.CompareAndSwap(last, now) {
		return
	}
	w.log.Warn("journal lines dropped; mail is not affected", "why", why, "dropped", total, "path", w.cfg.Path)
}

func (w *Writer) run() {
	defer close(w.done)
	for {
		select {
		case r := <-w.queue:
			w.encode(r)
			w.drain()
			w.flush()
		case <-w.stop:
			w.drain()
			w.flush()
			if w.f != nil {
				w.f.Close()
			}
			return
		}
	}
}

// drain takes what is waiting without waiting, writing in batches.
func (w *Writer) drain() {
	for {
		select {
		case r := <-w.queue:
			w.encode(r)
			if w.buf.Len() >= batchBytes {
				w.flush()
			}
		default:
			return
		}
	}
}

func (w *Writer) encode(r *Record) {
	if err := w.enc.Encode(r); err != nil {
		w.drop(1, err.Error())
		return
	}
	w.lines++
}

// flush writes the batch, rotating first when it is time.
func (w *Writer) flush() {
	if w.lines == 0 {
		return
	}
	n := w.lines
	defer func() { w.buf.Reset(); w.lines = 0 }()
	now := time.Now()
	if w.f != nil && w.size > 0 && (w.size+int64(w.buf.Len()) > w.cfg.MaxSize || now.Sub(w.opened) >= time.Duration(w.cfg.MaxAge)) {
		if err := w.rotate(now); err != nil {
			w.log.Warn("journal rotation failed", "err", err)
		}
	}
	if w.f == nil {
		if err := w.open(); err != nil {
			w.drop(n, err.Error())
			return
		}
	}
	m, err := w.f.Write(w.buf.Bytes())
	w.size += int64(m)
	if err != nil {
		// A full disk: these lines are lost, the next batch tries again
		// on a file opened afresh.
		w.drop(n, err.Error())
		w.f.Close()
		w.f = nil
		return
	}
	if w.opened.IsZero() {
		w.opened = now
	}
	w.written.Add(uint64(n))
}

// open opens the journal file for appending and learns its size and age.
func (w *Writer) open() error {
	f, err := os.OpenFile(w.cfg.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("journal: %w", err)
	}
	w.f, w.size, w.opened = f, st.Size(), time.Time{}
	if w.size > 0 {
		w.opened = firstLineTime(w.cfg.Path, st.ModTime())
	}
	return nil
}

// firstLineTime is when a file's first line was written, so that a
// restart does not reset the file's age; fallback when it cannot tell.
func firstLineTime(path string, fallback time.Time) time.Time {
	f, err := os.Open(path)
	if err != nil {
		return fallback
	}
	defer f.Close()
	line, err := bufio.NewReader(io.LimitReader(f, maxLine)).ReadBytes('\n')
	if err != nil {
		return fallback
	}
	var r struct {
		Time time.Time `json:"time"`
	}
	if json.Unmarshal(line, &r) != nil || r.Time.IsZero() {
		return fallback
	}
	return r.Time
}

// rotate moves the file aside under its start time and removes the
// oldest rotated files beyond max_total.
func (w *Writer) rotate(now time.Time) error {
	w.f.Close()
	w.f = nil
	start := w.opened
	if start.IsZero() {
		start = now
	}
	name := rotatedName(w.cfg.Path, start)
	for i := 1; fileExists(name); i++ {
		name = rotatedName(w.cfg.Path, start.Add(time.Duration(i)*time.Millisecond))
	}
	if err := os.Rename(w.cfg.Path, name); err != nil {
		return fmt.Errorf("rotating %s: %w", w.cfg.Path, err)
	}
	w.size, w.opened = 0, time.Time{}
	return w.prune()
}

func fileExists(name string) bool {
	_, err := os.Lstat(name)
	return err == nil
}

// rotatedName is PATH with the file's start time before its extension:
// journal.jsonl becomes journal-20261203T074501.250Z.jsonl, so that names
// sort in time order.
func rotatedName(path string, t time.Time) string {
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + "-" + t.UTC().Format("20060102T150405.000Z") + ext
}

// Rotated lists the rotated files of the journal at path, oldest first.
func Rotated(path string) ([]string, error) {
	ext := filepath.Ext(path)
	names, err := filepath.Glob(globEscape(strings.TrimSuffix(path, ext)) + "-*" + globEscape(ext))
	if err != nil {
		return nil, err
	}
	out := names[:0]
	for _, n := range names {
		stamp := strings.TrimSuffix(strings.TrimPrefix(n, strings.TrimSuffix(path, ext)+"-"), ext)
		if _, err := time.Parse("20060102T150405.000Z", stamp); err == nil {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

func globEscape(s string) string {
	r := strings.NewReplacer(`*`, `\*`, `?`, `\?`, `[`, `\[`, `\`, `\\`)
	return r.Replace(s)
}

// prune removes the oldest rotated files until they and a full current
// file fit in max_total.
func (w *Writer) prune() error {
	old, err := Rotated(w.cfg.Path)
	if err != nil {
		return err
	}
	sizes := make([]int64, len(old))
	total := w.cfg.MaxSize
	for i, n := range old {
		if st, err := os.Stat(n); err == nil {
			sizes[i] = st.Size()
			total += sizes[i]
		}
	}
	var errs []error
	for i := 0; i < len(old) && total > w.cfg.MaxTotal; i++ {
		if err := os.Remove(old[i]); err != nil {
			errs = append(errs, err)
			continue
		}
		total -= sizes[i]
	}
	return errors.Join(errs...)
}

// boundHeaders keeps the header fields within maxHeaderBytes, in order,
// and says so when some were left out.
func boundHeaders(r *Record) {
	n := 0
	for i, h := range r.Headers {
		n += len(h.Name) + len(h.Value)
		if n > maxHeaderBytes {
			r.Headers = r.Headers[:i]
			r.HeadersTruncated = true
			return
		}
	}
}
