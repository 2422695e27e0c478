package deliver

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestConfigKeysDocumented: every key of Config is in the README's
// config reference, as reports.KEY.
func TestConfigKeysDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	ct := reflect.TypeOf(Config{})
	for i := range ct.NumField() {
		key, _, _ := strings.Cut(ct.Field(i).Tag.Get("yaml"), ",")
		if key == "" || key == "-" {
			t.Fatalf("field %s has no yaml key", ct.Field(i).Name)
		}
		if !strings.Contains(string(readme), "`reports."+key+"`") {
			t.Errorf("README config reference lacks `reports.%s`", key)
		}
	}
}
