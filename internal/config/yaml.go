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

// Pos returns the position of a dotted key path such as "milter.listen";
// a missing key gives the file alone.
func (d *Doc) Pos(path string) Pos {
	if p, ok := d.pos[path]; ok {
		return p
	}
	return Pos{File: d.File}
}

// Errorf makes an error located at key path.
func (d *Doc) Errorf(path, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %s", d.Pos(path), path, fmt.Sprintf(format, args...))
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
		return nil, fmt.Errorf("%s: %s", file, yamlMessage(err))
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
		return nil, fmt.Errorf("%s: %s", file, yamlMessage(err))
	}
	return doc, nil
}

var lineRE = regexp.MustCompile(`line (\d+): `)

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
			return // yaml.v3 reports the type error with its line
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			d.pos[p] = Pos{d.File, k.Line, k.Column}
			d.walk(v, t.Elem(), p, errs)
		}
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, v := range n.Content {
			p := path + "[" + strconv.Itoa(i) + "]"
			d.pos[p] = Pos{d.File, v.Line, v.Column}
			d.walk(v, t.Elem(), p, errs)
		}
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
	best, bestD := "", 3
	for k := range fields {
		if d := distance(key, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
