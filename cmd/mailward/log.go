package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
)

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("%q: want debug, info, warn or error", s)
	}
	return l, nil
}

// logOutput is where the process logs go, in the format and at the level
// the config sets; a reload changes both for every logger made from it.
type logOutput struct {
	w     io.Writer
	level slog.LevelVar
	base  atomic.Pointer[slog.Handler]
}

// newLogger builds the process logger. It also becomes slog's default, so
// that anything logging through the standard log package ends up in the
// same structured stream.
func newLogger(c LogConfig, w io.Writer) (*slog.Logger, *logOutput) {
	out := &logOutput{w: w}
	out.set(c)
	l := slog.New(&switchHandler{out: out})
	slog.SetDefault(l)
	return l, out
}

// set switches format and level.
func (o *logOutput) set(c LogConfig) {
	level, _ := parseLevel(c.Level)
	o.level.Set(level)
	opts := &slog.HandlerOptions{Level: &o.level, ReplaceAttr: plainValues}
	var h slog.Handler = slog.NewTextHandler(o.w, opts)
	if c.Format == "json" {
		h = slog.NewJSONHandler(o.w, opts)
	}
	o.base.Store(&h)
}

// plainValues keeps every value of a log line readable as it stands, in
// text and JSON alike: a duration says its unit in its key and is a
// number of seconds ("timeout_seconds": 30), and an error of several
// lines (every problem of a config file) is a list of them.
func plainValues(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindDuration:
		return slog.Float64(a.Key+"_seconds", a.Value.Duration().Seconds())
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok {
			if msg := err.Error(); strings.Contains(msg, "\n") {
				return slog.Any(a.Key, strings.Split(strings.TrimSpace(msg), "\n"))
			}
		}
	case slog.KindString:
		if a.Key == "err" && strings.Contains(a.Value.String(), "\n") {
			return slog.Any(a.Key, strings.Split(strings.TrimSpace(a.Value.String()), "\n"))
		}
	}
	return a
}

// switchHandler writes through the current base handler, replaying the
// attributes and groups loggers were made With.
type switchHandler struct {
	out *logOutput
	ops []func(slog.Handler) slog.Handler
	// made is the base handler with ops applied, for the base it was made from.
	made atomic.Pointer[madeHandler]
}

type madeHandler struct {
	base *slog.Handler
	h    slog.Handler
}

func (s *switchHandler) handler() slog.Handler {
	base := s.out.base.Load()
	if m := s.made.Load(); m != nil && m.base == base {
		return m.h
	}
	h := *base
	for _, op := range s.ops {
		h = op(h)
	}
	s.made.Store(&madeHandler{base: base, h: h})
	return h
}

func (s *switchHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= s.out.level.Level()
}

func (s *switchHandler) Handle(ctx context.Context, r slog.Record) error {
	return s.handler().Handle(ctx, r)
}

func (s *switchHandler) with(op func(slog.Handler) slog.Handler) slog.Handler {
	return &switchHandler{out: s.out, ops: append(s.ops[:len(s.ops):len(s.ops)], op)}
}

func (s *switchHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return s.with(func(h slog.Handler) slog.Handler { return h.WithAttrs(as) })
}

func (s *switchHandler) WithGroup(name string) slog.Handler {
	return s.with(func(h slog.Handler) slog.Handler { return h.WithGroup(name) })
}
