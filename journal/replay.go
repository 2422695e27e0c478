package journal

import (
	"context"
	"log/slog"
	"time"

	"github.com/mailward/mailward/policy"
)

// Replayer plays journal lines through a rule set with the check
// results each line recorded: no DNS, no network, the same engine and
// driver as live traffic, stage by stage.
type Replayer struct {
	// Settings are the engine's (thresholds, DMARC enforcement), as the
	// config gives them.
	Settings policy.Settings
	Rules    policy.Rules
	Log      *slog.Logger
}

// Replay plays one line.
func (r *Replayer) Replay(ctx context.Context, l *Line) (*policy.Outcome, error) {
	e := policy.NewEngine(r.Settings, newRecorded(l.c), r.Rules, r.Log)
	return e.Drive(ctx, l.Transaction())
}

// Run replays every line of the files, on all CPUs, and calls fn with
// each outcome in journal order.
func (r *Replayer) Run(ctx context.Context, files []string, fn func(*Line, *policy.Outcome) error) ([]Problem, error) {
	return Each(files, func(l *Line) (*policy.Outcome, error) { return r.Replay(ctx, l) }, fn)
}

// Transaction is the line as the driver takes it.
func (l *Line) Transaction() policy.Transaction {
	t := policy.Transaction{
		Conn: policy.ConnInfo{IP: l.c.ip, Name: l.ClientName, Front: l.Front, Time: l.Time, Replay: true, Lookups: l.Lookups},
		Helo: l.Helo,
		From: l.MailFrom,
		Mail: policy.MailInfo{AuthUser: l.AuthUser, TLS: l.TLS, TLSVersion: l.TLSVersion, QueueID: l.QueueID, Time: l.Time},
		// Rcpts as the line has them: the driver asks for each in turn.
		Rcpts: l.c.rcpts,
		Size:  l.Size, Attachments: l.c.attach, URLs: l.c.urls, Content: l.c.content, Replayed: true, Reached: l.c.reached,
	}
	t.Header = make([]policy.Header, len(l.c.headers))
	for i, h := range l.c.headers {
		// The driver takes a field as written after the colon.
		t.Header[i] = policy.Header{Name: h.Name, Value: " " + h.Value}
	}
	return t
}

// Tally counts, per rule, the replayed transactions it matched, for
// `rules test --coverage`.
type Tally struct {
	Transactions int
	From, To     time.Time
	Matched      map[string]int
}

// Add counts the matches of l's replay.
func (t *Tally) Add(l *Line, out *policy.Outcome) error {
	if t.Matched == nil {
		t.Matched = map[string]int{}
	}
	t.Transactions++
	if t.From.IsZero() || l.Time.Before(t.From) {
		t.From = l.Time
	}
	if l.Time.After(t.To) {
		t.To = l.Time
	}
	for _, r := range matchSet(out.Matches) {
		t.Matched[r]++
	}
	return nil
}
