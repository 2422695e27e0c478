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
  mailward-bench noop-milter [--listen ADDR]
  mailward-bench milter --addr ADDR --corpus DIR [--concurrency N] [--messages N | --duration D] [--offset N] [--baseline] [--json]
  mailward-bench smtp   --addr ADDR --corpus DIR [--concurrency N] [--messages N | --duration D] [--offset N] [--xclient] [--sink ADDR [--account [--authserv-id ID]]] [--baseline] [--json]
  mailward-bench policy --addr ADDR --corpus DIR [--concurrency N] [--messages N | --duration D] [--offset N] [--baseline] [--json]

gen writes messages, DKIM keys, SPF and DMARC records (zone.txt), and a
mailward.yaml and rules.yaml under which each message's verdict is known.
dns serves zone.txt on loopback.

milter drives a milter the way Postfix does; --baseline also runs, in the
same process and run, a milter that answers continue to everything, and
prints the ratio.

smtp drives an SMTP server the way a sending MTA does, one session per
message: EHLO, with --xclient an XCLIENT naming the corpus's client when
the server offers it (mailward's proxy offers it to smtp.trusted_networks
only), MAIL, RCPT, DATA. --sink ADDR starts a recording SMTP server on
ADDR for the server under test to relay to (mailward: smtp.upstream);
quarantine (the X-Mailward-Quarantine header) and forged-header removal
are read from what arrives there. Without --sink only accept/reject and
refused recipients are checked. --baseline runs a server that accepts
everything and relays it unchanged to the sink (or drops it, without one).
--account (with --sink) is for fault drills: verdicts are not judged, but
every message must arrive at the sink exactly once after a 250, or be
refused (or go unanswered) and never arrive; --authserv-id ID also
requires every arrival to carry ID's Authentication-Results. The summary
counts what was sent, accepted, refused by code and arrived, and the exit
status says whether the counts add up.

policy drives a Postfix policy service the way Postfix does: one
connection per worker, an RCPT request per recipient, then
END-OF-MESSAGE. A policy service never sees the message, so verdicts are
counted only for the classes that need no content (pass, spf_only,
multi_rcpt). --baseline runs a policy service that answers DUNNO.

Each message is sent once per run while --messages is at most the corpus
size; beyond it messages repeat and the server's verdict cache may answer
them (the summary says so). --offset N starts at the Nth message, so that
runs against the same server send messages it has not seen.
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
	case "milter", "smtp", "policy":
		return runDriver(args[0], args[1:], stdout, stderr)
	case "noop-milter":
		return runNoopMilter(args[1:], stderr)
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
	offset := fs.Int("offset", 0, "start at the corpus's `N`th message, so that consecutive runs send different messages")
	duration := fs.Duration("duration", 0, "run for this long instead of a message count")
	baseline := fs.Bool("baseline", false, "also run a no-op server on the same driver and report the ratio")
	asJSON := fs.Bool("json", false, "print one JSON object instead of a table")
	var xclient, account *bool
	var sinkAddr, quarantineHeader, authservID *string
	var sinkWait *time.Duration
	if kind == "smtp" {
		xclient = fs.Bool("xclient", false, "send XCLIENT with the corpus's client address when the server offers it")
		sinkAddr = fs.String("sink", "", "start a recording SMTP server on `ADDR` for the server under test to relay to")
		sinkWait = fs.Duration("sink-wait", 10*time.Second, "how long an accepted message may take to reach the sink")
		quarantineHeader = fs.String("quarantine-header", "X-Mailward-Quarantine", "header that marks a quarantined message at the sink")
		account = fs.Bool("account", false, "count every message instead of judging verdicts: each must arrive at the sink exactly once after a 250, or be refused and never arrive (needs --sink)")
		authservID = fs.String("authserv-id", "", "with --account: every arrival must carry an Authentication-Results field with this `ID`")
	}
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
	accountMode := account != nil && *account
	if accountMode && (*sinkAddr == "" || *baseline) {
		return errors.New("--account needs --sink and cannot be used with --baseline")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *offset < 0 {
		return errors.New("--offset must not be negative")
	}
	opts := runOpts{Concurrency: *conc, Messages: *messages, Offset: *offset, Duration: *duration, Progress: stderr, Check: true}
	// Each kind gives the sender for an address, its baseline server and
	// what its correctness counts leave out.
	var (
		newSender    func(addr string) (sender, func())
		startNoop    func() (string, func(), error)
		baselineName string
		note         string
		finish       = func(*result) {}
	)
	switch kind {
	case "milter":
		newSender = func(a string) (sender, func()) { return milterSender(a), func() {} }
		startNoop, baselineName = startNoopMilter, "baseline (no-op milter)"
	case "smtp":
		so := smtpOpts{XClient: *xclient, SinkWait: *sinkWait, QuarantineHeader: *quarantineHeader, Warn: stderr}
		relayTo := ""
		if *sinkAddr != "" {
			sk, err := startSink(*sinkAddr)
			if err != nil {
				return err
			}
			defer sk.Close()
			so.Sink, relayTo = sk, sk.Addr()
			baselineName = "baseline (SMTP relay to the sink)"
		}
		if accountMode {
			l := &ledger{sends: map[string]outcome{}}
			sk := so.Sink
			// The ledger reads the sink once the run is over: no send waits
			// for its own arrival.
			so.Sink = nil
			opts.Check = false
			newSender = func(a string) (sender, func()) {
				return accountSender(smtpSender(a, so), l), func() {}
			}
			finish = func(r *result) {
				l.settle(ctx, sk, *sinkWait)
				r.Account = l.account(sk, *authservID)
			}
			note = "--account: verdicts not judged; every message counted at the sink"
		} else if *sinkAddr != "" {
			newSender = func(a string) (sender, func()) { return smtpSender(a, so), func() {} }
		} else {
			opts.Judge = envelopeVerdict(func(*Message) bool { return true })
			note = "no --sink: quarantine shows as accept and forged-header removal is not checked"
			baselineName = "baseline (SMTP server that drops mail)"
			newSender = func(a string) (sender, func()) { return smtpSender(a, so), func() {} }
		}
		startNoop = func() (string, func(), error) { return startNoopSMTP(relayTo) }
	case "policy":
		newSender = policySender
		startNoop, baselineName = startNoopPolicy, "baseline (policy service answering DUNNO)"
		opts.Judge = envelopeVerdict(func(m *Message) bool { return envelopeClasses[m.Class] })
		note = "a policy service sees no content: verdicts counted for pass, spf_only and multi_rcpt only"
	}
	repeats := *duration > 0 || *messages > len(msgs)
	if repeats {
		fmt.Fprintf(stderr, "note: more messages than the corpus's %d may be sent: repeated messages may be verdict-cache hits\n", len(msgs))
	}
	var results []*result
	if *baseline {
		baddr, stopNoop, err := startNoop()
		if err != nil {
			return fmt.Errorf("starting the baseline server: %w", err)
		}
		bo := opts
		bo.Check = false
		send, closeSend := newSender(baddr)
		results = append(results, drive(ctx, baselineName, msgs, send, bo))
		closeSend()
		stopNoop()
	}
	send, closeSend := newSender(*addr)
	r := drive(ctx, kind+" "+*addr, msgs, send, opts)
	closeSend()
	finish(r)
	r.Note = note
	r.Repeats = repeats
	r.Offset = *offset
	if *baseline && results[0].PerSecond > 0 {
		r.Ratio = r.PerSecond / results[0].PerSecond
	}
	results = append(results, r)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"runs": results}); err != nil {
			return err
		}
	} else {
		printTable(stdout, results)
	}
	// The exit status tells a script whether every verdict was right, or
	// with --account whether the counts add up.
	if r.Account != nil {
		if !r.Account.ok() {
			return errors.New("the counts do not add up: mail lost, duplicated, delivered after a refusal or unchecked")
		}
		return nil
	}
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
	if last.Note != "" {
		fmt.Fprintf(w, "\nnote: %s\n", last.Note)
	}
	if len(last.Wrong) > 0 {
		fmt.Fprintf(w, "\nwrong:\n  %s\n", strings.Join(last.Wrong, "\n  "))
	}
	if last.Account != nil {
		printAccounting(w, last.Account)
	}
}

// envelopeVerdict judges only what a front without the relayed message
// can know: the action, with quarantine seen as accept, and the refused
// recipients; messages for which counts says no are driven but not counted.
func envelopeVerdict(counts func(*Message) bool) func(*Message, outcome) (string, bool) {
	return func(m *Message, out outcome) (string, bool) {
		if !counts(m) {
			return "", false
		}
		want := m.Expect
		if want == "quarantine" && out.Action != "quarantine" {
			want = "accept"
		}
		if out.Action != want {
			return fmt.Sprintf("got %s, want %s", out.Action, want), true
		}
		if fmt.Sprint(out.RejectedRcpt) != fmt.Sprint(orEmpty(m.RejectRcpts)) {
			return fmt.Sprintf("refused recipients %v, want %v", out.RejectedRcpt, m.RejectRcpts), true
		}
		return "", true
	}
}
