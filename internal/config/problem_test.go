package config

import (
	"errors"
	"strings"
	"testing"
)

func TestLocateNamesFileLineColumnAndKey(t *testing.T) {
	var s sample
	doc, err := Decode("mw.yaml", []byte("name: x\nlist:\n  - port: 1\n  - port: 99999\ninner: {}\n"), &s)
	if err != nil {
		t.Fatal(err)
	}
	var ps Problems
	ps.Add("list[1].port", "%d: want a port from 1 to 65535", 99999)
	ps.Add("inner.port", "required")
	ps.Add("absent.key", "required")
	other := errors.New("something else")
	got := doc.Locate("", errors.Join(ps, other)).Error()
	for _, want := range []string{
		"mw.yaml:4:5: list[1].port: 99999: want a port from 1 to 65535",
		"mw.yaml:5:1: inner.port: required", // unset: its section's position
		"mw.yaml: absent.key: required",
		"mw.yaml: top level: something else",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("lacks %q:\n%s", want, got)
		}
	}
	ps = Problems{{Key: "port", Msg: "bad"}}
	if got := doc.Locate("inner", ps).Error(); got != "mw.yaml:5:1: inner.port: bad" {
		t.Errorf("section problem = %q", got)
	}
	if doc.Locate("inner", nil) != nil || (Problems{}).Err() != nil {
		t.Error("no problems must be no error")
	}
}

func TestSuggest(t *testing.T) {
	vars := []string{"ip", "spf", "helo", "dkim", "dmarc", "rcpts", "from", "servers"}
	for word, want := range map[string]string{
		"sfp":    "spf", // a swap is one edit; "ip" is two
		"dmrac":  "dmarc",
		"rcpt":   "rcpts",
		"servrs": "servers",
		"hleo":   "helo",
		"xyz":    "",
		"ipp":    "ip",
		"spf":    "", // itself is no suggestion
	} {
		if got := Suggest(word, vars); got != want {
			t.Errorf("Suggest(%q) = %q, want %q", word, got, want)
		}
	}
	if d := Distance("abc", "acb"); d != 1 {
		t.Errorf("swap distance = %d", d)
	}
	if d := Distance("kitten", "sitting"); d != 3 {
		t.Errorf("kitten/sitting = %d", d)
	}
}
