package main

import (
	"log/slog"
	"path/filepath"
	"reflect"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailward/mailward/admin"
	"github.com/mailward/mailward/journal"
	"github.com/mailward/mailward/policy"
)

// journal is the journal's config with its path resolved from the
// config file's directory.
func (c *Config) journal() journal.Config {
	j := c.Journal
	if j.Path != "" && !filepath.IsAbs(j.Path) {
		j.Path = filepath.Join(c.baseDir(), j.Path)
	}
	return j
}

// journalState is the running journal writer; a reload that changes
// the journal: section replaces it.
type journalState struct {
	mu   sync.Mutex
	cfg  journal.Config
	w    *journal.Writer
	past journal.Stats // of writers a reload closed, so the metrics only grow
	// also records beside the journal (DMARC reports); set before the
	// first apply.
	also policy.Recorder
}

// apply makes the engine record into a journal as cfg says, and into
// also. The new
// writer opens before the old one closes; on error the running one stays.
func (j *journalState) apply(cfg journal.Config, e *policy.Engine, log *slog.Logger) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.w != nil && reflect.DeepEqual(cfg, j.cfg) {
		return nil
	}
	var w *journal.Writer
	if cfg.Enabled() {
		var err error
		if w, err = journal.Open(cfg, log); err != nil {
			return err
		}
		e.SetRecorder(policy.JoinRecorders(w, j.also))
	} else {
		e.SetRecorder(j.also)
	}
	if j.w != nil {
		j.w.Close()
		st := j.w.Stats()
		j.past.Written += st.Written
		j.past.Dropped += st.Dropped
	}
	j.cfg, j.w = cfg, w
	return nil
}

func (j *journalState) stats() journal.Stats {
	j.mu.Lock()
	defer j.mu.Unlock()
	st := j.past
	if j.w != nil {
		cur := j.w.Stats()
		st.Written += cur.Written
		st.Dropped += cur.Dropped
	}
	return st
}

// close writes what is queued; call it once the fronts have stopped.
func (j *journalState) close() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.w != nil {
		j.w.Close()
	}
}

func (j *journalState) metrics(m *admin.Metrics) {
	for outcome, fn := range map[string]func(journal.Stats) uint64{
		"written": func(s journal.Stats) uint64 { return s.Written }, "dropped": func(s journal.Stats) uint64 { return s.Dropped },
	} {
		m.CounterFunc("mailward_journal_lines_total", "Journal lines, by outcome: written, or dropped because the queue was full or the disk refused them.",
			prometheus.Labels{"outcome": outcome}, func() float64 { return float64(fn(j.stats())) })
	}
}
