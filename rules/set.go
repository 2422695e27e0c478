// Package rules reads, compiles and evaluates the rule files
// administrators write: YAML rules with expr conditions, named lists, lint
// checks, tests written next to the rules, and safe reloading.
package rules

import (
	"context"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mailward/mailward/policy"
)

// Set is a compiled rule set. It is immutable and safe for concurrent
// use; a reload builds a new one.
type Set struct {
	rules    []*rule
	stages   [numStages][]*rule
	need     [numStages]uint64 // variables read by each stage's rules
	rate     [numStages]bool   // a rule of the stage calls ratelimit
	box      [numStages]uint64 // the part of need the VM reads
	lists    map[string]*list
	files    []string
	warnings Problems
	log      *slog.Logger
	pool     sync.Pool
}

const numStages = int(policy.StageEOM) + 1

// errorLogEvery limits how often one rule's evaluation errors are logged;
// all of them are counted.
const errorLogEvery = time.Minute

// Load reads and compiles the rule files and lists cfg names. The error,
// if any, is a Problems listing every problem as file:line:col: message.
func Load(cfg Config, opts Options) (*Set, error) {
	var p problems
	files := expandConfig(cfg.Files, opts.BaseDir, &p)
	b := build(buildInput{files: files, lists: cfg.Lists, listBase: opts.BaseDir}, opts, &p)
	if err := p.list.err(); err != nil {
		return nil, err
	}
	b.set.warnings = p.list.Warnings()
	return b.set, nil
}

// LoadPaths reads and compiles the rule files among paths (files,
// directories or globs, as `rules lint` and `rules test` take them; test
// files are skipped) with the lists the config declares.
func LoadPaths(paths []string, lists map[string]ListConfig, opts Options) (*Set, error) {
	var p problems
	files, _ := expandPaths(paths, &p)
	b := build(buildInput{files: files, lists: lists, listBase: opts.BaseDir}, opts, &p)
	if err := p.list.err(); err != nil {
		return nil, err
	}
	b.set.warnings = p.list.Warnings()
	return b.set, nil
}

// buildInput is what one build reads.
type buildInput struct {
	files     []string
	data      map[string][]byte // file contents by name, instead of the disk
	lists     map[string]ListConfig
	listBase  string
	listsOpen bool // a config with more lists may exist: unknown lists are warnings
}

// built is a build's result with what lint needs besides the set.
type built struct {
	set      *Set
	specs    []*fileSpec
	declared map[string]listDecl
	used     map[string]bool
	names    map[string]bool // every rule name written, compiled or not
}

// build parses and compiles everything, collecting problems in p. The
// set holds the rules that compiled.
func build(in buildInput, opts Options, p *problems) *built {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	b := &built{declared: map[string]listDecl{}, names: map[string]bool{}}
	var decls []listDecl
	names := make([]string, 0, len(in.lists))
	for n := range in.lists {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		lc := in.lists[n]
		path := resolve(in.listBase, lc.File)
		decls = append(decls, listDecl{name: n, cfg: lc, path: path, pos: Pos{File: path}})
	}
	for _, f := range in.files {
		data, ok := in.data[f]
		if !ok {
			var err error
			if data, err = os.ReadFile(f); err != nil {
				p.errorf(Pos{File: f}, "%v", err)
				continue
			}
		}
		fs := parseFile(f, data, p)
		if fs == nil {
			continue
		}
		b.specs = append(b.specs, fs)
		decls = append(decls, fs.lists...)
	}

	lists := map[string]*list{}
	var files []string
	for _, d := range decls {
		if prev, dup := b.declared[d.name]; dup {
			p.errorf(d.pos, "list %q is declared twice (first at %s)", d.name, prev.pos)
			continue
		}
		b.declared[d.name] = d
		switch {
		case !listNameRE.MatchString(d.name):
			p.errorf(d.pos, "list name %q: start with a letter, then letters, digits, '_', '-' or '.'", d.name)
			continue
		case d.cfg.File == "":
			p.errorf(d.pos, "list %q has no file", d.name)
			continue
		}
		switch d.cfg.Type {
		case listIP, listDomain, listAddress, listRegexp:
		default:
			p.errorf(d.pos, "list %q: unknown type %q (want ip, domain, address or regexp)", d.name, d.cfg.Type)
			continue
		}
		if l := readList(d.name, d.cfg.Type, d.path, p); l != nil {
			lists[d.name] = l
			files = append(files, d.path)
		}
	}

	c := newCompiler(opts, lists, in.listsOpen, p)
	s := &Set{lists: lists, log: log}
	s.pool.New = func() any { return newState() }
	seen := map[string]Pos{}
	for _, fs := range b.specs {
		files = append(files, fs.src.name)
		for _, n := range fs.rules {
			if name := ruleNodeName(n); name != "" {
				b.names[name] = true
			}
			r := c.compileRule(fs.src, n)
			if r == nil {
				continue
			}
			if prev, dup := seen[r.name]; dup {
				p.errorf(r.pos, "duplicate rule name %q (first defined at %s)", r.name, prev)
				continue
			}
			seen[r.name] = r.pos
			s.rules = append(s.rules, r)
			s.stages[r.stage] = append(s.stages[r.stage], r)
			s.need[r.stage] |= r.reads
			s.box[r.stage] |= r.vmReads
			s.rate[r.stage] = s.rate[r.stage] || r.rate
		}
	}
	b.used = c.used
	slices.Sort(files)
	s.files = slices.Compact(files)
	b.set = s
	return b
}

// ruleNodeName returns the name a rule entry gives itself, if any.
func ruleNodeName(n *yaml.Node) string {
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "name" && n.Content[i+1].Kind == yaml.ScalarNode {
			return n.Content[i+1].Value
		}
	}
	return ""
}

// Files returns the rule and list files the set was built from: the
// files to watch for changes.
func (s *Set) Files() []string {
	if s == nil {
		return nil
	}
	return slices.Clone(s.files)
}

// Len returns the number of rules.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.rules)
}

// Warnings returns what the load found questionable but not wrong.
func (s *Set) Warnings() Problems {
	if s == nil {
		return nil
	}
	return slices.Clone(s.warnings)
}

// RuleInfo describes one rule and what it has done since load.
type RuleInfo struct {
	Name        string       `json:"name"`
	Description string       `json:"description,omitempty"`
	Pos         Pos          `json:"-"`
	Stage       policy.Stage `json:"stage"`
	Action      string       `json:"action"`
	Monitor     bool         `json:"monitor,omitempty"`
	Tags        []string     `json:"tags,omitempty"`
	// Reads are the variables the rule reads.
	Reads []string `json:"reads,omitempty"`
	// Matches counts matches, monitored ones included; Errors counts
	// evaluations that failed at run time.
	Matches uint64 `json:"matches"`
	Errors  uint64 `json:"errors"`
}

// Rules describes every rule in file order.
func (s *Set) Rules() []RuleInfo {
	if s == nil {
		return nil
	}
	out := make([]RuleInfo, len(s.rules))
	for i, r := range s.rules {
		out[i] = RuleInfo{
			Name: r.name, Description: r.desc, Pos: r.pos, Stage: r.stage, Action: r.kind.String(),
			Monitor: r.monitor, Tags: slices.Clone(r.tags), Reads: r.readNames(),
			Matches: r.matches.Load(), Errors: r.errors.Load(),
		}
	}
	return out
}

// Eval runs the rules due at stage against f, in file order, as
// policy.Rules describes: score rules add to f.Score, add_header rules
// collect header edits, and the first enforced terminal match decides.
// A rule that fails at run time does not match; the failure is counted
// and logged and the other rules go on.
func (s *Set) Eval(ctx context.Context, stage policy.Stage, f *policy.Facts, matches *[]policy.Match) policy.Verdict {
	return s.eval(ctx, stage, f, matches, nil)
}

// ContentRules names the rules that read the message's header or
// content, which a front that never sees the message skips.
func (s *Set) ContentRules() []string {
	if s == nil {
		return nil
	}
	var out []string
	for _, r := range s.rules {
		if r.reads&contentVars != 0 {
			out = append(out, r.name)
		}
	}
	return out
}

// TextRules names the rules that read the message's decoded text
// (body_text, body_matches), which the journal does not keep.
func (s *Set) TextRules() []string {
	if s == nil {
		return nil
	}
	var out []string
	for _, r := range s.rules {
		if r.reads&(1<<vBodyText) != 0 {
			out = append(out, r.name)
		}
	}
	return out
}

// Explanation is what one rule did at one evaluation.
type Explanation struct {
	Rule    string       `json:"rule"`
	Pos     Pos          `json:"-"`
	Stage   policy.Stage `json:"stage"`
	Action  string       `json:"action"`
	Monitor bool         `json:"monitor,omitempty"`
	Matched bool         `json:"matched"`
	// Decided is true for the match that gave the stage's verdict.
	Decided bool   `json:"decided,omitempty"`
	Error   string `json:"error,omitempty"`
	// Skipped says why the rule did not run, when it did not.
	Skipped string `json:"skipped,omitempty"`
	// Vars are the variables the rule read, with their values.
	Vars []Var `json:"vars,omitempty"`
}

// Var is one variable's value as a rule saw it.
type Var struct {
	Name  string `json:"name"`
	Value any    `json:"value"`
}

// Explain evaluates every rule due at stage against f, including those an
// earlier terminal match would have cut off, and reports what each did
// and the values of the variables it read. It changes nothing: not f, not
// the counters.
func (s *Set) Explain(ctx context.Context, stage policy.Stage, f *policy.Facts) []Explanation {
	if s == nil || f == nil {
		return nil
	}
	fc := *f
	var out []Explanation
	s.eval(ctx, stage, &fc, nil, &hooks{dry: true, all: true, trace: func(e Explanation) { out = append(out, e) }})
	return out
}

// Traced returns rules that evaluate exactly as s does and report each
// rule they run to fn, for `mailward check --explain`.
func (s *Set) Traced(fn func(Explanation)) policy.Rules {
	return policy.RulesFunc(func(ctx context.Context, stage policy.Stage, f *policy.Facts, matches *[]policy.Match) policy.Verdict {
		return s.eval(ctx, stage, f, matches, &hooks{trace: fn})
	})
}

// Enforced returns rules that evaluate as s does except that monitor-mode
// rules act as if enforced: what the set would answer with every rule
// live, as `rules diff` counts it. Matches keep their monitor mark. fn,
// if not nil, receives each rule run as with Traced. Nothing is counted.
func (s *Set) Enforced(fn func(Explanation)) policy.Rules {
	return policy.RulesFunc(func(ctx context.Context, stage policy.Stage, f *policy.Facts, matches *[]policy.Match) policy.Verdict {
		return s.eval(ctx, stage, f, matches, &hooks{trace: fn, dry: true, enforce: true})
	})
}

// hooks change an evaluation for explanations.
type hooks struct {
	trace   func(Explanation)
	dry     bool // no counters, no logs
	all     bool // go on after the deciding match, changing nothing more
	enforce bool // monitor-mode rules act as enforced
}

func (s *Set) eval(ctx context.Context, stage policy.Stage, f *policy.Facts, matches *[]policy.Match, h *hooks) policy.Verdict {
	v := policy.Verdict{Action: policy.Continue, Stage: stage}
	if s == nil || f == nil || stage < 0 || int(stage) >= numStages {
		return v
	}
	rs := s.stages[stage]
	if len(rs) == 0 {
		return v
	}
	st := s.pool.Get().(*state)
	defer func() {
		st.reset()
		s.pool.Put(st)
	}()
	var tr *trip
	if s.rate[stage] {
		tr = &trip{}
		ctx = context.WithValue(ctx, tripKey{}, tr)
	}
	st.fill(ctx, f, s.need[stage], s.box[stage])
	decided := false
	for _, r := range rs {
		if f.NoContent && r.reads&contentVars != 0 {
			if h != nil && h.trace != nil {
				h.trace(Explanation{Rule: r.name, Pos: r.pos, Stage: stage, Action: r.kind.String(), Monitor: r.monitor,
					Skipped: "reads the message, which this front does not see"})
			}
			continue
		}
		var matched bool
		var err error
		if tr != nil {
			tr.what = ""
		}
		matched, err = r.match(st)
		monitor := r.monitor && (h == nil || !h.enforce)
		decides := matched && !decided && !monitor && r.kind.terminal()
		if h != nil && h.trace != nil {
			h.trace(s.explain(r, st, stage, matched, decides, err))
		}
		if err != nil {
			if h == nil || !h.dry {
				s.evalError(r, stage, f, err)
			}
			continue
		}
		if !matched || decided {
			continue
		}
		if h == nil || !h.dry {
			r.matches.Add(1)
		}
		m := policy.Match{Rule: r.name, Action: r.kind.String(), Stage: stage, Monitor: r.monitor, Unknown: unknownText(r, f)}
		if r.kind == kindReject && r.reads&(1<<vScore) != 0 {
			m.Unknown = joinNonEmpty(m.Unknown, unsureScore(r, st, f, matches))
		}
		if monitor {
			if h == nil || !h.dry {
				s.log.Info("rule matched in monitor mode", "rule", r.name, "action", r.kind.String(),
					"stage", stage.String(), "queue_id", f.QueueID)
			}
			appendMatch(matches, m)
			continue
		}
		switch r.kind {
		case kindScore:
			f.Score += r.score
			st.setScore(f.Score)
			m.Score = r.score
		case kindAddHeader:
			v.Headers = append(v.Headers, policy.HeaderEdit{Name: r.hdrName, Value: headerText(r.hdrValue.render(st, s, r, stage, h))})
		case kindSign, kindNoSign:
			if v.Sign == policy.SignDefault {
				v.Sign = policy.SignYes
				if r.kind == kindNoSign {
					v.Sign = policy.SignNo
				}
			}
		case kindGreylist:
			if !v.Greylist {
				v.Greylist = true
				v.Rule = r.name
			}
		default:
			v.Action = r.kind.action()
			v.Rule = r.name
			v.Unknown = m.Unknown
			v.Code, v.Enhanced = r.code, r.enhanced
			if r.message != nil {
				text := r.message.render(st, s, r, stage, h)
				if v.Action == policy.Reject || v.Action == policy.Tempfail {
					v.Text = replyText(text)
				} else {
					v.Reason = replyText(text)
				}
			}
			if tr != nil && tr.what != "" {
				v.Reason = strings.TrimPrefix(v.Reason+"; "+tr.what, "; ")
			}
		}
		appendMatch(matches, m)
		if decides {
			if h == nil || !h.all {
				return v
			}
			decided = true
		}
	}
	return v
}

// match evaluates r's condition on st.
func (r *rule) match(st *state) (bool, error) {
	if r.native != nil {
		return r.native(st), nil
	}
	out, err := st.vm.Run(r.prog, st.vals)
	if err != nil {
		return false, err
	}
	matched, _ := out.(bool)
	return matched, nil
}

// unsureScore says whether r, which matched reading score, still matches
// without the points of rules that read what a temporary error left
// unknown: "" if so, else what those rules were.
func unsureScore(r *rule, st *state, f *policy.Facts, matches *[]policy.Match) string {
	if matches == nil {
		return ""
	}
	var unsure float64
	var names []string
	for _, m := range *matches {
		if m.Score > 0 && !m.Monitor && m.Unknown != "" {
			unsure += m.Score
			names = append(names, m.Rule)
		}
	}
	if unsure == 0 {
		return ""
	}
	why := "score (points from " + strings.Join(names, ", ") + ")"
	if r.rate {
		return why // evaluating again would count the rate limit twice
	}
	st.setScore(f.Score - unsure)
	still, err := r.match(st)
	st.setScore(f.Score)
	if err == nil && still {
		return ""
	}
	return why
}

func joinNonEmpty(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

func appendMatch(matches *[]policy.Match, m policy.Match) {
	if matches != nil {
		*matches = append(*matches, m)
	}
}

func (s *Set) explain(r *rule, st *state, stage policy.Stage, matched, decides bool, err error) Explanation {
	e := Explanation{Rule: r.name, Pos: r.pos, Stage: stage, Action: r.kind.String(), Monitor: r.monitor, Matched: matched, Decided: decides}
	if err != nil {
		e.Error = err.Error()
	}
	for id := 0; id < numVars; id++ {
		if r.reads&(1<<id) == 0 || id == vHeader {
			continue
		}
		v := st.env.value(id)
		// The state's maps are reused by the next evaluation.
		switch m := v.(type) {
		case map[string][]string:
			v = maps.Clone(m)
		case map[string]string:
			v = maps.Clone(m)
		}
		e.Vars = append(e.Vars, Var{Name: variables[id].name, Value: v})
	}
	return e
}

// evalError counts a run-time failure and logs it, at most once a minute per rule.
func (s *Set) evalError(r *rule, stage policy.Stage, f *policy.Facts, err error) {
	r.errors.Add(1)
	now := time.Now().UnixNano()
	last := r.lastLog.Load()
	if now-last < int64(errorLogEvery) || !r.lastLog.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("rule failed at run time and did not match", "rule", r.name, "stage", stage.String(),
		"queue_id", f.QueueID, "err", err.Error(), "errors", r.errors.Load())
}
