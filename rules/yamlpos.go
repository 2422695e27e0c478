package rules

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/mailward/mailward/internal/config"
)

// source is one file's text, kept to point errors inside YAML scalars at
// the right line and column.
type source struct {
	name  string
	lines [][]rune
}

func newSource(name string, data []byte) *source {
	text := strings.ReplaceAll(string(data), "\r\n", "\n")
	rows := strings.Split(text, "\n")
	lines := make([][]rune, len(rows))
	for i, r := range rows {
		lines[i] = []rune(r)
	}
	return &source{name: name, lines: lines}
}

func (s *source) pos(n *yaml.Node) Pos {
	if n == nil {
		return Pos{File: s.name}
	}
	return Pos{File: s.name, Line: n.Line, Col: n.Column}
}

// scalarMap maps rune offsets in a scalar's value back to the file.
type scalarMap struct {
	start Pos
	at    []Pos // at[i] is where the value's i-th rune was written
}

// pos returns where the off-th rune of the value stands in the file.
// Offsets it cannot map precisely fall back to the scalar's start.
func (m scalarMap) pos(off int) Pos {
	switch {
	case off >= 0 && off < len(m.at):
		return m.at[off]
	case off > 0 && off == len(m.at):
		p := m.at[off-1]
		p.Col++
		return p
	}
	return m.start
}

type mrune struct {
	r         rune
	line, col int
}

// scalar re-reads a scalar node's text from the file and pairs each rune
// of its value with its position. Styles and escapes it does not follow
// exactly are caught by comparing with the parsed value: from the first
// difference on, positions fall back to the scalar's start.
func (s *source) scalar(n *yaml.Node) scalarMap {
	m := scalarMap{start: s.pos(n)}
	if n == nil || n.Kind != yaml.ScalarNode || n.Line < 1 || n.Line > len(s.lines) {
		return m
	}
	var raw []mrune
	switch {
	case n.Style&yaml.LiteralStyle != 0:
		raw = s.block(n.Line, false)
	case n.Style&yaml.FoldedStyle != 0:
		raw = s.block(n.Line, true)
	case n.Style&yaml.DoubleQuotedStyle != 0:
		raw = s.flow(n.Line, n.Column, '"')
	case n.Style&yaml.SingleQuotedStyle != 0:
		raw = s.flow(n.Line, n.Column, '\'')
	default:
		raw = s.flow(n.Line, n.Column, 0)
	}
	value := []rune(n.Value)
	for i, r := range value {
		if i >= len(raw) || raw[i].r != r {
			break
		}
		m.at = append(m.at, Pos{File: s.name, Line: raw[i].line, Col: raw[i].col})
	}
	return m
}

func isBlank(row []rune) bool {
	for _, r := range row {
		if r != ' ' && r != '\t' {
			return false
		}
	}
	return true
}

func indentOf(row []rune) int {
	i := 0
	for i < len(row) && row[i] == ' ' {
		i++
	}
	return i
}

// flow renders a plain or quoted scalar starting at line, col (from 1).
func (s *source) flow(line, col int, quote rune) []mrune {
	var out []mrune
	l, c := line-1, col-1
	if quote != 0 {
		c++
	}
	emit := func(r rune, l, c int) { out = append(out, mrune{r, l + 1, c + 1}) }
	for l < len(s.lines) {
		row := s.lines[l]
		rowStart := len(out)
		escapedBreak := false
	scan:
		for c < len(row) {
			r := row[c]
			switch quote {
			case '"':
				if r == '"' {
					return out
				}
				if r == '\\' {
					if c+1 >= len(row) {
						escapedBreak = true
						break scan
					}
					e := row[c+1]
					if n := hexDigits(e); n > 0 {
						if c+2+n <= len(row) {
							if v, err := strconv.ParseUint(string(row[c+2:c+2+n]), 16, 32); err == nil {
								emit(rune(v), l, c)
							}
						}
						c += 2 + n
						continue
					}
					emit(unescape(e), l, c)
					c += 2
					continue
				}
			case '\'':
				if r == '\'' {
					if c+1 < len(row) && row[c+1] == '\'' {
						emit('\'', l, c)
						c += 2
						continue
					}
					return out
				}
			default:
				if r == '#' && c > 0 && (row[c-1] == ' ' || row[c-1] == '\t') {
					break scan
				}
			}
			emit(r, l, c)
			c++
		}
		if !escapedBreak {
			for len(out) > rowStart && (out[len(out)-1].r == ' ' || out[len(out)-1].r == '\t') {
				out = out[:len(out)-1]
			}
		}
		endCol := len(row)
		l++
		empties := 0
		for l < len(s.lines) && isBlank(s.lines[l]) {
			empties++
			l++
		}
		if l >= len(s.lines) {
			break
		}
		switch {
		case escapedBreak:
		case empties == 0:
			emit(' ', l-1, endCol)
		default:
			for i := 0; i < empties; i++ {
				emit('\n', l-empties+i, 0)
			}
		}
		c = indentOf(s.lines[l])
		for c < len(s.lines[l]) && s.lines[l][c] == '\t' {
			c++
		}
	}
	return out
}

// hexDigits is how many hex digits follow a \x, \u or \U escape.
func hexDigits(e rune) int {
	switch e {
	case 'x':
		return 2
	case 'u':
		return 4
	case 'U':
		return 8
	}
	return 0
}

func unescape(e rune) rune {
	switch e {
	case '0':
		return 0
	case 'a':
		return '\a'
	case 'b':
		return '\b'
	case 't':
		return '\t'
	case 'n':
		return '\n'
	case 'v':
		return '\v'
	case 'f':
		return '\f'
	case 'r':
		return '\r'
	case 'e':
		return 0x1b
	case 'N':
		return 0x85
	case '_':
		return 0xa0
	case 'L':
		return 0x2028
	case 'P':
		return 0x2029
	}
	return e
}

// block renders a literal (|) or folded (>) block scalar whose indicator
// is on line (from 1).
func (s *source) block(line int, folded bool) []mrune {
	var out []mrune
	emit := func(r rune, l, c int) { out = append(out, mrune{r, l + 1, c + 1}) }
	indent := -1
	prevNormal := false
	started := false
	empties := 0
	for l := line; l < len(s.lines); l++ {
		row := s.lines[l]
		if isBlank(row) {
			empties++
			continue
		}
		ind := indentOf(row)
		if indent < 0 {
			indent = ind
		}
		if ind < indent {
			break
		}
		normal := ind == indent
		if started {
			switch {
			case !folded:
				for i := 0; i <= empties; i++ {
					emit('\n', l-1-empties+i, len(s.lines[l-1-empties+i]))
				}
			case prevNormal && normal && empties == 0:
				emit(' ', l-1, len(s.lines[l-1]))
			case prevNormal && normal:
				for i := 0; i < empties; i++ {
					emit('\n', l-empties+i, 0)
				}
			default:
				for i := 0; i <= empties; i++ {
					emit('\n', l-1-empties+i, len(s.lines[l-1-empties+i]))
				}
			}
		}
		for c := indent; c < len(row); c++ {
			emit(row[c], l, c)
		}
		started, prevNormal, empties = true, normal, 0
	}
	return out
}

// mappingFields collects a mapping's keys, reporting duplicate and
// unknown ones. ok is false when there were problems.
func mappingFields(src *source, n *yaml.Node, known []string, what string, p *problems) (map[string]*yaml.Node, bool) {
	return mergedFields(src, n, known, what, p, 0)
}

func mergedFields(src *source, n *yaml.Node, known []string, what string, p *problems, depth int) (map[string]*yaml.Node, bool) {
	if depth > 8 {
		p.errorf(src.pos(n), "<< merges nest too deep")
		return nil, false
	}
	fields := map[string]*yaml.Node{}
	ok := true
	var merged []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolveAlias(n.Content[i+1])
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			// <<: *defaults merges a shared mapping; keys written here win.
			if v.Kind == yaml.SequenceNode {
				merged = append(merged, v.Content...)
			} else {
				merged = append(merged, v)
			}
			continue
		}
		switch {
		case k.Kind != yaml.ScalarNode:
			p.errorf(src.pos(k), "%s keys are plain words", what)
			ok = false
		case fields[k.Value] != nil:
			p.errorf(src.pos(k), "%s key %q given twice", what, k.Value)
			ok = false
		case !slices.Contains(known, k.Value):
			msg := fmt.Sprintf("unknown %s key %q", what, k.Value)
			if s := config.Suggest(k.Value, known); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			p.errorf(src.pos(k), "%s", msg)
			ok = false
		default:
			fields[k.Value] = v
		}
	}
	for _, m := range merged {
		m = resolveAlias(m)
		if m.Kind != yaml.MappingNode {
			p.errorf(src.pos(m), "<< merges a mapping")
			ok = false
			continue
		}
		mf, mok := mergedFields(src, m, known, what, p, depth+1)
		ok = ok && mok
		for k, v := range mf {
			if fields[k] == nil {
				fields[k] = v
			}
		}
	}
	return fields, ok
}

// resolveAlias follows *alias to its anchored node.
func resolveAlias(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < 16; i++ {
		n = n.Alias
	}
	return n
}
