package rules

import (
	"fmt"
	"strings"
)

// Pos is a place in a rule, list or test file. Line and Col count from 1;
// Col counts characters, as editors do. Zero means unknown.
type Pos struct {
	File string
	Line int
	Col  int
}

func (p Pos) String() string {
	switch {
	case p.Line == 0:
		return p.File
	case p.Col == 0:
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// Problem is one error or warning found in a file.
type Problem struct {
	Pos     Pos
	Msg     string
	Warning bool
}

// String formats the problem as "file:line:col: message", the form editors jump to.
func (p Problem) String() string {
	if p.Warning {
		return p.Pos.String() + ": warning: " + p.Msg
	}
	return p.Pos.String() + ": " + p.Msg
}

// Problems is every problem found in one load, so one run shows them all.
// As an error it holds errors only; warnings never fail a load.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Errors returns the problems that are not warnings.
func (ps Problems) Errors() Problems {
	var out Problems
	for _, p := range ps {
		if !p.Warning {
			out = append(out, p)
		}
	}
	return out
}

// Warnings returns the problems that are warnings.
func (ps Problems) Warnings() Problems {
	var out Problems
	for _, p := range ps {
		if p.Warning {
			out = append(out, p)
		}
	}
	return out
}

// err returns the errors among ps as an error, or nil.
func (ps Problems) err() error {
	if errs := ps.Errors(); len(errs) > 0 {
		return errs
	}
	return nil
}

// problems collects problems as a load goes on.
type problems struct {
	list Problems
}

func (p *problems) errorf(pos Pos, format string, args ...any) {
	p.list = append(p.list, Problem{Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

func (p *problems) warnf(pos Pos, format string, args ...any) {
	p.list = append(p.list, Problem{Pos: pos, Msg: fmt.Sprintf(format, args...), Warning: true})
}

func (p *problems) hasErrors() bool {
	for _, q := range p.list {
		if !q.Warning {
			return true
		}
	}
	return false
}
