package deliver

import (
	"strings"
	"testing"

	"github.com/mailward/mailward/internal/config"
)

// section is how the reports: section embeds Config.
type section struct {
	Reports struct {
		Interval string `yaml:"interval"`
		Config   `yaml:",inline"`
	} `yaml:"reports"`
}

func TestConfigErrorsNameFileLineColumn(t *testing.T) {
	const file = "mailward.yaml"
	data := `reports:
  interval: 24h
  relay: smtp.example.net
  from: "Reports <r@example.net>"
  starttls: always
  retries: -1
  retry_backoff: 1m
  max_per_hour: -5
`
	var s section
	doc, err := config.Decode(file, []byte(data), &s)
	if err != nil {
		t.Fatal(err)
	}
	errs := doc.Locate("reports", s.Reports.Validate())
	got := errs.Error()
	for _, want := range []string{
		`mailward.yaml:3:3: reports.relay: "smtp.example.net": want HOST:PORT`,
		`mailward.yaml:4:3: reports.from: "Reports <r@example.net>": want a bare address`,
		`mailward.yaml:5:3: reports.starttls: "always": want opportunistic, require or off`,
		`mailward.yaml:6:3: reports.retries: -1: must not be negative`,
		`mailward.yaml:8:3: reports.max_per_hour: -5: must not be negative`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("errors lack %q:\n%s", want, got)
		}
	}
	if len(errs) != 5 {
		t.Errorf("%d errors, want 5:\n%s", len(errs), got)
	}
}

func TestConfigUnknownKeyAndBadDuration(t *testing.T) {
	var s section
	_, err := config.Decode("m.yaml", []byte("reports:\n  relay: 127.0.0.1:25\n  retry_backof: 1m\n  timeout: soon\n"), &s)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`m.yaml:3:3: unknown key "reports.retry_backof"`, "m.yaml:4:12: reports.timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestConfigRequiresRelayAndFrom(t *testing.T) {
	err := Config{}.Validate()
	if err == nil || !strings.Contains(err.Error(), "relay: required") || !strings.Contains(err.Error(), "from: required") {
		t.Fatalf("Validate of an empty Config: %v", err)
	}
	good := DefaultConfig()
	good.Relay, good.From = "127.0.0.1:25", "dmarc@example.net"
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	login := good
	login.Username = "reports"
	if err := login.Validate(); err == nil || !strings.Contains(err.Error(), "password_file: required with username") {
		t.Errorf("username without password_file: %v", err)
	}
	login.PasswordFile, login.StartTLS = "/nonexistent", StartTLSOff
	if err := login.Validate(); err == nil || !strings.Contains(err.Error(), "starttls: off with username") {
		t.Errorf("username with starttls: off: %v", err)
	}
	if _, err := New(good, Deps{}); err == nil {
		t.Error("New without a resolver succeeded")
	}
}
