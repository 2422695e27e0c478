package policy

import (
	"bufio"
	"runtime"
	"strings"
	"testing"
)

// A field of 100,000 continuation lines is joined once, not once per
// line: that was 41 s of CPU for 240,000 lines in check and rules test.
func TestReadHeaderLongFoldedField(t *testing.T) {
	msg := "X-Long: a\r\n" + strings.Repeat(" x\r\n", 100_000) + "Subject: s\r\n \tfolded\r\n\r\nbody\r\n"
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	hs, err := ReadHeader(bufio.NewReader(strings.NewReader(msg)))
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	// Joined by concatenation, this allocated some 20 GB.
	if n := after.TotalAlloc - before.TotalAlloc; n > 50*uint64(len(msg)) {
		t.Errorf("%d bytes allocated to read a %d-byte header", n, len(msg))
	}
	if len(hs) != 2 || hs[0].Value != " a"+strings.Repeat("\r\n x", 100_000) || hs[1].Value != " s\r\n \tfolded" {
		t.Errorf("fields read wrong: %d fields, %q", len(hs), hs[len(hs)-1])
	}
	// A header that ends on a continuation line, without a body.
	hs, err = ReadHeader(bufio.NewReader(strings.NewReader("A: 1\r\n 2")))
	if err != nil || len(hs) != 1 || hs[0].Value != " 1\r\n 2" {
		t.Errorf("header only: %q %v", hs, err)
	}
}
