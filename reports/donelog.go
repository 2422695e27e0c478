package reports

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// maxDoneLine bounds one line of the done log: a domain name is at
// most 253 bytes, so a longer line is no line the store wrote.
const maxDoneLine = 1024

// doneLine is one line of the done log.
type doneLine struct {
	Begin  time.Time `json:"begin"`
	Domain string    `json:"domain"`
	Undo   bool      `json:"undo,omitempty"`
}

// donePath is the log of reports done since the last snapshot: one
// line each, so that marking a report done never rewrites the store.
func (l *Local) donePath() string { return l.cfg.Path + ".done" }

// loadDone forgets the reports the done log names: reported after the
// last snapshot. The log is read a line at a time and at most maxDone
// bytes of it; only lines naming a report the snapshot holds are kept
// (not one of a period past sending, given up and gone from it), so
// what it costs in memory is bounded by the aggregates, not the log. The snapshot saved
// then holds what the log said, and the log is removed.
func (l *Local) loadDone() error {
	f, err := os.Open(l.donePath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the DMARC report store's done log: %w", err)
	}
	defer f.Close()
	limit := l.cfg.maxDone
	if limit <= 0 {
		limit = maxSnapshot
	}
	if st, err := f.Stat(); err == nil && st.Size() > limit {
		l.log.Warn("DMARC report store's done log larger than the bound; the rest is not read, and reports it names may be sent again",
			"path", l.donePath(), "bytes", st.Size(), "bound", limit)
	}
	done, order, err := l.readDone(io.LimitReader(f, limit))
	if err != nil {
		return fmt.Errorf("reading the DMARC report store's done log: %w", err)
	}
	for _, k := range order {
		if done[k] {
			l.agg.remove(k)
		}
	}
	if l.cfg.ReadOnly {
		return nil
	}
	l.dirty.Store(true)
	return l.Save()
}

// readDone reads the done log's lines: for each report held that a
// line names, whether the last line says done (a report undone after
// it was done is kept), in the order first named.
func (l *Local) readDone(r io.Reader) (map[Key]bool, []Key, error) {
	br := bufio.NewReaderSize(r, maxDoneLine)
	done := map[Key]bool{}
	var order []Key
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// Too long: skipped to its end.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			line = nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, nil, err
		}
		var e doneLine
		if len(line) > 0 && json.Unmarshal(line, &e) == nil && e.Domain != "" {
			// A report not held was reported before the snapshot, or its
			// period is past sending and was given up: nothing to keep.
			if k := (Key{Begin: e.Begin.UTC(), Domain: e.Domain}); l.agg.has(k) {
				if _, seen := done[k]; !seen {
					order = append(order, k)
				}
				done[k] = !e.Undo
			}
		}
		if err != nil {
			return done, order, nil
		}
	}
}

// logDone appends e to the done log, synced.
func (l *Local) logDone(e doneLine) error {
	if l.cfg.Path == "" || l.cfg.ReadOnly {
		return nil
	}
	line, err := json.Marshal(e)
	if err != nil {
		return err
	}
	// Under the save lock: a snapshot taken before this removal must not
	// clear the line.
	l.save.Lock()
	defer l.save.Unlock()
	f, err := os.OpenFile(l.donePath(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(line, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
