package journal

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/rules"
)

// Replayed is one transaction's replay as `rules replay` prints it.
type Replayed struct {
	At       string    `json:"at"` // file:line
	Time     time.Time `json:"time"`
	QueueID  string    `json:"queue_id,omitempty"`
	IP       string    `json:"ip,omitempty"`
	MailFrom string    `json:"mail_from"`
	Rcpts    []Rcpt    `json:"rcpts"`
	Verdict  Verdict   `json:"verdict"`
	Score    float64   `json:"score"`
	Matches  []Match   `json:"matches"`
	// Recorded is the verdict the journal holds; Changed says the
	// replay's action or stage differs from it.
	Recorded Verdict `json:"recorded"`
	Changed  bool    `json:"changed"`
}

// Report describes the replay of l.
func Report(l *Line, out *policy.Outcome) *Replayed {
	f := &policy.Finished{Facts: out.Facts, Rcpts: out.Rcpts, Matches: out.Matches, Verdict: out.Verdict}
	r := newRecord(f, nil)
	rep := &Replayed{At: l.Pos(), Time: l.Time, QueueID: l.QueueID, IP: l.IP, MailFrom: l.MailFrom,
		Rcpts: r.Rcpts, Verdict: r.Verdict, Score: r.Score, Matches: r.Matches, Recorded: l.Verdict}
	if rep.Rcpts == nil {
		rep.Rcpts = []Rcpt{}
	}
	if rep.Matches == nil {
		rep.Matches = []Match{}
	}
	rep.Changed = rep.Verdict.Action != rep.Recorded.Action || rep.Verdict.Stage != rep.Recorded.Stage
	return rep
}

func (v Verdict) String() string {
	s := v.Action + " at " + v.Stage
	if v.Code != 0 {
		s += fmt.Sprintf(" (%d)", v.Code)
	}
	if v.Rule != "" {
		s += " by " + v.Rule
	} else if v.Reason != "" {
		s += " (" + v.Reason + ")"
	}
	return s
}

// String is the one line `rules replay` prints.
func (r *Replayed) String() string {
	var rcpts []string
	for _, rc := range r.Rcpts {
		rcpts = append(rcpts, rc.Rcpt)
	}
	s := fmt.Sprintf("%s  %s  %s  %s  <%s> → %s  %s  score %g", r.At, r.Time.Format(time.RFC3339), orDash(r.QueueID), orDash(r.IP),
		r.MailFrom, strings.Join(rcpts, ","), r.Verdict, r.Score)
	if r.Changed {
		s += "  [journal: " + r.Recorded.String() + "]"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Print writes the diff as tables and examples.
func (d *Diff) Print(w io.Writer) {
	period := "no transactions"
	if d.Transactions > 0 {
		period = d.From.Format(time.RFC3339) + " to " + d.To.Format(time.RFC3339)
	}
	fmt.Fprintf(w, "%d transactions (%s), %d with another verdict\n", d.Transactions, period, d.Changed)
	if len(d.Omitted) > 0 {
		fmt.Fprintf(w, "(the journal leaves out %s: rules that read them saw no value)\n", strings.Join(d.Omitted, ", "))
	}
	if len(d.TextRules) > 0 {
		fmt.Fprintf(w, "(the journal keeps no message text: %s read body_text and saw \"\")\n", strings.Join(d.TextRules, ", "))
	}
	if len(d.Verdicts) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "verdict change\ttransactions\t")
		for _, vc := range d.Verdicts {
			fmt.Fprintf(tw, "%s → %s\t%d\t\n", vc.From, vc.To, vc.Count)
		}
		tw.Flush()
	}
	if len(d.Rules) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "rule\tnewly matching\tno longer matching\t")
		for _, rc := range d.Rules {
			fmt.Fprintf(tw, "%s\t%d\t%d\t\n", rc.Rule, rc.Newly, rc.NoLonger)
		}
		tw.Flush()
	}
	for _, vc := range d.Verdicts {
		printExamples(w, fmt.Sprintf("%s → %s", vc.From, vc.To), vc.Count, vc.Examples)
	}
	for _, rc := range d.Rules {
		printExamples(w, rc.Rule+" newly matching", rc.Newly, rc.NewlyExamples)
		printExamples(w, rc.Rule+" no longer matching", rc.NoLonger, rc.NoLongerExamples)
	}
}

func printExamples(w io.Writer, kind string, count int, exs []*Example) {
	if len(exs) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%s: %d, first %d:\n", kind, count, len(exs))
	for _, ex := range exs {
		fmt.Fprintf(w, "  %s  %s  %s  %s  <%s> → %s\n", ex.At, ex.Time.Format(time.RFC3339), orDash(ex.QueueID), orDash(ex.IP), ex.From, strings.Join(ex.Rcpts, ","))
		printSide(w, "old", ex.Old)
		printSide(w, "new", ex.New)
	}
}

func printSide(w io.Writer, name string, s *Side) {
	v := Verdict{Action: s.Action, Stage: s.Stage, Code: s.Code, Rule: s.Rule, Reason: s.Reason}
	fmt.Fprintf(w, "    %s: %s, score %g, matched: %s\n", name, v, s.Score, orDash(strings.Join(s.Matched, ", ")))
	for _, e := range s.Decided {
		mode := ""
		if e.Monitor {
			mode = " (monitor mode, counted as enforced)"
		}
		fmt.Fprintf(w, "         %s%s at %s: %s\n", e.Rule, mode, e.Stage, varsString(e.Vars))
	}
}

// varsString renders what a rule read: name=value, values as JSON.
func varsString(vars []rules.Var) string {
	parts := make([]string, len(vars))
	for i, v := range vars {
		b, _ := json.Marshal(v.Value)
		if len(b) > 120 {
			b = append(b[:117], "..."...)
		}
		parts[i] = v.Name + "=" + string(b)
	}
	return strings.Join(parts, " ")
}
