// Command mailward-bench generates a mail corpus with known verdicts,
// serves its DNS zone, and drives a milter, SMTP server or Postfix policy
// service with it, reporting throughput, latency and correctness.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

const usage = `mailward-bench measures a mail filter with a corpus whose right verdicts are known.

Usage:
  mailward-bench gen --out DIR [--domains N] [--messages N] [--size BYTES] [--dns ADDR]
  mailward-bench dns --corpus DIR --listen ADDR
  mailward-bench milter --addr ADDR --corpus DIR [--concurrency N] [--messages N | --duration D] [--baseline] [--json]

gen writes messages, DKIM keys, SPF and DMARC records (zone.txt), and a
mailward.yaml and rules.yaml under which each message's verdict is known.
dns serves zone.txt on loopback. milter drives a milter the way Postfix
does; --baseline also runs, in the same process and run, a milter that
answers continue to everything, and prints the ratio.
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "mailward-bench: %v\n", err)
		}
		os.Exit(2)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "gen":
		return runGen(args[1:], stderr)
	case "dns":
		return runDNS(args[1:], stderr)
	case "milter":
		return runDriver(args[0], args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func runDriver(kind string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(kind, flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "`ADDR` of the server under test (host:port)")
	corpus := fs.String("corpus", "", "corpus `DIR` made by gen")
	conc := fs.Int("concurrency", 8, "parallel sessions")
	messages := fs.Int("messages", 0, "messages to send (default: the corpus size)")
	duration := fs.Duration("duration", 0, "run for this long instead of a message count")
	baseline := fs.Bool("baseline", false, "also run a no-op milter on the same driver and report the ratio")
	asJSON := fs.Bool("json", false, "print one JSON object instead of a table")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *corpus == "" || *conc < 1 {
		fs.Usage()
		return errors.New("--addr and --corpus are required")
	}
	_, msgs, err := loadCorpus(*corpus)
	if err != nil {
		return err
	}
	if *messages == 0 {
		*messages = len(msgs)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	opts := runOpts{Concurrency: *conc, Messages: *messages, Duration: *duration, Progress: stderr, Check: true}
	var results []*result
	if *baseline {
		baddr, stopNoop, err := startNoopMilter()
		if err != nil {
			return fmt.Errorf("starting baseline milter: %w", err)
		}
		bo := opts
		bo.Check = false
		results = append(results, drive(ctx, "baseline (no-op milter)", msgs, milterSender(baddr), bo))
		stopNoop()
	}
	r := drive(ctx, kind+" "+*addr, msgs, milterSender(*addr), opts)
	if *baseline && results[0].PerSecond > 0 {
		r.Ratio = r.PerSecond / results[0].PerSecond
	}
	results = append(results, r)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"runs": results})
	}
	printTable(stdout, results)
	if len(r.Wrong) > 0 || r.Errors > 0 {
		return fmt.Errorf("%d errors, %d wrong verdicts", r.Errors, len(r.Wrong))
	}
	return nil
}

func printTable(w io.Writer, results []*result) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "run\tmessages\terrors\tmsg/s\tratio\tp50 ms\tp90 ms\tp99 ms")
	for _, r := range results {
		l := r.Latency["message"]
		ratio := "-"
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f", r.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%s\t%.2f\t%.2f\t%.2f\n", r.Name, r.Messages, r.Errors, r.PerSecond, ratio, l.P50, l.P90, l.P99)
	}
	tw.Flush()
	last := results[len(results)-1]
	fmt.Fprintln(w, "\nlatency per stage (ms):")
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "stage\tp50\tp90\tp99")
	for _, st := range []string{"connect", "helo", "mail", "rcpt", "data", "eom"} {
		if l, ok := last.Latency[st]; ok {
			fmt.Fprintf(tw, "%s\t%.3f\t%.3f\t%.3f\n", st, l.P50, l.P90, l.P99)
		}
	}
	tw.Flush()
	if len(last.Total) > 0 {
		fmt.Fprintln(w, "\nverdicts right per class:")
		classes := make([]string, 0, len(last.Total))
		for c := range last.Total {
			classes = append(classes, c)
		}
		sort.Strings(classes)
		for _, c := range classes {
			fmt.Fprintf(w, "  %-18s %d/%d\n", c, last.Right[c], last.Total[c])
		}
	}
	if len(last.Wrong) > 0 {
		fmt.Fprintf(w, "\nwrong:\n  %s\n", strings.Join(last.Wrong, "\n  "))
	}
	_ = time.Second
}
