package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
)

const dmarcUsage = `Usage: mailward dmarc COMMAND [flags]

Commands:
  report --preview [--domain D] [--config FILE]   print the aggregate reports held now and where they would go
  report --send [--domain D] [--config FILE]      send the reports that are due now

Run 'mailward dmarc COMMAND --help' for a command's flags.
`

func runDMARCCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, dmarcUsage)
		return 2
	}
	switch args[0] {
	case "report":
		return runDMARCReport(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, dmarcUsage)
		return 0
	}
	fmt.Fprintf(stderr, "mailward dmarc: unknown command %q\n\n%s", args[0], dmarcUsage)
	return 2
}

func runDMARCReport(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dmarc report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "config `FILE`; its reports: section says where the aggregates are and how reports are sent")
	preview := fs.Bool("preview", false, "print each report held, the running period's too, with its destinations; send nothing")
	send := fs.Bool("send", false, "send now the reports of ended periods not sent yet (as serve would), under the fleet's lock")
	domain := fs.String("domain", "", "only the report of policy `DOMAIN`")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: mailward dmarc report --preview|--send [--domain D] [--config FILE]\n\n"+
			"--preview prints the RFC 9990 XML of every report the store holds (the running period's\n"+
			"counts so far included) and, for each rua URI, where it would go or why not.\n"+
			"--send sends the reports that are due: periods that ended and were not reported, e.g.\n"+
			"while mailward was stopped. The running period is reported when it ends, never twice.\n"+
			"With a file store, --send refuses while mailward serve holds the file: it sends them itself.\n\nFlags:")
		fs.PrintDefaults()
	}
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if *preview == *send {
		fmt.Fprintln(stderr, "mailward dmarc report: give one of --preview and --send")
		return 2
	}
	cfg, err := loadConfig(*file)
	if err != nil {
		fmt.Fprintf(stderr, "mailward: %v\n", err)
		return 1
	}
	if !cfg.Reports.Enabled {
		fmt.Fprintf(stderr, "mailward: %s: reports.enabled is not set: there are no reports\n", cfg.file)
		return 1
	}
	// --send logs every destination, sent or refused; a preview says it
	// in its own output.
	level := slog.LevelInfo
	if *preview {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	mode := reportsSend
	if *preview {
		mode = reportsPreview
	}
	rs, err := openReports(cfg, mode, log, nil)
	if err != nil {
		fmt.Fprintf(stderr, "mailward: %v\n", err)
		return 1
	}
	defer rs.close()
	rs.reporter.Domain = *domain
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()
	if *preview {
		return previewReports(ctx, rs, *domain, stdout, stderr)
	}
	n, err := rs.reporter.Due(ctx, time.Now())
	r := rs.reporter
	fmt.Fprintf(stdout, "reports due: %d built, %d suppressed, %d not delivered to every destination, %d kept to try again\n",
		r.Built.Load(), r.Suppressed.Load(), r.Failed.Load(), r.Deferred.Load())
	if err != nil {
		fmt.Fprintf(stderr, "mailward: %v\n", err)
		return 1
	}
	if f := r.Failed.Load() + r.Deferred.Load(); f > 0 {
		fmt.Fprintf(stderr, "mailward: %d of %d report(s) did not reach every destination (see the log lines above)\n", f, n)
		return 1
	}
	return 0
}

// previewReports prints each report held: a comment block with its
// period and destinations, then its XML.
func previewReports(ctx context.Context, rs *reportsState, domain string, stdout, stderr io.Writer) int {
	ds, err := rs.store.Current(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "mailward: %v\n", err)
		return 1
	}
	now := time.Now()
	shown := 0
	for _, d := range ds {
		if domain != "" && !strings.EqualFold(strings.TrimSuffix(domain, "."), d.Policy.Domain) {
			continue
		}
		shown++
		end := rs.store.End(d.Begin)
		state := "ended, due now"
		if end.After(now) {
			state = "running: the counts so far; reported when it ends"
		}
		fmt.Fprintf(stdout, "# policy domain %s, period %s to %s (%s)\n", d.Policy.Domain, d.Begin.Format(time.RFC3339), end.Format(time.RFC3339), state)
		if why := rs.reporter.Why(d); why != "" {
			fmt.Fprintf(stdout, "# not sent: %s\n", why)
		}
		rep, err := rs.reporter.Report(d)
		if err != nil {
			fmt.Fprintf(stdout, "# not built: %v\n\n", err)
			continue
		}
		dests, err := rs.sender.Plan(ctx, rep)
		if err != nil {
			fmt.Fprintf(stdout, "# destinations: %v\n", err)
		}
		if len(rep.RUA) == 0 {
			fmt.Fprintln(stdout, "# destinations: none (no rua=)")
		}
		for _, dst := range dests {
			switch {
			case dst.Accepted:
				fmt.Fprintf(stdout, "# to %s (%s)\n", dst.Address, dst.URI)
			case dst.Temporary:
				fmt.Fprintf(stdout, "# undecided %s: %s\n", dst.URI, dst.Reason)
			default:
				fmt.Fprintf(stdout, "# not to %s: %s\n", dst.URI, dst.Reason)
			}
		}
		stdout.Write(rep.XML)
		fmt.Fprintln(stdout)
	}
	if shown == 0 {
		what := "no report aggregates are held"
		if domain != "" {
			what = "no report aggregate is held for " + domain
		}
		fmt.Fprintf(stdout, "# %s\n", what)
	}
	return 0
}
