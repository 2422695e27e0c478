package rules

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// fileSpec is one rule or test file, parsed but not compiled.
type fileSpec struct {
	src   *source
	rules []*yaml.Node
	lists []listDecl
	tests []*yaml.Node
}

// listDecl is a list declared in the config or in a rule file.
type listDecl struct {
	name string
	cfg  ListConfig
	path string // the file, resolved
	pos  Pos    // where it was declared
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseYAML reads a YAML document, turning every failure into a problem
// with the file's name and line.
func parseYAML(name string, data []byte, p *problems) (root *yaml.Node) {
	var doc yaml.Node
	var err error
	func() {
		// The YAML parser must never take the process down on a bad file.
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("yaml: cannot parse: %v", r)
			}
		}()
		dec := yaml.NewDecoder(bytes.NewReader(data))
		if err = dec.Decode(&doc); err == io.EOF {
			doc, err = yaml.Node{}, nil
			return
		}
		if err == nil {
			var extra yaml.Node
			if dec.Decode(&extra) != io.EOF {
				err = fmt.Errorf("yaml: line %d: a file holds one YAML document; split the others into files of their own", max(extra.Line, 1))
			}
		}
	}()
	if err != nil {
		msg := err.Error()
		pos := Pos{File: name}
		if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
			pos.Line, _ = strconv.Atoi(m[1])
			msg = m[2]
		} else {
			msg = strings.TrimPrefix(msg, "yaml: ")
		}
		p.errorf(pos, "%s", msg)
		return nil
	}
	if len(doc.Content) == 0 {
		return &yaml.Node{Kind: yaml.MappingNode}
	}
	return doc.Content[0]
}

// parseFile reads the top level of a rule or test file.
func parseFile(name string, data []byte, p *problems) *fileSpec {
	fs := &fileSpec{src: newSource(name, data)}
	root := parseYAML(name, data, p)
	if root == nil {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		p.errorf(fs.src.pos(root), "a rule file is a mapping with rules: (and optionally lists: and tests:)")
		return nil
	}
	// Keys starting with x- are free for anchors that rules share.
	top := &yaml.Node{Kind: yaml.MappingNode}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if !strings.HasPrefix(root.Content[i].Value, "x-") {
			top.Content = append(top.Content, root.Content[i], root.Content[i+1])
		}
	}
	fields, _ := mappingFields(fs.src, top, []string{"rules", "lists", "tests"}, "top-level", p)
	if n := fields["rules"]; n != nil && !isNull(n) {
		if n.Kind != yaml.SequenceNode {
			p.errorf(fs.src.pos(n), "rules: is a list of rules, each starting with '- name:'")
		} else {
			fs.rules = n.Content
		}
	}
	if n := fields["tests"]; n != nil && !isNull(n) {
		if n.Kind != yaml.SequenceNode {
			p.errorf(fs.src.pos(n), "tests: is a list of test cases, each starting with '- name:'")
		} else {
			fs.tests = n.Content
		}
	}
	if n := fields["lists"]; n != nil && !isNull(n) {
		fs.lists = parseListDecls(fs.src, n, filepath.Dir(name), p)
	}
	return fs
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// parseListDecls reads a file's lists: mapping. Paths are relative to dir.
func parseListDecls(src *source, n *yaml.Node, dir string, p *problems) []listDecl {
	if n.Kind != yaml.MappingNode {
		p.errorf(src.pos(n), "lists: maps names to {file: ..., type: ip|domain|address|regexp}")
		return nil
	}
	var out []listDecl
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if v.Kind != yaml.MappingNode {
			p.errorf(src.pos(v), "list %q: want {file: ..., type: ip|domain|address|regexp}", k.Value)
			continue
		}
		f, ok := mappingFields(src, v, []string{"file", "type"}, "list", p)
		if !ok {
			continue
		}
		var lc ListConfig
		if f["file"] != nil {
			lc.File = f["file"].Value
		}
		if f["type"] != nil {
			lc.Type = f["type"].Value
		}
		out = append(out, listDecl{name: k.Value, cfg: lc, path: resolve(dir, lc.File), pos: src.pos(k)})
	}
	return out
}

func resolve(dir, path string) string {
	if path == "" || filepath.IsAbs(path) || dir == "" {
		return path
	}
	return filepath.Join(dir, path)
}

// isTestFile reports whether a file holds tests only, by its name.
func isTestFile(path string) bool {
	base := filepath.Base(path)
	return strings.HasSuffix(base, "_test.yaml") || strings.HasSuffix(base, "_test.yml")
}

func isYAML(path string) bool {
	ext := filepath.Ext(path)
	return ext == ".yaml" || ext == ".yml"
}

// expandConfig turns the config's files: patterns into rule files, in
// order, each once. A pattern that names one file must find it; a glob
// that matches nothing is a warning, one whose directory is missing an
// error.
func expandConfig(patterns []string, base string, p *problems) []string {
	var out []string
	seen := map[string]bool{}
	for _, pat := range patterns {
		pat = resolve(base, pat)
		var matches []string
		if strings.ContainsAny(pat, "*?[") {
			// A missing directory is a typo or a deployment gone wrong,
			// not a set of rules that happens to be empty.
			if dir := globDir(pat); dir != "" {
				if st, err := os.Stat(dir); err != nil || !st.IsDir() {
					p.errorf(Pos{File: pat}, "rule files: directory %s does not exist", dir)
					continue
				}
			}
			m, err := filepath.Glob(pat)
			if err != nil {
				p.errorf(Pos{File: pat}, "bad pattern: %v", err)
				continue
			}
			if len(m) == 0 {
				p.warnf(Pos{File: pat}, "no rule files match this pattern")
			}
			matches = m
		} else {
			if _, err := os.Stat(pat); err != nil {
				p.errorf(Pos{File: pat}, "rule file: %v", err)
				continue
			}
			matches = []string{pat}
		}
		for _, m := range matches {
			if isTestFile(m) || seen[m] {
				continue
			}
			seen[m] = true
			out = append(out, m)
		}
	}
	return out
}

// globDir is the directory part of a pattern before its first wildcard.
func globDir(pat string) string {
	var dir string
	for _, el := range strings.Split(filepath.Dir(pat), string(filepath.Separator)) {
		if strings.ContainsAny(el, "*?[") {
			break
		}
		dir += el + string(filepath.Separator)
	}
	return filepath.Clean(dir)
}

// expandPaths turns command-line paths (files, directories, globs) into
// rule files and test files. A rule file brings its NAME_test.yaml along,
// a test file its NAME.yaml.
func expandPaths(paths []string, p *problems) (ruleFiles, testFiles []string) {
	seen := map[string]bool{}
	add := func(f string) {
		f = filepath.Clean(f)
		if seen[f] {
			return
		}
		seen[f] = true
		if isTestFile(f) {
			testFiles = append(testFiles, f)
		} else {
			ruleFiles = append(ruleFiles, f)
		}
	}
	addPair := func(f string) {
		add(f)
		ext := filepath.Ext(f)
		stem := strings.TrimSuffix(f, ext)
		var other string
		if isTestFile(f) {
			other = strings.TrimSuffix(stem, "_test") + ext
		} else {
			other = stem + "_test" + ext
		}
		if st, err := os.Stat(other); err == nil && !st.IsDir() {
			add(other)
		}
	}
	for _, path := range paths {
		if strings.ContainsAny(path, "*?[") {
			m, err := filepath.Glob(path)
			if err != nil {
				p.errorf(Pos{File: path}, "bad pattern: %v", err)
			}
			if len(m) == 0 && err == nil {
				p.errorf(Pos{File: path}, "no files match")
			}
			for _, f := range m {
				addPair(f)
			}
			continue
		}
		st, err := os.Stat(path)
		if err != nil {
			p.errorf(Pos{File: path}, "%v", err)
			continue
		}
		if !st.IsDir() {
			addPair(path)
			continue
		}
		entries, err := os.ReadDir(path)
		if err != nil {
			p.errorf(Pos{File: path}, "%v", err)
			continue
		}
		var names []string
		for _, e := range entries {
			if !e.IsDir() && isYAML(e.Name()) {
				names = append(names, filepath.Join(path, e.Name()))
			}
		}
		slices.Sort(names)
		for _, f := range names {
			add(f)
		}
	}
	return ruleFiles, testFiles
}
