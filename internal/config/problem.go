package config

import (
	"errors"
	"fmt"
	"strings"
)

// Problem is one bad setting found by a section's Validate. Key is
// relative to the section ("redis.addrs[1]" in cache:); the loader adds
// the section, the file, line and column.
type Problem struct {
	Key string
	Msg string
}

func (p Problem) Error() string { return p.Key + ": " + p.Msg }

// Problems is every bad setting of a section, so one run shows them all.
type Problems []Problem

// Add records a problem at key.
func (ps *Problems) Add(key, format string, args ...any) {
	*ps = append(*ps, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// Err is ps as an error, or nil when there are none.
func (ps Problems) Err() error {
	if len(ps) == 0 {
		return nil
	}
	return ps
}

func (ps Problems) Error() string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.Error()
	}
	return strings.Join(s, "\n")
}

// Under puts every key of ps under section: Problems{{"port", ...}}.Under("milter")
// has key "milter.port".
func (ps Problems) Under(section string) Problems {
	out := make(Problems, len(ps))
	for i, p := range ps {
		out[i] = Problem{Key: join(section, p.Key), Msg: p.Msg}
	}
	return out
}

// Locate turns the problems a section's Validate returned into errors
// that name file, line, column and key. err may be Problems, a Problem,
// or errors joined from them; any other error is pinned to section.
func (d *Doc) Locate(section string, err error) Errors {
	if err == nil {
		return nil
	}
	var out Errors
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, d.Locate(section, e)...)
		}
		return out
	}
	var ps Problems
	var p Problem
	switch {
	case errors.As(err, &ps):
		for _, p := range ps {
			out = append(out, d.Errorf(join(section, p.Key), "%s", p.Msg))
		}
	case errors.As(err, &p):
		out = append(out, d.Errorf(join(section, p.Key), "%s", p.Msg))
	default:
		out = append(out, d.Errorf(section, "%v", err))
	}
	return out
}
