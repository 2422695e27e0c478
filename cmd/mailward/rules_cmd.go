package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/rules"
)

const rulesUsage = `Usage: mailward rules COMMAND [--config FILE] [PATH...]

Commands:
  lint PATH...   check rule files: syntax, types, stages, lists, rules that can never match
  test PATH...   run the tests written next to the rules (--coverage: what no test exercises)
  replay --journal FILES... --rules PATH...
                 play journaled transactions through rules and print the verdicts
  diff --journal FILES... --old PATH... --new PATH...
                 what a rule change does to journaled transactions

PATH is a rule file, a directory of them or a glob. Without PATH, the
rule files of --config are used. Run 'mailward rules COMMAND --help' for
a command's flags.
`

// runRulesCommand runs `mailward rules lint|test`. It returns the exit
// code: 0 fine (warnings included), 1 errors or failed tests, 2 misuse.
func runRulesCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, rulesUsage)
		return 2
	}
	switch args[0] {
	case "lint":
		return runRulesLint(args[1:], stdout, stderr)
	case "test":
		return runRulesTest(args[1:], stdout, stderr)
	case "replay":
		return runRulesReplay(args[1:], stdout, stderr)
	case "diff":
		return runRulesDiff(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, rulesUsage)
		return 0
	}
	fmt.Fprintf(stderr, "mailward rules: unknown command %q\n\n%s", args[0], rulesUsage)
	return 2
}

// rulesFlags are what lint and test share: the config and the paths.
type rulesFlags struct {
	cfg   *Config // nil without --config
	paths []string
}

// parseRulesFlags parses a subcommand's flags. done is true when the
// command must exit with code.
func parseRulesFlags(name, help string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (rf rulesFlags, code int, done bool) {
	fs := flag.NewFlagSet("rules "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "the mailward config `FILE`: its lists (and, for test, its thresholds and DMARC settings)")
	if extra != nil {
		extra(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: mailward rules %s [--config FILE] [PATH...]\n\n%s\nFlags:\n", name, help)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return rf, 0, true
		}
		return rf, 2, true
	}
	rf.paths = fs.Args()
	if *file != "" {
		cfg, err := loadConfig(*file)
		if err != nil {
			fmt.Fprintf(stderr, "mailward rules %s: %v\n", name, err)
			return rf, 1, true
		}
		rf.cfg = cfg
		if len(rf.paths) == 0 {
			rf.paths = cfg.rulePaths()
		}
	}
	if len(rf.paths) == 0 {
		fmt.Fprintf(stderr, "mailward rules %s: name rule files, directories or globs, or give --config\n", name)
		fs.Usage()
		return rf, 2, true
	}
	return rf, 0, false
}

// options are the rules' options for lint and test: ratelimit() counts
// in a private memory cache, so rules using it compile and tests run
// without touching the shared cache.
func (rf rulesFlags) options() (rules.Options, func()) {
	mem := cache.NewMemory(cache.Config{}, cache.Options{})
	opts := rules.Options{BaseDir: ".", Functions: []rules.Func{rules.RateLimitFunc(mem, nil)}}
	if rf.cfg != nil {
		opts.BaseDir = rf.cfg.baseDir()
		opts.DomainZones = rf.cfg.domainZones()
	}
	return opts, func() { mem.Close() }
}

func (rf rulesFlags) lists() map[string]rules.ListConfig {
	if rf.cfg == nil {
		return nil
	}
	return rf.cfg.rulesConfig().Lists
}

func runRulesLint(args []string, stdout, stderr io.Writer) int {
	rf, code, done := parseRulesFlags("lint", `Checks rule files and the tests beside them. Each problem prints as
file:line:col: message. Errors exit 1; otherwise it prints SUCCESS
(and any warnings) and exits 0.
With --config, lists a rule names must be declared, and unused ones are reported.
`, args, stderr, nil)
	if done {
		return code
	}
	opts, closeOpts := rf.options()
	defer closeOpts()
	ps := rules.Lint(rf.paths, rules.LintOptions{Lists: rf.lists(), Config: rf.cfg != nil, Options: opts})
	for _, p := range ps {
		fmt.Fprintln(stdout, p.String())
	}
	errs, warns := len(ps.Errors()), len(ps.Warnings())
	switch {
	case errs > 0:
		fmt.Fprintf(stderr, "%s, %s\n", plural(errs, "error"), plural(warns, "warning"))
		return 1
	case warns > 0:
		fmt.Fprintf(stdout, "SUCCESS: no errors, %s\n", plural(warns, "warning"))
	default:
		// Silence would leave a script's reader wondering whether it ran.
		fmt.Fprintln(stdout, "SUCCESS: no errors, no warnings")
	}
	return 0
}

func runRulesTest(args []string, stdout, stderr io.Writer) int {
	var verbose, coverage *bool
	var journals pathList
	rf, code, done := parseRulesFlags("test", `Runs every test written in the rule files (tests:) and in the NAME_test.yaml
files beside them, through the same engine serve uses, with the check results
each test assumes. With --config, the engine uses its thresholds and DMARC settings.
`, args, stderr, func(fs *flag.FlagSet) {
		verbose = fs.Bool("v", false, "show what every test matched, not only the failures")
		coverage = fs.Bool("coverage", false, "list the rules no test exercises (and, with --journal, that no journaled transaction matched)")
		fs.Var(&journals, "journal", "with --coverage, a journal `FILE`, directory or glob to replay; repeat for more")
	})
	if done {
		return code
	}
	opts, closeOpts := rf.options()
	defer closeOpts()
	to := rules.TestOptions{Lists: rf.lists(), Options: opts}
	if rf.cfg != nil {
		to.Settings = rf.cfg.settings()
	}
	results, err := rules.RunTests(context.Background(), rf.paths, to)
	if err != nil {
		fmt.Fprintln(stdout, err)
		fmt.Fprintln(stderr, "rules or tests did not load")
		return 1
	}
	failed := 0
	for _, r := range results {
		status := "PASS"
		if !r.Passed {
			status = "FAIL"
			failed++
		}
		fmt.Fprintf(stdout, "%s  %s  %s\n", status, r.Pos, r.Name)
		for _, d := range r.Diffs {
			fmt.Fprintf(stdout, "      %s\n", d)
		}
		if *verbose || !r.Passed {
			matched := "none"
			if len(r.Matched) > 0 {
				matched = strings.Join(r.Matched, ", ")
			}
			fmt.Fprintf(stdout, "      got %s at %s, score %g, matched: %s\n", r.Action, r.Stage, r.Score, matched)
		}
	}
	fmt.Fprintf(stdout, "%d passed, %d failed\n", len(results)-failed, failed)
	if len(results) == 0 {
		fmt.Fprintln(stderr, "no tests found: write tests: in the rule files or NAME_test.yaml beside them")
	}
	if *coverage {
		if code := printCoverage(stdout, stderr, rf, to, results, journals); code != 0 {
			return code
		}
	}
	if failed > 0 {
		return 1
	}
	return 0
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
