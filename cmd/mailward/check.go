package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/rules"
)

type rcptFlags []string

func (r *rcptFlags) String() string     { return strings.Join(*r, ",") }
func (r *rcptFlags) Set(s string) error { *r = append(*r, s); return nil }

func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "config `FILE` (default: built-in defaults)")
	dnsServers := fs.String("dns", "", "DNS servers to ask instead of the config's, `ADDR[,ADDR]`")
	ipFlag := fs.String("ip", "", "the client's `IP` address (required)")
	clientName := fs.String("client-name", "", "the client's host `NAME` as the MTA resolved it (default: none, as for a client without reverse DNS)")
	helo := fs.String("helo", "", "the HELO/EHLO `NAME` (default: the client's address literal)")
	authUser := fs.String("auth-user", "", "the SMTP AUTH `USER` the client logged in as (default: none)")
	useTLS := fs.Bool("tls", false, "the client spoke TLS")
	from := fs.String("from", "", "the envelope sender `ADDR` (default: the null sender)")
	var rcpts rcptFlags
	fs.Var(&rcpts, "rcpt", "an envelope recipient `ADDR`; repeat for more (default: postmaster@hostname)")
	asJSON := fs.Bool("json", false, "print one JSON object per message")
	explain := fs.Bool("explain", false, "show every rule with its stage, whether it matched, and the values it read")
	exitCode := fs.Bool("exit-code", false, "exit with the verdict: 0 accept, 4 tempfail, 5 reject, 6 discard, 7 quarantine; with several messages the highest")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: mailward check [flags] [MESSAGE.eml ... | -]\n\nRuns each message through every stage exactly as serve would, and prints what happened.\nWithout a message (or with -) it reads standard input. Flags may follow the messages.\nExit status: 0, or the verdict with --exit-code; 2 for bad input.\n\nFlags:")
		fs.PrintDefaults()
	}
	names, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "mailward check: "+format+"\n", a...)
		return 2
	}
	ip, err := netip.ParseAddr(*ipFlag)
	if err != nil {
		return fail("--ip: want an IP address, got %q", *ipFlag)
	}
	ip = ip.Unmap()
	if len(names) == 0 {
		names = []string{"-"}
	}
	if slices.Contains(names, "-") && len(names) > 1 {
		return fail("standard input (-) is a message of its own: give it alone")
	}
	for _, name := range names {
		if name != "-" {
			if _, err := os.Stat(name); err != nil {
				return fail("%v", err)
			}
		}
	}

	cfg, err := loadConfig(*file)
	if err != nil {
		return fail("%v", err)
	}
	if *dnsServers != "" {
		cfg.DNS.Servers = strings.Split(*dnsServers, ",")
	}
	if len(rcpts) == 0 {
		rcpts = rcptFlags{"postmaster@" + cfg.Hostname}
	}
	if *helo == "" {
		*helo = "[" + ip.String() + "]"
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// A private memory cache: a diagnostic run must neither read stale
	// verdicts from nor count rate limits in a fleet's shared Redis.
	c := cache.NewMemory(cache.DefaultConfig(), cache.Options{Logger: log})
	defer c.Close()
	p, err := buildParts(context.Background(), cfg, c, log)
	if err != nil {
		return fail("%v", err)
	}
	defer p.close()
	// One run need not wait out a dead DNS server at every stage.
	p.resolver.SkipSilentServers()
	var explained []rules.Explanation
	var rs policy.Rules
	if set := p.rules.Current(); set != nil {
		rs = set
		if *explain {
			rs = set.Traced(func(e rules.Explanation) { explained = append(explained, e) })
		}
	}
	engine := policy.NewEngine(p.settings(cfg), p.checker, rs, log)
	engine.SetCache(p.cache, p.grey)
	status := 0
	for i, name := range names {
		explained = explained[:0]
		rep, err := checkOne(engine, name, policy.Transaction{
			Conn: policy.ConnInfo{IP: ip, Name: *clientName, Front: "check"}, Helo: *helo, From: *from,
			Mail: policy.MailInfo{AuthUser: *authUser, TLS: *useTLS}, Rcpts: rcpts,
		})
		if err != nil {
			return fail("%s: %v", msgName(name), err)
		}
		rep.Explain = slices.Clone(explained)
		rep.File = name
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			enc.Encode(rep)
		} else {
			if len(names) > 1 {
				if i > 0 {
					fmt.Fprintln(stdout)
				}
				fmt.Fprintf(stdout, "==> %s <==\n", name)
			}
			printReport(stdout, rep, *explain, p.rules.Current())
		}
		status = max(status, verdictStatus(rep.Action))
	}
	if *exitCode {
		return status
	}
	return 0
}

// verdictStatus is the exit status --exit-code gives an action: the
// SMTP reply class for tempfail and reject.
func verdictStatus(action string) int {
	switch action {
	case "tempfail":
		return 4
	case "reject":
		return 5
	case "discard":
		return 6
	case "quarantine":
		return 7
	}
	return 0
}

// parseInterspersed parses flags wherever they stand among the message
// names, so that `check m.eml --json` means what it says.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var names []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) < len(args) && args[len(args)-len(rest)-1] == "--" {
			return append(names, rest...), nil // after --, all are names
		}
		for len(rest) > 0 && (rest[0] == "-" || !strings.HasPrefix(rest[0], "-")) {
			names = append(names, rest[0])
			rest = rest[1:]
		}
		if len(rest) == 0 {
			return names, nil
		}
		args = rest
	}
}

// checkOne reads one message and drives it through the engine.
func checkOne(engine *policy.Engine, name string, t policy.Transaction) (*checkReport, error) {
	var in io.Reader = os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		in = f
	}
	br := bufio.NewReader(in)
	headers, err := policy.ReadHeader(br)
	if err != nil {
		return nil, err
	}
	t.Header, t.Body = headers, br
	return runStages(context.Background(), engine, t)
}

func msgName(arg string) string {
	if arg == "" || arg == "-" {
		return "standard input"
	}
	return arg
}

// runStages drives the engine from connect to end of message, through
// the same driver as rule tests and replay, and reports what happened.
func runStages(ctx context.Context, e *policy.Engine, t policy.Transaction) (*checkReport, error) {
	out, err := e.Drive(ctx, t)
	if err != nil {
		return nil, err
	}
	return newCheckReport(out), nil
}

func printReport(w io.Writer, r *checkReport, explain bool, set *rules.Set) {
	for _, s := range r.Stages {
		line := fmt.Sprintf("%-8s %-10s", s.Stage, s.Action)
		if s.Subject != "" {
			line += " " + s.Subject
		}
		if s.Reply != "" {
			line += "  → " + s.Reply
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w)
	if r.Checks.IPRev != nil {
		fmt.Fprintf(w, "iprev     %s %s\n", r.Checks.IPRev.Result, r.Checks.IPRev.PTR)
	}
	for _, d := range r.Checks.DNSBL {
		fmt.Fprintf(w, "dnsbl     %s %s %s\n", d.Zone, strings.Join(d.Codes, ","), d.Error)
	}
	for _, d := range r.Checks.URIBL {
		fmt.Fprintf(w, "uribl     %s %s %s %s\n", d.Zone, d.Query, strings.Join(d.Names, ","), d.Error)
	}
	if r.Checks.SPFHelo != nil {
		fmt.Fprintf(w, "spf helo  %s %s\n", r.Checks.SPFHelo.Result, r.Checks.SPFHelo.Domain)
	}
	if r.Checks.SPF != nil {
		fmt.Fprintf(w, "spf       %s %s %s\n", r.Checks.SPF.Result, r.Checks.SPF.Domain, r.Checks.SPF.Explanation)
	}
	for _, d := range r.Checks.DKIM {
		fmt.Fprintf(w, "dkim      %s d=%s s=%s a=%s %s\n", d.Result, d.Domain, d.Selector, d.Algorithm, d.Reason)
	}
	if r.Checks.DMARC != nil {
		fmt.Fprintf(w, "dmarc     %s policy=%s domain=%s policy_domain=%s org_domain=%s testing=%v %s\n",
			r.Checks.DMARC.Result, r.Checks.DMARC.Policy, r.Checks.DMARC.Domain, r.Checks.DMARC.PolicyDomain, r.Checks.DMARC.OrgDomain, r.Checks.DMARC.Testing, r.Checks.DMARC.Reason)
	}
	if c := r.Content; c != nil {
		fmt.Fprintf(w, "content   html=%v text_parts=%d text_bytes=%d url_count=%d phish_links=%d from_display_mismatch=%v %s\n",
			c.HTML, c.TextParts, c.TextBytes, c.URLCount, c.PhishLinks, c.FromDisplayMismatch, c.Limit)
	}
	for _, u := range r.URLs {
		fmt.Fprintf(w, "url       %s://%s%s %s\n", u.Scheme, u.Host, u.Path, u.Domain)
	}
	if len(r.Matches) > 0 {
		fmt.Fprintln(w)
		for _, m := range r.Matches {
			mode := ""
			if m.Monitor {
				mode = " (monitor)"
			}
			if m.Unknown != "" {
				mode += "; read what a temporary error left unknown: " + m.Unknown
			}
			fmt.Fprintf(w, "rule      %s at %s: %s%s\n", m.Rule, m.Stage, m.Action, mode)
		}
	}
	fmt.Fprintf(w, "score     %g\n\n", r.Score)
	for _, h := range r.HeadersAdded {
		fmt.Fprintf(w, "%s: %s\n", h.Name, h.Value)
	}
	verdict := r.Action + " at " + r.Stage
	if r.SMTPCode != 0 {
		verdict += fmt.Sprintf(": %d %s %s", r.SMTPCode, r.EnhancedCode, r.Message)
	}
	if r.Reason != "" {
		verdict += " (" + r.Reason + ")"
	}
	fmt.Fprintf(w, "\nverdict: %s\n", verdict)
	if explain && set != nil {
		printExplain(w, r.Explain, set, r.Stage)
	}
}

func printExplain(w io.Writer, ex []rules.Explanation, set *rules.Set, final string) {
	fmt.Fprintln(w, "\nrules:")
	seen := map[string]bool{}
	decider := map[policy.Stage]string{}
	for _, e := range ex {
		seen[e.Rule] = true
		state := "no match"
		if e.Matched {
			state = "MATCHED"
		}
		if e.Decided {
			state += ", decided"
			if _, ok := decider[e.Stage]; !ok {
				decider[e.Stage] = e.Rule
			}
		}
		if e.Error != "" {
			state = "error: " + e.Error
		}
		if e.Skipped != "" {
			state = "skipped: " + e.Skipped
		}
		var vars []string
		for _, v := range e.Vars {
			b, _ := json.Marshal(v.Value)
			vars = append(vars, v.Name+"="+string(b))
		}
		fmt.Fprintf(w, "  %-24s %-5s %-10s %s  %s\n", e.Rule, e.Stage, e.Action, state, strings.Join(vars, " "))
	}
	end, err := policy.ParseStage(final)
	if err != nil {
		end = policy.StageEOM
	}
	for _, ri := range set.Rules() {
		if seen[ri.Name] {
			continue
		}
		why := "not reached: filtering ended before its stage"
		if d, ok := decider[ri.Stage]; ok && ri.Stage <= end {
			why = "not run: rule " + d + " decided the stage first"
		} else if ri.Stage <= end {
			why = "not run: an earlier rule of its stage decided"
		}
		fmt.Fprintf(w, "  %-24s %-5s %-10s %s\n", ri.Name, ri.Stage, ri.Action, why)
	}
}
