package policy

import (
	"context"
	"io"
	"net/netip"
	"time"

	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/dmarc"
	"github.com/mailward/mailward/checks/dnsbl"
	"github.com/mailward/mailward/checks/iprev"
	"github.com/mailward/mailward/checks/spf"
	"github.com/mailward/mailward/checks/uribl"
)

// Checker runs the authentication and reputation checks. The engine calls
// each method at the earliest stage its inputs are known. Implementations
// report DNS trouble as temperror results, never as Go errors: every
// outcome is a result the rules and Authentication-Results can show.
type Checker interface {
	// Client runs at connect: reverse DNS and the IP block and allow lists.
	Client(ctx context.Context, ip netip.Addr) (*iprev.Result, []dnsbl.Result)
	// Domains runs the domain lists over names seen later (HELO, sender domain).
	Domains(ctx context.Context, names ...string) []dnsbl.Result
	// URLs runs the URI blocklists over the message's links (eom). It is
	// called with none too, so that a replay can answer what it recorded.
	URLs(ctx context.Context, urls []URL) []uribl.Result
	// SPFHelo checks the HELO identity (RFC 7208 section 2.3).
	SPFHelo(ctx context.Context, ip netip.Addr, helo string) *spf.Result
	// SPF checks the MAIL FROM identity; the null sender uses postmaster@helo.
	SPF(ctx context.Context, ip netip.Addr, helo, sender string) *spf.Result
	// Message starts verifying one message.
	Message() MessageVerifier
}

// MessageVerifier receives the message as it streams in (header block, then
// body, CRLF line ends) and verifies DKIM and DMARC at the end. It must not
// hold the whole message in memory.
type MessageVerifier interface {
	io.Writer
	// Finish evaluates DKIM signatures and DMARC for the message written so
	// far, given the message's SPF result.
	Finish(ctx context.Context, spf *spf.Result) ([]dkim.Result, *dmarc.Result)
	// Close releases resources when a message is abandoned.
	Close()
}

// Match is one rule that matched, for logs, headers and `check --explain`.
type Match struct {
	Rule    string  `json:"rule"`
	Action  string  `json:"action"`
	Stage   Stage   `json:"stage"`
	Monitor bool    `json:"monitor,omitempty"`
	Score   float64 `json:"score,omitempty"`
	// Unknown names the facts the rule read that are unknown because a
	// check had a temporary error, as in Verdict.Unknown.
	Unknown string `json:"unknown,omitempty"`
}

// Rules is a compiled rule set, as the rules package builds it.
type Rules interface {
	// Eval evaluates, in file order, the rules due at stage (the earliest
	// stage at which everything they read is known) against f. Rules due at
	// StageRcpt run once per recipient with f.Rcpt set. Score rules add to
	// f.Score. Every match, enforced or monitored, is appended to *matches.
	// The first terminal enforced match decides; otherwise the result's
	// Action is Continue, possibly carrying header edits from add_header rules.
	// A match, and the verdict it decides, name in Unknown the facts the
	// rule read that a check's temporary error left unknown.
	Eval(ctx context.Context, stage Stage, f *Facts, matches *[]Match) Verdict
}

// RulesFunc lets an ordinary function serve as Rules.
type RulesFunc func(ctx context.Context, stage Stage, f *Facts, matches *[]Match) Verdict

// Eval calls fn.
func (fn RulesFunc) Eval(ctx context.Context, stage Stage, f *Facts, matches *[]Match) Verdict {
	return fn(ctx, stage, f, matches)
}

// Observer receives what the engine decided, for metrics. Calls come from
// many connections at once.
type Observer interface {
	// Stage is called once per stage the engine ran, with its verdict and how long it took.
	Stage(front string, st Stage, v Verdict, d time.Duration)
	// Transaction is called once per transaction, at its end.
	Transaction(front string, v Verdict, f *Facts, matches []Match, d time.Duration)
}

// Given is a Checker that answers with results known beforehand: the
// ones a journal line recorded, the ones a rule test states. It asks no
// DNS server and reads no message. A new Checker method answers from
// Results here, once, for every such checker; they override what they
// answer differently (which DNS list results go to which name).
type Given struct {
	Results
}

var _ Checker = (*Given)(nil)

// Client gives the reverse DNS result and every DNS list result.
func (g *Given) Client(context.Context, netip.Addr) (*iprev.Result, []dnsbl.Result) {
	return g.IPRev, g.DNSBL
}

// Domains gives none: Client gave them all.
func (g *Given) Domains(context.Context, ...string) []dnsbl.Result { return nil }

func (g *Given) URLs(context.Context, []URL) []uribl.Result { return g.URIBL }

func (g *Given) SPFHelo(context.Context, netip.Addr, string) *spf.Result { return g.Results.SPFHelo }

func (g *Given) SPF(context.Context, netip.Addr, string, string) *spf.Result { return g.Results.SPF }

// Message reads nothing; Finish gives the DKIM and DMARC results.
func (g *Given) Message() MessageVerifier { return givenMessage{g} }

type givenMessage struct{ g *Given }

func (givenMessage) Write(p []byte) (int, error) { return len(p), nil }

func (m givenMessage) Finish(context.Context, *spf.Result) ([]dkim.Result, *dmarc.Result) {
	return m.g.DKIM, m.g.DMARC
}

func (givenMessage) Close() {}
