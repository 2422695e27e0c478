package journal

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/rules"
)

// Differ replays journal lines through an old and a new rule set and
// counts what changes. Monitor-mode rules count as the verdict they
// would give: the diff answers "what if every rule were live".
type Differ struct {
	Settings policy.Settings
	Old, New *rules.Set
	// Examples is how many example transactions to keep per kind of change.
	Examples int
	Log      *slog.Logger

	diff    Diff
	verdict map[[2]string]*VerdictChange
	rule    map[string]*RuleChange
}

// Diff is what a rule change does to the journaled transactions.
type Diff struct {
	Transactions int `json:"transactions"`
	// Changed counts transactions whose verdict changed.
	Changed int `json:"changed"`
	// From and To are the first and last transaction's time.
	From     time.Time        `json:"from"`
	To       time.Time        `json:"to"`
	Verdicts []*VerdictChange `json:"verdict_changes"`
	Rules    []*RuleChange    `json:"rule_changes"`
	// Omitted are the header fields the journal left out
	// (journal.omit_headers): rules that read them saw no value.
	Omitted []string `json:"omitted_headers"`
	// TextRules are the rules of either set that read the decoded text
	// (body_text, body_matches): the journal keeps none, so in a replay
	// they saw "".
	TextRules []string `json:"text_rules"`
}

// VerdictChange counts the transactions whose verdict went From → To.
// none is a transaction that came to no verdict (the client left).
type VerdictChange struct {
	From     string     `json:"from"`
	To       string     `json:"to"`
	Count    int        `json:"count"`
	Examples []*Example `json:"examples"`
}

// RuleChange counts the transactions a rule now matches and did not
// (Newly), and the reverse.
type RuleChange struct {
	Rule             string     `json:"rule"`
	Newly            int        `json:"newly_matching"`
	NoLonger         int        `json:"no_longer_matching"`
	NewlyExamples    []*Example `json:"newly_matching_examples"`
	NoLongerExamples []*Example `json:"no_longer_matching_examples"`
}

// Example is one transaction that changed, with what decided it under
// either rule set.
type Example struct {
	At      string    `json:"at"` // file:line
	Time    time.Time `json:"time"`
	QueueID string    `json:"queue_id,omitempty"`
	IP      string    `json:"ip,omitempty"`
	From    string    `json:"mail_from"`
	Rcpts   []string  `json:"rcpts"`
	Old     *Side     `json:"old"`
	New     *Side     `json:"new"`
}

// Side is one rule set's answer to an example.
type Side struct {
	Action  string   `json:"action"`
	Stage   string   `json:"stage"`
	Code    int      `json:"code,omitempty"`
	Rule    string   `json:"rule,omitempty"`
	Reason  string   `json:"reason,omitempty"`
	Score   float64  `json:"score"`
	Matched []string `json:"matched"`
	// Decided are the rules that decided (or, for a verdict the score
	// made, the score rules that matched), with the values they read.
	Decided []rules.Explanation `json:"decided"`
}

// Run diffs every line of the files: the replays on all CPUs, the
// counting in journal order, so that examples are the first ones.
func (d *Differ) Run(ctx context.Context, files []string) ([]Problem, error) {
	return Each(files, func(l *Line) ([2]*policy.Outcome, error) { return d.compare(ctx, l) },
		func(l *Line, outs [2]*policy.Outcome) error { d.add(ctx, l, outs[0], outs[1]); return nil })
}

// Add replays one line through both rule sets and counts the changes.
func (d *Differ) Add(ctx context.Context, l *Line) error {
	outs, err := d.compare(ctx, l)
	if err != nil {
		return err
	}
	d.add(ctx, l, outs[0], outs[1])
	return nil
}

func (d *Differ) compare(ctx context.Context, l *Line) ([2]*policy.Outcome, error) {
	oldOut, err := d.replay(ctx, d.Old, l, nil)
	if err != nil {
		return [2]*policy.Outcome{}, err
	}
	newOut, err := d.replay(ctx, d.New, l, nil)
	return [2]*policy.Outcome{oldOut, newOut}, err
}

func (d *Differ) add(ctx context.Context, l *Line, oldOut, newOut *policy.Outcome) {
	if d.verdict == nil {
		d.verdict, d.rule = map[[2]string]*VerdictChange{}, map[string]*RuleChange{}
	}
	d.diff.Transactions++
	for _, h := range l.Omitted {
		if !slices.Contains(d.diff.Omitted, h) {
			d.diff.Omitted = append(d.diff.Omitted, h)
		}
	}
	if d.diff.From.IsZero() || l.Time.Before(d.diff.From) {
		d.diff.From = l.Time
	}
	if l.Time.After(d.diff.To) {
		d.diff.To = l.Time
	}
	var ex *Example // made once, when the first kind wants it
	example := func() *Example {
		if ex == nil {
			ex = d.example(ctx, l)
		}
		return ex
	}
	oa, na := actionName(oldOut.Verdict.Action), actionName(newOut.Verdict.Action)
	if oa != na {
		d.diff.Changed++
		vc := d.verdict[[2]string{oa, na}]
		if vc == nil {
			vc = &VerdictChange{From: oa, To: na, Examples: []*Example{}}
			d.verdict[[2]string{oa, na}] = vc
			d.diff.Verdicts = append(d.diff.Verdicts, vc)
		}
		vc.Count++
		if len(vc.Examples) < d.Examples {
			vc.Examples = append(vc.Examples, example())
		}
	}
	om, nm := matchSet(oldOut.Matches), matchSet(newOut.Matches)
	for _, r := range nm {
		if !slices.Contains(om, r) {
			rc := d.ruleChange(r)
			rc.Newly++
			if len(rc.NewlyExamples) < d.Examples {
				rc.NewlyExamples = append(rc.NewlyExamples, example())
			}
		}
	}
	for _, r := range om {
		if !slices.Contains(nm, r) {
			rc := d.ruleChange(r)
			rc.NoLonger++
			if len(rc.NoLongerExamples) < d.Examples {
				rc.NoLongerExamples = append(rc.NoLongerExamples, example())
			}
		}
	}
}

// Result returns the diff so far, largest changes first.
func (d *Differ) Result() *Diff {
	out := d.diff
	out.Verdicts = slices.Clone(out.Verdicts)
	out.Rules = slices.Clone(out.Rules)
	slices.SortStableFunc(out.Verdicts, func(a, b *VerdictChange) int { return b.Count - a.Count })
	slices.SortStableFunc(out.Rules, func(a, b *RuleChange) int {
		if n := (b.Newly + b.NoLonger) - (a.Newly + a.NoLonger); n != 0 {
			return n
		}
		return strings.Compare(a.Rule, b.Rule)
	})
	if out.Verdicts == nil {
		out.Verdicts = []*VerdictChange{}
	}
	if out.Rules == nil {
		out.Rules = []*RuleChange{}
	}
	out.Omitted = slices.Clone(out.Omitted)
	if out.Omitted == nil {
		out.Omitted = []string{}
	}
	out.TextRules = []string{}
	for _, r := range append(d.Old.TextRules(), d.New.TextRules()...) {
		if !slices.Contains(out.TextRules, r) {
			out.TextRules = append(out.TextRules, r)
		}
	}
	return &out
}

func (d *Differ) ruleChange(name string) *RuleChange {
	rc := d.rule[name]
	if rc == nil {
		rc = &RuleChange{Rule: name, NewlyExamples: []*Example{}, NoLongerExamples: []*Example{}}
		d.rule[name] = rc
		d.diff.Rules = append(d.diff.Rules, rc)
	}
	return rc
}

func (d *Differ) replay(ctx context.Context, set *rules.Set, l *Line, trace func(rules.Explanation)) (*policy.Outcome, error) {
	rp := Replayer{Settings: d.Settings, Rules: set.Enforced(trace), Log: d.Log}
	return rp.Replay(ctx, l)
}

// example replays the line again with tracing, to show what decided.
func (d *Differ) example(ctx context.Context, l *Line) *Example {
	ex := &Example{At: l.Pos(), Time: l.Time, QueueID: l.QueueID, IP: l.IP, From: l.MailFrom, Rcpts: l.c.rcpts}
	if ex.Rcpts == nil {
		ex.Rcpts = []string{}
	}
	ex.Old, ex.New = d.side(ctx, d.Old, l), d.side(ctx, d.New, l)
	return ex
}

func (d *Differ) side(ctx context.Context, set *rules.Set, l *Line) *Side {
	var trace []rules.Explanation
	out, err := d.replay(ctx, set, l, func(e rules.Explanation) { trace = append(trace, e) })
	if err != nil {
		return &Side{Action: "error", Reason: err.Error()}
	}
	v := out.Verdict
	s := &Side{Action: actionName(v.Action), Stage: v.Stage.String(), Rule: v.Rule, Reason: v.Reason,
		Score: out.Facts.Score, Matched: matchSet(out.Matches), Decided: []rules.Explanation{}}
	if v.Action == policy.Reject || v.Action == policy.Tempfail {
		s.Code = v.Code
	}
	for _, e := range trace {
		if (e.Decided && e.Rule == v.Rule) || (v.Rule == "" && e.Matched && e.Action == "score") {
			s.Decided = append(s.Decided, e)
		}
	}
	return s
}

// actionName is the verdict as a diff shows it.
func actionName(a policy.Action) string {
	if a == policy.Continue {
		return "none"
	}
	return a.String()
}

// matchSet is the names of the rules matched, each once, in order.
func matchSet(ms []policy.Match) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		if !slices.Contains(out, m.Rule) {
			out = append(out, m.Rule)
		}
	}
	return out
}
