package config

import (
	"strings"
	"testing"
	"time"
)

type sample struct {
	Name   string           `yaml:"name"`
	Wait   time.Duration    `yaml:"wait"`
	Inner  inner            `yaml:"inner"`
	List   []inner          `yaml:"list"`
	ByName map[string]inner `yaml:"by_name"`
	Shared `yaml:",inline"`
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

func TestDecodeBadValueNamesFileAndLine(t *testing.T) {
	var s sample
	_, err := Decode("mw.yaml", []byte("name: x\nwait: soon\n"), &s)
	if err == nil || !strings.HasPrefix(err.Error(), "mw.yaml: 2: ") {
		t.Fatalf("err = %v; want it to start with the file and line", err)
	}
	_, err = Decode("mw.yaml", []byte("name: [unclosed\n"), &s)
	if err == nil || !strings.HasPrefix(err.Error(), "mw.yaml: ") {
		t.Fatalf("syntax error = %v", err)
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
