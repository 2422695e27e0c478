package journal

import (
	"context"
	"log/slog"

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

// Transaction is the line as the driver takes it.
func (l *Line) Transaction() policy.Transaction {
	t := policy.Transaction{
		Conn: policy.ConnInfo{IP: l.c.ip, Name: l.ClientName, Front: l.Front, Time: l.Time},
		Helo: l.Helo,
		From: l.MailFrom,
		Mail: policy.MailInfo{AuthUser: l.AuthUser, TLS: l.TLS, TLSVersion: l.TLSVersion, QueueID: l.QueueID, Time: l.Time},
		// Rcpts as the line has them: the driver asks for each in turn.
		Rcpts:    l.c.rcpts,
		Recorded: &policy.Recorded{Reached: l.c.reached, Size: l.Size, Attachments: l.c.attach},
	}
	t.Header = make([]policy.Header, len(l.c.headers))
	for i, h := range l.c.headers {
		// The driver takes a field as written after the colon.
		t.Header[i] = policy.Header{Name: h.Name, Value: " " + h.Value}
	}
	return t
}
