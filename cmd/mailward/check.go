package main

import (
	"fmt"
	"io"
)

func runCheck(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "mailward check: not available in this build")
	return 2
}
