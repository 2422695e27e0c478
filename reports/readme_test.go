package reports

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestConfigKeysDocumented: every key of the reports: section is in the
// README's config reference and in examples/mailward.yaml.
func TestConfigKeysDocumented(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("../examples/mailward.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ct := reflect.TypeOf(Config{})
	for i := range ct.NumField() {
		key, opts, _ := strings.Cut(ct.Field(i).Tag.Get("yaml"), ",")
		if opts == "inline" {
			continue // deliver's own test holds its keys
		}
		if !strings.Contains(string(readme), "`reports."+key+"`") {
			t.Errorf("README config reference lacks `reports.%s`", key)
		}
		if !strings.Contains(string(example), "\n  "+key+":") {
			t.Errorf("examples/mailward.yaml lacks reports.%s", key)
		}
	}
	for _, want := range []string{"## DMARC aggregate reports", "RFC 9991", "mailward dmarc report --preview"} {
		if !strings.Contains(string(readme), want) {
			t.Errorf("README lacks %q", want)
		}
	}
}
