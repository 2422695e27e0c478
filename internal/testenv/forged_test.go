package testenv

import (
	"fmt"
	"strings"
	"testing"
)

// recorder is a testing.TB that keeps the errors instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestCheckResultsCatchesEachForgery(t *testing.T) {
	const id = "mw.test.example"
	ours := "Authentication-Results: " + id + "; spf=pass smtp.mailfrom=sender.example"
	clean := strings.Join([]string{ours, OtherResults, "From: a@sender.example"}, "\r\n")
	r := &recorder{TB: t}
	CheckResults(r, clean, id, true)
	if len(r.errs) != 0 {
		t.Fatalf("a clean header failed: %v", r.errs)
	}
	for _, forged := range ForgedResults(id) {
		r := &recorder{TB: t}
		CheckResults(r, clean+"\r\n"+forged, id, true)
		if len(r.errs) != 1 {
			t.Errorf("%q delivered: %d errors, want 1", forged, len(r.errs))
		}
	}
	r = &recorder{TB: t}
	CheckResults(r, "From: a@sender.example", id, true)
	if len(r.errs) != 2 {
		t.Errorf("neither ours nor the other server's: %d errors, want 2", len(r.errs))
	}
}
