// Placeholder until rules_cmd.go lands: delete this file when adding rules_cmd.go.
package main

import (
	"fmt"
	"io"
)

func runRulesCommand(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "mailward rules: not available in this build")
	return 2
}
