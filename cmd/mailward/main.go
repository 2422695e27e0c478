// Command mailward is a policy milter and filtering SMTP proxy.
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `mailward filters mail for an MTA: as a milter, an SMTP proxy or a Postfix policy service.

Usage:
  mailward serve [--config FILE] [--check-config]   run the filter
  mailward check [flags] [MESSAGE.eml | -]          run every stage on one message and show what happens
  mailward rules lint PATH...                       check rule files
  mailward rules test PATH...                       run the tests written next to rules
  mailward rules replay --journal FILES --rules PATH...
                                                    replay journaled transactions through rules
  mailward rules diff --journal FILES --new PATH... what a rule change does to journaled transactions
  mailward dkim keygen|testkey                      make signing keys, check their DNS records
  mailward dmarc report --preview|--send [--domain D]
                                                    show or send DMARC aggregate reports
  mailward version                                  print version, commit and Go version

Run 'mailward COMMAND --help' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return runServe(args[1:], stdout, stderr)
	case "check":
		return runCheck(args[1:], stdout, stderr)
	case "rules":
		return runRulesCommand(args[1:], stdout, stderr)
	case "dkim":
		return runDKIMCommand(args[1:], stdout, stderr)
	case "dmarc":
		return runDMARCCommand(args[1:], stdout, stderr)
	case "version", "--version":
		return runVersion(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "mailward: unknown command %q\n\n%s", args[0], usage)
	return 2
}
