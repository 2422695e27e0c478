package config

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

type sample struct {
	Name   string           `yaml:"name"`
	TTL    span             `yaml:"ttl"`
	Wait   time.Duration    `yaml:"wait"`
	Inner  inner            `yaml:"inner"`
	List   []inner          `yaml:"list"`
	ByName map[string]inner `yaml:"by_name"`
	Shared `yaml:",inline"`
}

// span has an UnmarshalYAML of its own, as cache.Duration does.
type span int

func (s *span) UnmarshalYAML(n *yaml.Node) error {
	if n.Value != "1d" {
		return fmt.Errorf("line %d: %q: not a span", n.Line, n.Value)
	}
	*s = 1
	return nil
}

type inner struct {
	Port int `yaml:"port"`
}

type Shared struct {
	Servers []string `yaml:"servers"`
}

func TestDecodeReportsUnknownKeysWithPosition(t *testing.T) {
	var s sample
	_, err := Decode("mw.yaml", []byte("name: x\ninner:\n  prot: 1\nlist:\n  - port: 2\n  - bogus: 3\nby_name:\n  a: {porT: 1}\nservrs: []\n"), &s)
	if err == nil {
		t.Fatal("unknown keys accepted")
	}
	for _, want := range []string{
		`mw.yaml:3:3: unknown key "inner.prot" (did you mean "port"?)`,
		`mw.yaml:6:5: unknown key "list[1].bogus"`,
		`mw.yaml:8:7: unknown key "by_name.a.porT"`,
		`mw.yaml:9:1: unknown key "servrs" (did you mean "servers"?)`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestDecodeBadValueNamesFileLineColumnAndKey(t *testing.T) {
	for _, c := range []struct{ doc, want string }{
		{"name: x\nwait: soon\n", `mw.yaml:2:7: wait: "soon": want a duration such as 30s, 5m or 1h`},
		{"inner:\n  port: many\n", `mw.yaml:2:9: inner.port: "many": want a whole number`},
		{"list:\n  - port: 1\n  - port: [2]\n", `mw.yaml:3:11: list[1].port: want a whole number, not a list`},
		{"name: {a: 1}\n", `mw.yaml:1:7: name: want a single value`},
		{"ttl: 1y\n", `mw.yaml:1:6: ttl: "1y": not a span`},
		{"servers: one\n", `mw.yaml:1:10: servers: want a list`},
		{"by_name: [a]\n", `mw.yaml:1:10: by_name: want a mapping of keys`},
	} {
		var s sample
		_, err := Decode("mw.yaml", []byte(c.doc), &s)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%q: err = %v\nwant it to start with %s", c.doc, err, c.want)
		}
	}
}

func TestDecodeLayoutErrorsPointAtTheLineAtFault(t *testing.T) {
	for _, c := range []struct{ doc, want string }{
		// yaml.v3 alone says line 3 (where the block is) for both.
		{"inner:\n  port: 1\n  port2: 2\n bad: 3\n", "mw.yaml:4:2: "},
		{"name: x\ninner:\n\tport: 1\n", "mw.yaml:3:1: tab character"},
		{"name: [unclosed\n", "mw.yaml:1:1: "},
		{"name: x\nservers: [a,\n  b]\nwait: : 3\n", "mw.yaml:4:1: "},
	} {
		var s sample
		_, err := Decode("mw.yaml", []byte(c.doc), &s)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%q: err = %v\nwant it to start with %s", c.doc, err, c.want)
		}
	}
}

func TestDecodeGood(t *testing.T) {
	var s sample
	doc, err := Decode("mw.yaml", []byte("name: x\nwait: 2s\ninner: {port: 25}\nservers: [a, b]\n"), &s)
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "x" || s.Wait != 2*time.Second || s.Inner.Port != 25 || len(s.Servers) != 2 {
		t.Fatalf("decoded %+v", s)
	}
	if got := doc.Pos("inner.port").String(); got != "mw.yaml:3:9" {
		t.Fatalf("pos = %s", got)
	}
	if err := doc.Errorf("wait", "too long"); err.Error() != "mw.yaml:2:1: wait: too long" {
		t.Fatalf("Errorf = %v", err)
	}
	if _, err := Decode("empty.yaml", nil, &s); err != nil {
		t.Fatalf("an empty file must mean defaults: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("name: x\ninner: {port: 1}\nlist: [{port: 2}]\n"))
	f.Add([]byte("&a {port: 1}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s sample
		Decode("f.yaml", data, &s) // must not panic
	})
}
