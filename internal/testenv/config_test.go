package testenv

import (
	"testing"

	"gopkg.in/yaml.v3"
)

func TestConfigMergesSections(t *testing.T) {
	got := Config(t, BaseConfig("127.0.0.1:5353"),
		"dns:\n  timeout: 1s\nrules:\n  files: [a.yaml]\n",
		"rules:\n  files: [b.yaml]\nhostname: other.example\n")
	var doc struct {
		Hostname string
		DNS      struct {
			Servers []string
			Timeout string
		}
		Rules struct{ Files []string }
	}
	if err := yaml.Unmarshal([]byte(got), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Hostname != "other.example" {
		t.Errorf("hostname = %q; a later fragment wins", doc.Hostname)
	}
	if len(doc.DNS.Servers) != 1 || doc.DNS.Servers[0] != "127.0.0.1:5353" || doc.DNS.Timeout != "1s" {
		t.Errorf("dns = %+v; want the base's servers and the added timeout", doc.DNS)
	}
	if len(doc.Rules.Files) != 1 || doc.Rules.Files[0] != "b.yaml" {
		t.Errorf("rules.files = %v; a later list replaces the earlier one", doc.Rules.Files)
	}
}
