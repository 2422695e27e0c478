// Package config reads YAML files strictly: every unknown key and every
// bad value is an error that names the file, line, column and key.
package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Pos is where a key stands in a file.
type Pos struct {
	File   string
	Line   int
	Column int
}

func (p Pos) String() string {
	if p.Line == 0 {
		return p.File
	}
	if p.Column == 0 {
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Column)
}

// Errors collects every problem found in a file, so one run shows them all.
type Errors []error

func (e Errors) Error() string {
	s := make([]string, len(e))
	for i, err := range e {
		s[i] = err.Error()
	}
	return strings.Join(s, "\n")
}

// Doc is a decoded file with the position of every key, for errors that
// are found after decoding (bad values, references).
type Doc struct {
	File string
	pos  map[string]Pos
}

// Pos returns the position of a dotted key path such as "milter.listen".
// A key the file does not set takes the position of its nearest section
// that it does ("smtp" for a missing "smtp.upstream"); failing all, the
// file alone.
func (d *Doc) Pos(path string) Pos {
	for path != "" {
		if p, ok := d.pos[path]; ok {
			return p
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return Pos{File: d.File}
}

// Has reports whether the file sets key path.
func (d *Doc) Has(path string) bool {
	_, ok := d.pos[path]
	return ok
}

// Errorf makes an error located at key path.
func (d *Doc) Errorf(path, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %s", d.Pos(path), orTop(path), fmt.Sprintf(format, args...))
}

// Load reads file strictly into out (a pointer to a struct with yaml tags).
func Load(file string, out any) (*Doc, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Decode(file, data, out)
}

// Decode is Load for data already read.
func Decode(file string, data []byte, out any) (*Doc, error) {
	doc := &Doc{File: file, pos: map[string]Pos{}}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, layoutError(file, data, err)
	}
	if len(root.Content) == 0 {
		return doc, nil // an empty file means all defaults
	}
	var errs Errors
	doc.walk(root.Content[0], reflect.TypeOf(out).Elem(), "", &errs)
	if len(errs) > 0 {
		return nil, errs
	}
	if err := root.Content[0].Decode(out); err != nil {
		// walk decodes every value on its own first, so this is rare.
		return nil, fmt.Errorf("%s: %s", file, yamlMessage(err))
	}
	return doc, nil
}

// maxLayoutScan bounds the re-parsing layoutError does; longer files get
// the parser's own line.
const maxLayoutScan = 5000

// layoutError places a YAML syntax error on the line that breaks the
// file. The parser reports where the enclosing block began (a mis-indented
// line 4 comes out as line 1), so find the longest run of leading lines
// that still parses: the line after it is the one at fault.
func layoutError(file string, data []byte, err error) error {
	msg := yamlMessage(err)
	if _, rest, ok := strings.Cut(msg, ": "); ok && lineNum.MatchString(msg) {
		msg = rest
	}
	lines := strings.SplitAfter(string(data), "\n")
	if len(lines) > maxLayoutScan {
		return fmt.Errorf("%s: %s", file, yamlMessage(err))
	}
	bad := len(lines)
	for n := len(lines) - 1; n >= 0; n-- {
		var probe yaml.Node
		if yaml.Unmarshal([]byte(strings.Join(lines[:n], "")), &probe) == nil {
			bad = n + 1
			break
		}
	}
	if bad > len(lines) {
		bad = len(lines)
	}
	line := strings.TrimRight(lines[bad-1], "\r\n")
	col := len(line) - len(strings.TrimLeft(line, " ")) + 1
	if strings.HasPrefix(line[col-1:], "\t") || strings.Contains(msg, "tab") {
		if i := strings.IndexByte(line, '\t'); i >= 0 {
			col = i + 1
			msg = "tab character: YAML indents with spaces only (" + msg + ")"
		}
	}
	return fmt.Errorf("%s: %s", Pos{file, bad, col}, msg)
}

var (
	lineRE  = regexp.MustCompile(`line (\d+): `)
	lineNum = regexp.MustCompile(`^\d+: `)
)

// yamlMessage rewrites yaml.v3's "line N: ..." into "N: ...".
func yamlMessage(err error) string {
	var te *yaml.TypeError
	msgs := []string{err.Error()}
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	for i, m := range msgs {
		m = strings.TrimPrefix(m, "yaml: ")
		if loc := lineRE.FindStringSubmatch(m); loc != nil {
			m = loc[1] + ": " + strings.Replace(m, loc[0], "", 1)
		}
		msgs[i] = m
	}
	return strings.Join(msgs, "; ")
}

var durationType = reflect.TypeOf(time.Duration(0))

// checkValue decodes one value on its own, so that a bad one is reported
// at its own line and column under its own key.
func (d *Doc) checkValue(n *yaml.Node, t reflect.Type, path string, errs *Errors) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	err := n.Decode(reflect.New(t).Interface())
	if err == nil {
		return
	}
	at := Pos{d.File, n.Line, n.Column}
	*errs = append(*errs, fmt.Errorf("%s: %s: %s", at, orTop(path), valueMessage(n, t, err)))
}

// valueMessage says what a value should have been, in the words of the
// config file rather than Go's type names.
func valueMessage(n *yaml.Node, t reflect.Type, err error) string {
	want := ""
	switch {
	case reflect.PointerTo(t).Implements(unmarshalerType) || t.Implements(unmarshalerType):
		// Its own UnmarshalYAML: its message already speaks of the value.
	case t == durationType:
		want = "a duration such as 30s, 5m or 1h"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		want = "a whole number"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		want = "a number"
	case t.Kind() == reflect.Bool:
		want = "true or false"
	case t.Kind() == reflect.String:
		want = "a single value (quote it if it holds special characters)"
	}
	if want == "" {
		msg := yamlMessage(err)
		if lineNum.MatchString(msg) {
			_, msg, _ = strings.Cut(msg, ": ")
		}
		return msg
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "want " + want + ", not a mapping"
	case yaml.SequenceNode:
		return "want " + want + ", not a list"
	}
	return fmt.Sprintf("%q: want %s", n.Value, want)
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

// walk checks every mapping key against the struct it decodes into.
func (d *Doc) walk(n *yaml.Node, t reflect.Type, path string, errs *Errors) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) || t.Implements(unmarshalerType) {
		d.checkValue(n, t, path, errs)
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
				return
			}
			*errs = append(*errs, fmt.Errorf("%s: %s: want a mapping of keys", Pos{d.File, n.Line, n.Column}, orTop(path)))
			return
		}
		fields := structFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			d.pos[p] = Pos{d.File, k.Line, k.Column}
			ft, ok := fields[k.Value]
			if !ok {
				*errs = append(*errs, fmt.Errorf("%s: unknown key %q%s", Pos{d.File, k.Line, k.Column}, p, suggest(k.Value, fields)))
				continue
			}
			d.walk(v, ft, p, errs)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			if n.Kind != yaml.ScalarNode || n.Tag != "!!null" {
				*errs = append(*errs, fmt.Errorf("%s: %s: want a mapping of keys", Pos{d.File, n.Line, n.Column}, orTop(path)))
			}
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			d.pos[p] = Pos{d.File, k.Line, k.Column}
			d.walk(v, t.Elem(), p, errs)
		}
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			if n.Kind != yaml.ScalarNode || n.Tag != "!!null" {
				*errs = append(*errs, fmt.Errorf("%s: %s: want a list", Pos{d.File, n.Line, n.Column}, orTop(path)))
			}
			return
		}
		for i, v := range n.Content {
			p := path + "[" + strconv.Itoa(i) + "]"
			d.pos[p] = Pos{d.File, v.Line, v.Column}
			d.walk(v, t.Elem(), p, errs)
		}
	case reflect.Interface:
		// Any value will do.
	default:
		d.checkValue(n, t, path, errs)
	}
}

func orTop(path string) string {
	if path == "" {
		return "top level"
	}
	return path
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// structFields maps yaml keys to field types, following inline fields.
func structFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range structFields(ft) {
					out[k] = v
				}
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

// suggest names a known key close to a mistyped one.
func suggest(key string, fields map[string]reflect.Type) string {
	if best := Suggest(key, keys(fields)); best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}
