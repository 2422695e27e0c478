package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/mailward/mailward/journal"
	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/rules"
)

// pathList is a flag that may be given several times, each time with
// one or more values (spreadFlags).
type pathList []string

func (p *pathList) String() string     { return strings.Join(*p, " ") }
func (p *pathList) Set(s string) error { *p = append(*p, s); return nil }

// spreadFlags lets the flags named in multi take several values, as a
// shell glob gives them: "--journal a b --rules c" becomes "--journal a
// --journal b --rules c". The commands that use it take no positional
// arguments, so nothing is ambiguous.
func spreadFlags(args []string, multi ...string) []string {
	var out []string
	cur := ""
	for _, a := range args {
		if strings.HasPrefix(a, "-") && a != "-" {
			cur = ""
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") {
				for _, m := range multi {
					if name == m {
						cur = a
					}
				}
				if cur != "" {
					continue
				}
			}
			out = append(out, a)
			continue
		}
		if cur != "" {
			out = append(out, cur, a)
			continue
		}
		out = append(out, a)
	}
	return out
}

// rulePaths are the rule files the config names, resolved from its directory.
func (c *Config) rulePaths() []string {
	var out []string
	for _, f := range c.Rules.Files {
		if !filepath.IsAbs(f) {
			f = filepath.Join(c.baseDir(), f)
		}
		out = append(out, f)
	}
	return out
}

// replayGCPercent is the garbage collector's setting while replaying.
const replayGCPercent = 400

// journalRun is what replay and diff share: the config, the journal
// files and the rules' options.
type journalRun struct {
	rf       rulesFlags
	files    []string
	settings policy.Settings
	opts     rules.Options
	close    func()
	stderr   io.Writer
	name     string
}

func newJournalRun(name string, cfgFile string, journals []string, stderr io.Writer) (*journalRun, error) {
	jr := &journalRun{name: name, stderr: stderr, settings: policy.Settings{Hostname: "mailward.replay"}}
	if cfgFile != "" {
		cfg, err := loadConfig(cfgFile)
		if err != nil {
			return nil, err
		}
		jr.rf.cfg = cfg
		jr.settings = cfg.settings()
	}
	if len(journals) == 0 {
		return nil, errors.New("name the journal files with --journal FILE... (a directory or a glob also does)")
	}
	files, err := journal.Expand(journals)
	if err != nil {
		return nil, err
	}
	jr.files = files
	jr.opts, jr.close = jr.rf.options()
	// A batch of short-lived transactions: collecting less often saves a
	// quarter of the CPU, and the heap stays small.
	gc := debug.SetGCPercent(replayGCPercent)
	closeOpts := jr.close
	jr.close = func() { closeOpts(); debug.SetGCPercent(gc) }
	jr.opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return jr, nil
}

// load compiles the rule files among paths.
func (jr *journalRun) load(flagName string, paths []string) (*rules.Set, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("no rules: give %s PATH... or --config", flagName)
	}
	set, err := rules.LoadPaths(paths, jr.rf.lists(), jr.opts)
	if err != nil {
		return nil, fmt.Errorf("%s:\n%w", flagName, err)
	}
	return set, nil
}

// report prints the unreadable lines on stderr and returns their count.
func (jr *journalRun) report(problems []journal.Problem) int {
	for i, p := range problems {
		if i == 10 {
			fmt.Fprintf(jr.stderr, "mailward rules %s: %d more unreadable lines\n", jr.name, len(problems)-10)
			break
		}
		fmt.Fprintf(jr.stderr, "mailward rules %s: skipped %v\n", jr.name, p)
	}
	return len(problems)
}

func parseJournalFlags(fs *flag.FlagSet, args []string, stderr io.Writer, usage, help string, multi ...string) (code int, done bool) {
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s\n\n%s\nFlags:\n", usage, help)
		fs.PrintDefaults()
	}
	if err := fs.Parse(spreadFlags(args, multi...)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return 2, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected argument %q: journal files follow --journal, rule paths --rules, --old or --new\n", fs.Arg(0))
		return 2, true
	}
	return 0, false
}

func runRulesReplay(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules replay", flag.ContinueOnError)
	cfgFile := fs.String("config", "", "the mailward config `FILE`: its lists, thresholds and DMARC settings, and its rules when --rules is not given")
	var journals, paths pathList
	fs.Var(&journals, "journal", "journal `FILES`: files, a directory of them or a glob")
	fs.Var(&paths, "rules", "rule `PATH`s: files, directories or globs (default: the rules of --config)")
	asJSON := fs.Bool("json", false, "print one JSON object per transaction")
	changed := fs.Bool("changed", false, "print only the transactions whose verdict differs from the journal's")
	if code, done := parseJournalFlags(fs, args, stderr, "mailward rules replay --journal FILES... [--rules PATH...] [--config FILE]",
		`Plays every journaled transaction through the rules, stage by stage with the check
results the journal recorded (no DNS, no network), and prints each verdict beside
the one the journal recorded.
`, "journal", "rules"); done {
		return code
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "mailward rules replay: %v\n", err)
		return 1
	}
	jr, err := newJournalRun("replay", *cfgFile, journals, stderr)
	if err != nil {
		return fail(err)
	}
	defer jr.close()
	if len(paths) == 0 && jr.rf.cfg != nil {
		paths = jr.rf.cfg.rulePaths()
	}
	set, err := jr.load("--rules", paths)
	if err != nil {
		return fail(err)
	}
	rp := &journal.Replayer{Settings: jr.settings, Rules: set, Log: jr.opts.Logger}
	enc := json.NewEncoder(stdout)
	enc.SetEscapeHTML(false)
	ctx := context.Background()
	n, differ := 0, 0
	start := time.Now()
	problems, err := rp.Run(ctx, jr.files, func(l *journal.Line, out *policy.Outcome) error {
		n++
		r := journal.Report(l, out)
		if r.Changed {
			differ++
		} else if *changed {
			return nil
		}
		if *asJSON {
			return enc.Encode(r)
		}
		_, err = fmt.Fprintln(stdout, r.String())
		return err
	})
	bad := jr.report(problems)
	if err != nil {
		return fail(err)
	}
	d := time.Since(start)
	fmt.Fprintf(stderr, "%s replayed in %s (%.0f/s); %d verdicts differ from the journal's", plural(n, "transaction"), d.Round(time.Millisecond), float64(n)/d.Seconds(), differ)
	if bad > 0 {
		fmt.Fprintf(stderr, "; %s skipped", plural(bad, "unreadable line"))
	}
	fmt.Fprintln(stderr)
	return 0
}

func runRulesDiff(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules diff", flag.ContinueOnError)
	cfgFile := fs.String("config", "", "the mailward config `FILE`: its lists, thresholds and DMARC settings; its rules are --old when that is not given")
	var journals, oldPaths, newPaths pathList
	fs.Var(&journals, "journal", "journal `FILES`: files, a directory of them or a glob")
	fs.Var(&oldPaths, "old", "the rules in force, `PATH`s: files, directories or globs (default: the rules of --config)")
	fs.Var(&newPaths, "new", "the changed rules, `PATH`s (required)")
	asJSON := fs.Bool("json", false, "print the diff as one JSON object")
	examples := fs.Int("examples", 5, "example transactions to show for each kind of change, `N`")
	maxChanges := fs.Int("max-changes", -1, "exit 1 when any kind of verdict change (e.g. accept→reject) counts more than `N` transactions; -1: never")
	if code, done := parseJournalFlags(fs, args, stderr, "mailward rules diff --journal FILES... --new PATH... [--old PATH... | --config FILE]",
		`Replays every journaled transaction through the old and the new rules and shows
what changes: verdicts (accept→reject, reject→accept, ...), rules that newly match
or no longer match, with counts and the first examples of each, and the rules and
values that decided them. Monitor-mode rules count as the verdict they would give.
Exit 1 when a change exceeds --max-changes, so a rules repository's CI can gate merges.
`, "journal", "old", "new"); done {
		return code
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "mailward rules diff: %v\n", err)
		return 1
	}
	jr, err := newJournalRun("diff", *cfgFile, journals, stderr)
	if err != nil {
		return fail(err)
	}
	defer jr.close()
	if len(oldPaths) == 0 && jr.rf.cfg != nil {
		oldPaths = jr.rf.cfg.rulePaths()
	}
	oldSet, err := jr.load("--old", oldPaths)
	if err != nil {
		return fail(err)
	}
	if len(newPaths) == 0 {
		fmt.Fprintln(stderr, "mailward rules diff: give the changed rules with --new PATH...")
		return 2
	}
	newSet, err := jr.load("--new", newPaths)
	if err != nil {
		return fail(err)
	}
	d := &journal.Differ{Settings: jr.settings, Old: oldSet, New: newSet, Examples: max(*examples, 0), Log: jr.opts.Logger}
	ctx := context.Background()
	problems, err := d.Run(ctx, jr.files)
	bad := jr.report(problems)
	if err != nil {
		return fail(err)
	}
	res := d.Result()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		enc.Encode(res)
	} else {
		res.Print(stdout)
	}
	if bad > 0 {
		fmt.Fprintf(stderr, "mailward rules diff: %s skipped\n", plural(bad, "unreadable line"))
	}
	if *maxChanges >= 0 {
		for _, vc := range res.Verdicts {
			if vc.Count > *maxChanges {
				fmt.Fprintf(stderr, "mailward rules diff: %s → %s in %s, more than --max-changes %d\n", vc.From, vc.To, plural(vc.Count, "transaction"), *maxChanges)
				return 1
			}
		}
	}
	return 0
}

// printCoverage lists the rules no test matched and, given journals,
// the rules no journaled transaction matched.
func printCoverage(stdout, stderr io.Writer, rf rulesFlags, to rules.TestOptions, results []rules.TestResult, journals []string) int {
	set, err := rules.LoadPaths(rf.paths, to.Lists, to.Options)
	if err != nil {
		fmt.Fprintln(stdout, err)
		return 1
	}
	tested := map[string]bool{}
	for _, r := range results {
		for _, m := range r.Matched {
			tested[m] = true
		}
	}
	all := set.Rules()
	var untested []string
	for _, ri := range all {
		if !tested[ri.Name] {
			untested = append(untested, fmt.Sprintf("%s (%s)", ri.Name, ri.Pos))
		}
	}
	fmt.Fprintf(stdout, "\ncoverage: %d of %d rules matched in a test\n", len(all)-len(untested), len(all))
	for _, u := range untested {
		fmt.Fprintf(stdout, "  no test matches %s\n", u)
	}
	if len(journals) == 0 {
		return 0
	}
	files, err := journal.Expand(journals)
	if err != nil {
		fmt.Fprintf(stderr, "mailward rules test: %v\n", err)
		return 1
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	rp := &journal.Replayer{Settings: to.Settings, Rules: set, Log: quiet}
	var tally journal.Tally
	ctx := context.Background()
	problems, err := rp.Run(ctx, files, tally.Add)
	if err != nil {
		fmt.Fprintf(stderr, "mailward rules test: %v\n", err)
		return 1
	}
	if len(problems) > 0 {
		fmt.Fprintf(stderr, "mailward rules test: %s of the journal skipped (first: %v)\n", plural(len(problems), "unreadable line"), problems[0])
	}
	period := "no transactions"
	if tally.Transactions > 0 {
		period = tally.From.Format(time.RFC3339) + " to " + tally.To.Format(time.RFC3339)
	}
	var unmatched []string
	for _, ri := range all {
		if tally.Matched[ri.Name] == 0 {
			unmatched = append(unmatched, fmt.Sprintf("%s (%s)", ri.Name, ri.Pos))
		}
	}
	fmt.Fprintf(stdout, "journal: %d of %d rules matched in %s (%s)\n", len(all)-len(unmatched), len(all), plural(tally.Transactions, "transaction"), period)
	for _, u := range unmatched {
		fmt.Fprintf(stdout, "  no transaction matches %s\n", u)
	}
	return 0
}
