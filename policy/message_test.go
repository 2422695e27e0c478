package policy

import (
	"bufio"
	"strings"
	"testing"
)

func TestReadHeaderSkipsMboxFromLine(t *testing.T) {
	msg := "From alice@shop.example Thu Dec  3 07:00:00 2026\nFrom: alice@shop.example\nSubject: hi\n\nbody\n"
	hs, err := ReadHeader(bufio.NewReader(strings.NewReader(msg)))
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 2 || hs[0].Name != "From" || hs[1].Name != "Subject" {
		t.Fatalf("header = %+v", hs)
	}
	// Past the first line it is what it always was: not a header field.
	if _, err := ReadHeader(bufio.NewReader(strings.NewReader("Subject: x\nFrom alice@shop.example\n\n"))); err == nil {
		t.Fatal("a From_ line inside the header was accepted")
	}
}
