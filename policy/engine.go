package policy

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailward/mailward/cache"
	"github.com/mailward/mailward/checks/content"
	"github.com/mailward/mailward/signing"
)

// Settings are the engine's own knobs, taken from the config file.
type Settings struct {
	// Hostname is the authserv-id of the Authentication-Results header.
	Hostname string
	// OnError is the verdict for a message that cannot be checked:
	// Tempfail (the default) or Accept.
	OnError Action
	// DMARCEnforce rejects p=reject failures and quarantines p=quarantine failures.
	DMARCEnforce bool
	// DMARCOnTemperror is the verdict when DMARC cannot be evaluated: Tempfail or Accept.
	DMARCOnTemperror Action
	// Thresholds turn the final score into an action at end of message.
	Thresholds Thresholds
	// ScoreHeader, when set, names a header that carries the score and the rules that made it.
	ScoreHeader string
	// CheckTimeout bounds the checks and rules of one stage.
	CheckTimeout time.Duration
	// MessageCPU bounds the CPU time spent on one message (see
	// Conn.charge); DefaultMessageCPU when zero.
	MessageCPU time.Duration
	// MIMEDepth and MIMEParts bound the multipart nesting and the parts
	// scanned for attachments; DefaultMIMEDepth and DefaultMIMEParts when
	// zero. A message past them gets the OnError verdict.
	MIMEDepth, MIMEParts int
	// Content bounds the content scan (checks/content: decoded text,
	// links); its MIME bounds are MIMEDepth and MIMEParts. ContentOff
	// turns the scan off: rules see no text and no links.
	Content    content.Options
	ContentOff bool
	// VerdictTTL is how long a final verdict is kept in the cache for a
	// retry of the same message (see verdictcache.go); 0 disables it.
	// DefaultVerdictTTL is the usual value.
	VerdictTTL time.Duration
	// Signing is the DKIM key table; nil or empty: no signing.
	Signing *signing.Table
}

// Thresholds are score levels; zero disables a level.
type Thresholds struct {
	Reject     float64
	Quarantine float64
	AddHeader  float64
}

// ConnInfo is what the front knows when a client connects.
type ConnInfo struct {
	IP     netip.Addr
	Name   string // the client's name as the MTA resolved it, if any
	Front  string // "milter", "smtp" or "policy", for logs
	Macros map[string]string
	// Time is when the client connected; zero means now. A replayed
	// transaction gives the time it was recorded, which rules read as now.
	Time time.Time
	// Local says the mail was submitted on the MTA's host without SMTP
	// (Postfix's non_smtpd_milters path: sendmail, pickup): it is signed
	// as an internal client's.
	Local bool
	// Replay says the transaction is replayed from the journal: no message
	// content will come, so none is scanned (see Transaction.Replayed).
	Replay bool
	// Lookups, for a replay, are the answers rule functions got when the
	// transaction was live (Facts.Lookups, see Lookup).
	Lookups map[string]string
}

// MailInfo is what the front knows at MAIL FROM besides the address.
type MailInfo struct {
	AuthUser   string
	TLS        bool
	TLSVersion string
	QueueID    string
	Macros     map[string]string
	// Time is when the message began; zero means now (see ConnInfo.Time).
	Time time.Time
}

// snapshot is what a reload replaces together.
type snapshot struct {
	settings Settings
	checker  Checker
	rules    Rules
	// cache and grey may be shared with other processes (Redis); nil:
	// none. SetCache sets them, and Update keeps them.
	cache cache.Cache
	grey  *cache.Greylist
	rec   Recorder
}

// Engine turns check results and rules into verdicts. It is safe for
// concurrent use; each client connection gets its own Conn.
type Engine struct {
	cur atomic.Pointer[snapshot]
	log *slog.Logger
	obs Observer
	// limits counts messages over a bound, for metrics.
	limits limitCounts
	wg     sync.WaitGroup
	open   sync.Map   // front name → *atomic.Int64
	mu     sync.Mutex // serialises Update and SetCache
}

// NewEngine returns an engine. checker and rules may be nil: no checks, no rules.
func NewEngine(s Settings, checker Checker, rules Rules, log *slog.Logger) *Engine {
	if log == nil {
		log = slog.Default()
	}
	e := &Engine{log: log}
	e.Update(s, checker, rules)
	return e
}

// Update swaps in new settings, checks and rules. Transactions in flight
// finish on what they started with.
func (e *Engine) Update(s Settings, checker Checker, rules Rules) {
	if s.OnError != Accept {
		s.OnError = Tempfail
	}
	if s.DMARCOnTemperror != Accept {
		s.DMARCOnTemperror = Tempfail
	}
	if s.CheckTimeout <= 0 {
		s.CheckTimeout = 30 * time.Second
	}
	if s.MessageCPU <= 0 {
		s.MessageCPU = DefaultMessageCPU
	}
	if s.MIMEDepth <= 0 {
		s.MIMEDepth = DefaultMIMEDepth
	}
	if s.MIMEParts <= 0 {
		s.MIMEParts = DefaultMIMEParts
	}
	s.Content.MaxDepth, s.Content.MaxParts = s.MIMEDepth, s.MIMEParts
	e.mu.Lock()
	defer e.mu.Unlock()
	next := &snapshot{settings: s, checker: checker, rules: rules}
	if cur := e.cur.Load(); cur != nil {
		next.cache, next.grey, next.rec = cur.cache, cur.grey, cur.rec
	}
	e.cur.Store(next)
}

// SetCache gives the engine a cache for verdicts and the greylisting
// that greylist rules ask for; g may be nil (greylist rules then do
// nothing). Like Update, it may be called while serving: transactions in
// flight keep what they started with.
func (e *Engine) SetCache(c cache.Cache, g *cache.Greylist) {
	e.mu.Lock()
	defer e.mu.Unlock()
	next := *e.cur.Load()
	next.cache, next.grey = c, g
	e.cur.Store(&next)
}

// Observe sends the engine's decisions to o; call it before serving.
func (e *Engine) Observe(o Observer) { e.obs = o }

// Settings returns the settings in force.
func (e *Engine) Settings() Settings { return e.cur.Load().settings }

// Open reports how many connections of a front are open.
func (e *Engine) Open(front string) int64 { return e.counter(front).Load() }

func (e *Engine) counter(front string) *atomic.Int64 {
	if n, ok := e.open.Load(front); ok {
		return n.(*atomic.Int64)
	}
	n, _ := e.open.LoadOrStore(front, new(atomic.Int64))
	return n.(*atomic.Int64)
}

// Wait blocks until every connection has closed or ctx ends.
func (e *Engine) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for open connections: %w", ctx.Err())
	}
}
