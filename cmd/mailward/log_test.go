package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestLogValuesArePlain(t *testing.T) {
	var buf bytes.Buffer
	log, _ := newLogger(LogConfig{Format: "json", Level: "info"}, &buf)
	log.Info("x", "timeout", 1500*time.Millisecond, "err", errors.New("a.yaml:1:1: one\na.yaml:2:1: two\n"))
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line["timeout_seconds"] != 1.5 || line["timeout"] != nil {
		t.Errorf("duration: %s", buf.String())
	}
	if errs, ok := line["err"].([]any); !ok || len(errs) != 2 || errs[1] != "a.yaml:2:1: two" {
		t.Errorf("err of two lines: %s", buf.String())
	}
}
