package rules

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Holder keeps the rule set in force. A reload compiles everything first
// and swaps only on success, so a broken save never replaces working
// rules. Transactions keep the *Set they started with (Current).
type Holder struct {
	mu       sync.Mutex // one load at a time
	cfg      Config
	opts     Options
	tried    []string // files the last load read, good or bad: what to watch
	cur      atomic.Pointer[Set]
	failures atomic.Uint64
	// swapped tells Watch that a load may have changed the files to watch.
	swapped chan struct{}
	// watching, if set, hears each directory Watch has begun to watch:
	// a change made before that is not seen.
	watching func(dir string)
}

// NewHolder returns a holder for cfg with no set yet; call Load.
func NewHolder(cfg Config, opts Options) *Holder {
	return &Holder{cfg: cfg, opts: opts, swapped: make(chan struct{}, 1)}
}

// Load compiles the rules of cfg and, on success, makes cfg and its set
// current. On failure the running set and config stay.
func (h *Holder) Load(cfg Config) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.load(cfg)
}

// Reload compiles the current config's files again and swaps the set in
// on success. The error lists every problem with its position.
func (h *Holder) Reload() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.load(h.cfg)
}

func (h *Holder) load(cfg Config) error {
	var p problems
	files := expandConfig(cfg.Files, h.opts.BaseDir, &p)
	b := build(buildInput{files: files, lists: cfg.Lists, listBase: h.opts.BaseDir}, h.opts, &p)
	h.tried = b.set.files
	if err := p.list.err(); err != nil {
		h.failures.Add(1)
		return err
	}
	s := b.set
	s.warnings = p.list.Warnings()
	if old := h.cur.Load(); old != nil {
		carryCounters(old, s)
	}
	h.cfg = cfg
	h.cur.Store(s)
	select {
	case h.swapped <- struct{}{}:
	default:
	}
	return nil
}

// carryCounters keeps per-rule counters across reloads so they only grow.
func carryCounters(old, s *Set) {
	byName := make(map[string]*rule, len(old.rules))
	for _, r := range old.rules {
		byName[r.name] = r
	}
	for _, r := range s.rules {
		if o := byName[r.name]; o != nil {
			r.matches.Store(o.matches.Load())
			r.errors.Store(o.errors.Load())
		}
	}
}

// Current returns the set in force, nil before the first successful
// load. Hold on to it for the length of a transaction.
func (h *Holder) Current() *Set { return h.cur.Load() }

// Failures counts loads that failed and kept the previous set.
func (h *Holder) Failures() uint64 { return h.failures.Load() }

// watchList returns the directories to watch and a test for the names
// in them that matter.
func (h *Holder) watchList() (dirs []string, relevant func(string) bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	abs := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return p
	}
	files := map[string]bool{}
	var patterns []string
	dirSet := map[string]bool{}
	for _, f := range h.tried {
		f = abs(f)
		files[f] = true
		dirSet[filepath.Dir(f)] = true
	}
	if s := h.cur.Load(); s != nil {
		for _, f := range s.files {
			f = abs(f)
			files[f] = true
			dirSet[filepath.Dir(f)] = true
		}
	}
	for _, pat := range h.cfg.Files {
		pat = abs(resolve(h.opts.BaseDir, pat))
		patterns = append(patterns, pat)
		if dir := filepath.Dir(pat); !strings.ContainsAny(dir, "*?[") {
			dirSet[dir] = true
		}
	}
	for _, lc := range h.cfg.Lists {
		f := abs(resolve(h.opts.BaseDir, lc.File))
		files[f] = true
		dirSet[filepath.Dir(f)] = true
	}
	for d := range dirSet {
		dirs = append(dirs, d)
	}
	slices.Sort(dirs)
	return dirs, func(name string) bool {
		name = abs(name)
		if files[name] || strings.HasPrefix(filepath.Base(name), "..") {
			// ".." names are how Kubernetes swaps mounted files.
			return true
		}
		for _, pat := range patterns {
			if ok, _ := filepath.Match(pat, name); ok && !isTestFile(name) {
				return true
			}
		}
		return false
	}
}

// watchDebounce gathers the several events of one save into one reload.
const watchDebounce = 250 * time.Millisecond

// Watch reloads h whenever a rule or list file changes, until ctx ends,
// and calls onReload (if not nil) with each reload's result. It watches
// directories, not files, because editors save by renaming a new file
// over the old one. It returns an error only if it cannot start.
func Watch(ctx context.Context, h *Holder, onReload func(error)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching rule files: %w", err)
	}
	defer w.Close()
	log := h.opts.Logger
	if log == nil {
		log = slog.Default()
	}
	watched := map[string]bool{}
	var relevant func(string) bool
	rewatch := func() {
		var dirs []string
		dirs, relevant = h.watchList()
		want := map[string]bool{}
		for _, d := range dirs {
			want[d] = true
			if watched[d] {
				continue
			}
			if _, err := os.Stat(d); err != nil {
				continue // watched once it exists and a reload mentions it
			}
			if err := w.Add(d); err != nil {
				log.Warn("cannot watch rule directory", "dir", d, "err", err)
				continue
			}
			watched[d] = true
			if h.watching != nil {
				h.watching(d)
			}
		}
		for d := range watched {
			if !want[d] {
				w.Remove(d)
				delete(watched, d)
			}
		}
	}
	rewatch()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Op == fsnotify.Chmod || !relevant(ev.Name) {
				continue
			}
			timer.Reset(watchDebounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			log.Warn("watching rule files", "err", err)
		case <-timer.C:
			err := h.Reload()
			if onReload != nil {
				onReload(err)
			}
			rewatch()
		case <-h.swapped:
			// A Load with a new config (say on SIGHUP) may name other files.
			rewatch()
		}
	}
}
