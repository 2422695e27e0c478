package policy

import (
	"context"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"strings"
	"time"
)

// RcptOutcome is what happened to one recipient, for the log line.
type RcptOutcome struct {
	Rcpt   string `json:"rcpt"`
	Action Action `json:"action"`
	Code   int    `json:"code,omitempty"`
}

// Conn is one client connection: connection facts persist across the
// messages sent on it. A Conn is used by one goroutine at a time.
type Conn struct {
	e    *Engine
	snap *snapshot
	info ConnInfo

	facts   Facts
	matches []Match
	outcome []RcptOutcome
	// refused is the last refusal of a recipient, for the log line of a
	// message whose every recipient was refused.
	refused Verdict
	// greyNote says what greylisting did with the message, for its log line.
	greyNote string

	// connFinal holds a final verdict given at connect or HELO: it answers
	// every later stage of the connection.
	connFinal *Verdict
	// msgFinal holds the final verdict of the current message.
	msgFinal *Verdict
	// pending collects what applies at end of message: header edits and a
	// quarantine decided earlier.
	pendingHeaders []HeaderEdit
	pendingQuar    *Verdict
	// connHeaders are the header edits decided at connect and HELO: every
	// message of the connection gets them.
	connHeaders []HeaderEdit

	inMessage bool
	// reached is the last stage run, for the journal.
	reached Stage
	started time.Time
	scan    messageScan
	// headerBlock is the message's header as received, until end of headers.
	headerBlock []byte
	closed      bool

	// sizeGiven: the front told the whole message's size (SetSize).
	sizeGiven bool
	// degraded is set when a fallback answered for missing information.
	degraded bool
	// cpu is the CPU time charged to the current message (see charge);
	// overBudget says it passed Settings.MessageCPU.
	cpu        time.Duration
	overBudget bool
	// greyAllowKnown and greyAllowed remember whether the client's network
	// skips greylisting after a DMARC pass.
	greyAllowKnown, greyAllowed bool

	// connSign is a sign or no_sign given at connect or HELO; sign is
	// the current message's signing.
	connSign SignChoice
	sign     signState
}

// Connect opens a connection and gives the connect-stage verdict.
func (e *Engine) Connect(ctx context.Context, info ConnInfo) (*Conn, Verdict) {
	e.wg.Add(1)
	e.counter(info.Front).Add(1)
	c := &Conn{e: e, snap: e.cur.Load(), info: info, started: time.Now()}
	c.facts.IP = info.IP
	c.facts.ClientName = info.Name
	c.facts.Time = c.started
	if !info.Time.IsZero() {
		c.facts.Time = info.Time
	}
	c.facts.Macros = map[string]string{}
	c.mergeMacros(info.Macros)
	v := c.run(ctx, StageConnect, func(ctx context.Context) {
		if c.snap.checker != nil && info.IP.IsValid() {
			c.facts.IPRev, c.facts.DNSBL = c.snap.checker.Client(ctx, info.IP)
		}
	})
	v = c.keepConnHeaders(v)
	if v.Action.Final() {
		c.connFinal = &v
		c.logTransaction(v)
	}
	return c, v
}

// Helo records the HELO/EHLO name and gives the helo-stage verdict.
func (c *Conn) Helo(ctx context.Context, name string) Verdict {
	if c.connFinal != nil {
		return *c.connFinal
	}
	c.facts.Helo = name
	v := c.run(ctx, StageHelo, func(ctx context.Context) {
		ch := c.snap.checker
		if ch == nil {
			return
		}
		c.facts.SPFHelo = ch.SPFHelo(ctx, c.facts.IP, name)
		c.facts.DNSBL = append(c.facts.DNSBL, ch.Domains(ctx, name)...)
	})
	v = c.keepConnHeaders(v)
	if v.Action.Final() {
		c.connFinal = &v
		c.logTransaction(v)
	}
	return v
}

// Mail starts a message: it forgets the previous message's facts and
// keeps the connection's.
func (c *Conn) Mail(ctx context.Context, from string, info MailInfo) Verdict {
	c.resetMessage()
	if c.connFinal != nil {
		return *c.connFinal
	}
	c.snap = c.e.cur.Load() // a message runs on the rules it started with
	c.inMessage = true
	c.started = time.Now()
	c.facts.Time = c.started
	if !info.Time.IsZero() {
		c.facts.Time = info.Time
	}
	c.facts.MailFrom = strings.Trim(from, "<>")
	c.facts.AuthUser = info.AuthUser
	c.facts.TLS = info.TLS
	c.facts.TLSVersion = info.TLSVersion
	c.SetQueueID(info.QueueID)
	c.mergeMacros(info.Macros)
	c.scan = c.newScan()
	return c.runMessage(ctx, StageMail, func(ctx context.Context) {
		ch := c.snap.checker
		if ch == nil {
			return
		}
		c.facts.SPF = ch.SPF(ctx, c.facts.IP, c.facts.Helo, c.facts.MailFrom)
		if d := DomainOf(c.facts.MailFrom); d != "" {
			c.facts.DNSBL = append(c.facts.DNSBL, ch.Domains(ctx, d)...)
		}
	})
}

// Rcpt decides one recipient. A reject or tempfail here refuses that
// recipient only; the message goes on for the others.
func (c *Conn) Rcpt(ctx context.Context, rcpt string) Verdict {
	if v, done := c.decided(); done {
		return v
	}
	c.facts.Rcpt = strings.Trim(rcpt, "<>")
	v := c.settle(c.run(ctx, StageRcpt, nil))
	v = c.applyGreylist(ctx, StageRcpt, v)
	switch v.Action {
	case Reject, Tempfail:
		c.outcome = append(c.outcome, RcptOutcome{Rcpt: c.facts.Rcpt, Action: v.Action, Code: v.Code})
		c.refused = v
		return v
	}
	c.facts.Rcpts = append(c.facts.Rcpts, c.facts.Rcpt)
	c.outcome = append(c.outcome, RcptOutcome{Rcpt: c.facts.Rcpt, Action: Continue})
	if v.Action.Final() {
		c.finishMessage(v)
	}
	return v
}

// Header records one header field whose value lost the space after the
// colon; HeaderField takes it as written.
func (c *Conn) Header(name, value string) { c.HeaderField(name, " "+value) }

// HeaderField takes one header field as the message has it: raw is all
// that follows the colon, folding kept, without the final line end. The
// DKIM verifier then sees the field byte for byte, as "simple" header
// canonicalization needs; rules see it unfolded (RFC 5322 section 2.2.3).
func (c *Conn) HeaderField(name, raw string) {
	// The name without the white space obsolete syntax allows before the
	// colon: "Subject :" is a Subject field to rules, header edits and
	// the MTA's own count of fields by name.
	c.facts.Headers = append(c.facts.Headers, Header{Name: strings.TrimRight(name, " \t"), Value: Unfold(strings.TrimPrefix(raw, " "))})
	c.sign.raw = append(c.sign.raw, raw)
	// Collected and handed over once at end of headers: a write per field
	// would wake the verifiers' goroutines once per field.
	c.headerBlock = append(c.headerBlock, name...)
	c.headerBlock = append(c.headerBlock, ':')
	if strings.IndexByte(raw, '\n') < 0 {
		c.headerBlock = append(c.headerBlock, raw...)
	} else {
		c.headerBlock = append(c.headerBlock, strings.ReplaceAll(strings.ReplaceAll(raw, "\r\n", "\n"), "\n", "\r\n")...)
	}
	c.headerBlock = append(c.headerBlock, "\r\n"...)
}

// EndOfHeaders gives the data-stage verdict.
func (c *Conn) EndOfHeaders(ctx context.Context) Verdict {
	if v, done := c.decided(); done {
		if v.Action == Accept {
			c.startSigning() // accepted early, but signed all the same
		}
		c.scan.closeContentScan() // no rule will read what it finds
		return v
	}
	c.facts.Rcpt = ""
	c.scan.startMIME(c.facts.Headers)
	var err error
	c.charge(func() { err = c.scan.write(append(c.headerBlock, "\r\n"...)) })
	if err != nil {
		c.e.log.Warn("message verifier refused data", "err", err)
	}
	c.headerBlock = c.headerBlock[:0]
	c.startSigning()
	return c.runMessage(ctx, StageData, nil)
}

// Body takes the next chunk of the body, CRLF line ends.
func (c *Conn) Body(chunk []byte) error {
	c.facts.Size += int64(len(chunk))
	if c.sign.msg != nil {
		c.sign.msg.Write(chunk)
	}
	var err error
	c.charge(func() { err = c.scan.write(chunk) })
	if err != nil {
		return fmt.Errorf("verifying message body: %w", err)
	}
	return nil
}

// EndOfMessage gives the final verdict of the message, with the header
// edits to apply when it is accepted or quarantined.
func (c *Conn) EndOfMessage(ctx context.Context) Verdict {
	if v, done := c.decided(); done {
		if v.Action == Accept {
			// An accept decided before the message arrived skips the
			// checks, not the header edits: forged results still go and
			// ours is still added.
			v.Headers = slices.Concat(c.pendingHeaders, v.Headers, c.finalHeaders())
			v.Remove = ForgedAuthResults(c.facts.Headers, c.snap.settings.Hostname)
			v = c.signMessage(v)
		}
		return v
	}
	if !c.sizeGiven {
		for _, h := range c.facts.Headers {
			c.facts.Size += int64(len(h.Name) + len(h.Value) + 4)
		}
	}
	var verdictKey string
	if c.scan.digest != nil {
		verdictKey = c.verdictKey()
		if v, ok := c.cachedVerdict(ctx, verdictKey); ok {
			// Seen before: the stored verdict stands, the checks are not run again.
			c.scan.closeVerifier()
			c.scan.attachments(&c.facts)
			c.scan.contentFacts(&c.facts)
			c.finishMessage(v)
			return v
		}
	}
	var scanErr error
	v := c.run(ctx, StageEOM, func(ctx context.Context) {
		scanErr = c.scan.attachments(&c.facts)
		c.scan.contentFacts(&c.facts)
		// The URI lists are asked while DKIM keys are fetched.
		uris := c.askURILists(ctx)
		if c.scan.verifier != nil {
			c.facts.DKIM, c.facts.DMARC = c.scan.verifier.Finish(ctx, c.facts.SPF)
		}
		c.facts.URIBL = <-uris
	})
	if scanErr != nil && (v.Action == Continue || v.Action == Accept) {
		// An attachment could hide past the bound: the message cannot be checked.
		c.e.limits.mime.Add(1)
		v = c.fallback(c.snap.settings.OnError, StageEOM, "message cannot be checked: "+scanErr.Error())
	}
	c.recordDMARCPass(ctx)
	v = c.applyGreylist(ctx, StageEOM, v)
	if !v.Action.Final() || v.Action == Quarantine {
		v = c.endOfMessageChecks(v)
	}
	v = c.settle(v)
	if v.Action == Continue {
		v.Action = Accept
		v.Stage = StageEOM
	}
	if v.Action == Accept || v.Action == Quarantine {
		v.Headers = append(c.pendingHeaders, v.Headers...)
		v.Headers = append(v.Headers, c.finalHeaders()...)
		v.Remove = ForgedAuthResults(c.facts.Headers, c.snap.settings.Hostname)
		// Last: the signature covers every other edit.
		v = c.signMessage(v)
	}
	if v.Action != Accept && v.Action != Quarantine {
		v.Headers = nil
	}
	if verdictKey != "" {
		c.storeVerdict(ctx, verdictKey, v)
	}
	c.finishMessage(v)
	return v
}

// endOfMessageChecks applies what only the engine decides: temperror
// fallbacks, DMARC enforcement and score thresholds, in that order.
func (c *Conn) endOfMessageChecks(v Verdict) Verdict {
	s := c.snap.settings
	dm := c.facts.DMARC
	if dm != nil && dm.Result == "temperror" {
		return c.fallback(s.DMARCOnTemperror, StageEOM, "dmarc temperror")
	}
	// An SPF temperror is not a pass: unless DKIM carried DMARC, the
	// message could not be checked.
	if c.facts.SPF != nil && c.facts.SPF.Result == "temperror" && (dm == nil || dm.Result != "pass") {
		return c.fallback(s.OnError, StageEOM, "spf temperror")
	}
	if v.Action == Quarantine {
		return v
	}
	// A From that does not give exactly one Author Domain (none, several,
	// unparsable) is DMARC's permerror. Readers still show an address from
	// it, so accepting it would let any domain's policy be bypassed: a
	// malformed message is refused (RFC 9989 sections 4.4 and 11.5).
	if s.DMARCEnforce && dm != nil && dm.Result == "permerror" {
		return Verdict{Action: Reject, Code: 550, Enhanced: "5.7.1", Stage: StageEOM,
			Text: "From header cannot be evaluated for DMARC", Reason: "dmarc permerror: " + dm.Reason}
	}
	if s.DMARCEnforce && dm != nil && dm.Result == "fail" {
		switch dm.Policy {
		case "reject":
			return Verdict{Action: Reject, Code: 550, Enhanced: "5.7.1", Stage: StageEOM,
				Text: "Rejected by DMARC policy for " + dm.Domain, Reason: "dmarc policy reject"}
		case "quarantine":
			return Verdict{Action: Quarantine, Stage: StageEOM, Reason: "DMARC policy quarantine for " + dm.Domain}
		}
	}
	t := s.Thresholds
	score := c.facts.Score
	switch {
	case t.Reject > 0 && score >= t.Reject:
		// Points from rules a temporary error misled may not bounce mail;
		// the reject stands if the score reaches the threshold without them.
		if unsure, unknown := unsureScore(c.matches); unknown != "" && score-unsure < t.Reject {
			return c.fallback(s.OnError, StageEOM, fmt.Sprintf("score %.1f >= %.1f counts rules that read what a temporary error left unknown: %s", score, t.Reject, unknown))
		}
		return Verdict{Action: Reject, Stage: StageEOM, Text: "Message looks like spam", Reason: fmt.Sprintf("score %.1f >= %.1f", score, t.Reject)}
	case t.Quarantine > 0 && score >= t.Quarantine:
		return Verdict{Action: Quarantine, Stage: StageEOM, Reason: fmt.Sprintf("score %.1f >= %.1f", score, t.Quarantine)}
	}
	return v
}

// unsureScore adds up the points of scoring matches that read facts a
// temporary error left unknown, and names them.
func unsureScore(ms []Match) (float64, string) {
	var sum float64
	var parts []string
	for _, m := range ms {
		if m.Score > 0 && !m.Monitor && m.Unknown != "" {
			sum += m.Score
			parts = append(parts, m.Rule+": "+m.Unknown)
		}
	}
	return sum, strings.Join(parts, "; ")
}

// finalHeaders are the headers every accepted message gets.
func (c *Conn) finalHeaders() []HeaderEdit {
	s := c.snap.settings
	out := []HeaderEdit{{Name: "Authentication-Results", Value: AuthResults(s.Hostname, &c.facts), Prepend: true}}
	if s.ScoreHeader != "" {
		t := s.Thresholds
		if t.AddHeader <= 0 || c.facts.Score >= t.AddHeader {
			out = append(out, HeaderEdit{Name: s.ScoreHeader, Value: scoreValue(c.facts.Score, c.matches), Replace: true})
		}
	}
	return out
}

func scoreValue(score float64, matches []Match) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%.1f", score)
	var names []string
	for _, m := range matches {
		if m.Score != 0 && !m.Monitor {
			names = append(names, fmt.Sprintf("%s=%g", m.Rule, m.Score))
		}
	}
	if len(names) > 0 {
		b.WriteString(" (" + strings.Join(names, ", ") + ")")
	}
	return b.String()
}

// Abort forgets the current message; the connection goes on.
func (c *Conn) Abort() {
	if c.inMessage && c.msgFinal == nil {
		if len(c.facts.Rcpts) == 0 && c.refused.Action != Continue {
			// Every recipient was refused (greylisted, say) and the client
			// left: that refusal is what happened to the message.
			c.logTransaction(c.refused.WithDefaults())
		} else {
			c.logTransaction(Verdict{Action: Continue, Reason: "aborted by client or MTA"})
		}
	}
	c.resetMessage()
}

// Close ends the connection.
func (c *Conn) Close() {
	if c.closed {
		return
	}
	c.Abort()
	c.closed = true
	c.e.counter(c.info.Front).Add(-1)
	c.e.wg.Done()
}

// SetQueueID records the MTA's queue id once it is known.
func (c *Conn) SetQueueID(id string) {
	if id != "" {
		c.facts.QueueID = id
	}
}

// AddMacros merges MTA macros given at any stage.
func (c *Conn) AddMacros(m map[string]string) { c.mergeMacros(m) }

// Facts returns what is known so far. The caller must not keep it past the next call.
func (c *Conn) Facts() *Facts { return &c.facts }

// Matches returns the rules matched in the current message (and connection).
func (c *Conn) Matches() []Match { return c.matches }

// Outcomes returns what happened to each recipient so far.
func (c *Conn) Outcomes() []RcptOutcome { return c.outcome }

func (c *Conn) mergeMacros(m map[string]string) {
	maps.Copy(c.facts.Macros, m)
}

func (c *Conn) resetMessage() {
	c.scan.close()
	keep := c.facts
	c.facts = Facts{
		IP: keep.IP, ClientName: keep.ClientName, Time: keep.Time, Helo: keep.Helo, Macros: keep.Macros,
		// The connection's results stay; the message's go.
		Results: Results{IPRev: keep.IPRev, SPFHelo: keep.SPFHelo},
	}
	// Domain-list hits on the previous sender do not belong to the next message.
	for _, r := range keep.DNSBL {
		if r.Query == "" || r.Query == keep.IP.String() || r.Query == keep.Helo {
			c.facts.DNSBL = append(c.facts.DNSBL, r)
		}
	}
	c.matches = c.connMatches()
	// Points scored at connect and HELO count for every message.
	for _, m := range c.matches {
		if !m.Monitor {
			c.facts.Score += m.Score
		}
	}
	c.outcome = nil
	c.refused = Verdict{}
	c.greyNote = ""
	c.msgFinal = nil
	c.headerBlock = c.headerBlock[:0]
	c.pendingHeaders = append([]HeaderEdit(nil), c.connHeaders...)
	c.pendingQuar = nil
	c.inMessage = false
	c.reached = min(c.reached, StageHelo)
	c.sizeGiven = false
	c.degraded = false
	c.sign = signState{raw: c.sign.raw[:0]}
	c.cpu, c.overBudget = 0, false
}

// connMatches keeps the matches of connection stages for the next message.
func (c *Conn) connMatches() []Match {
	var out []Match
	for _, m := range c.matches {
		if m.Stage <= StageHelo {
			out = append(out, m)
		}
	}
	return out
}

// keepConnHeaders sets aside the header edits of a connect or HELO
// verdict for every message of the connection.
func (c *Conn) keepConnHeaders(v Verdict) Verdict {
	if len(v.Headers) > 0 {
		c.connHeaders = append(c.connHeaders, v.Headers...)
		c.pendingHeaders = append(c.pendingHeaders, v.Headers...)
		v.Headers = nil
	}
	return v
}

// decided returns the verdict already final for this message or connection.
func (c *Conn) decided() (Verdict, bool) {
	if c.connFinal != nil {
		return *c.connFinal, true
	}
	if c.msgFinal != nil {
		return *c.msgFinal, true
	}
	return Verdict{}, false
}

// runMessage runs a message stage and ends the message on a final verdict.
func (c *Conn) runMessage(ctx context.Context, st Stage, checks func(context.Context)) Verdict {
	v := c.settle(c.run(ctx, st, checks))
	if st >= StageRcpt {
		v = c.applyGreylist(ctx, st, v)
	}
	if v.Action.Final() {
		c.finishMessage(v)
	}
	return v
}

// settle holds back what can only be applied at end of message: header
// edits and quarantine. Fronts see Continue for those until then.
func (c *Conn) settle(v Verdict) Verdict {
	if v.Stage != StageEOM {
		c.pendingHeaders = append(c.pendingHeaders, v.Headers...)
		v.Headers = nil
		if v.Action == Quarantine {
			if c.pendingQuar == nil {
				q := v
				c.pendingQuar = &q
			}
			return Verdict{Action: Continue, Stage: v.Stage}
		}
		return v
	}
	if c.pendingQuar != nil && (v.Action == Continue || v.Action == Accept) {
		q := *c.pendingQuar
		q.Stage = StageEOM
		return q
	}
	return v
}

// run does one stage: checks, then rules, with panics and timeouts turned
// into the configured fallback rather than a crash or a silent accept.
func (c *Conn) run(ctx context.Context, st Stage, checks func(context.Context)) (v Verdict) {
	ctx, cancel := context.WithTimeout(c.withLookups(ctx), c.snap.settings.CheckTimeout)
	defer cancel()
	c.reached = max(c.reached, st)
	if o := c.e.obs; o != nil {
		start := time.Now()
		defer func() { o.Stage(c.info.Front, st, v, time.Since(start)) }()
	}
	defer func() {
		if r := recover(); r != nil {
			c.e.log.Error("internal error while filtering", "stage", st.String(), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			v = c.fallback(c.snap.settings.OnError, st, "internal error")
		}
	}()
	if c.overBudget {
		return c.fallback(c.snap.settings.OnError, st, "over the CPU budget")
	}
	timedOut := false
	c.charge(func() {
		if checks != nil {
			checks(ctx)
		}
		if timedOut = ctx.Err() != nil; !timedOut {
			v = c.evalRules(ctx, st)
		}
	})
	switch {
	case c.overBudget:
		return c.fallback(c.snap.settings.OnError, st, "over the CPU budget")
	case timedOut:
		return c.fallback(c.snap.settings.OnError, st, "checks timed out")
	}
	return v
}

func (c *Conn) evalRules(ctx context.Context, st Stage) Verdict {
	if c.snap.rules == nil {
		return Verdict{Action: Continue, Stage: st}
	}
	v := c.snap.rules.Eval(ctx, st, &c.facts, &c.matches)
	v.Stage = st
	c.noteSign(st, v)
	if (v.Action == Reject || v.Action == Discard) && v.Unknown != "" {
		// A temporary fault must not bounce or drop mail: the rule could not be sure.
		fb := c.fallback(c.snap.settings.OnError, st, "rule "+v.Rule+" read what a temporary error left unknown: "+v.Unknown)
		fb.Rule, fb.Unknown = v.Rule, v.Unknown
		return fb
	}
	if v.Action == Reject || v.Action == Tempfail {
		v = v.WithDefaults()
	}
	return v
}

func (c *Conn) fallback(a Action, st Stage, why string) Verdict {
	c.degraded = true
	if a == Accept {
		return Verdict{Action: Continue, Stage: st, Reason: why + "; accepted by on_error"}
	}
	return Verdict{Action: Tempfail, Stage: st, Reason: why}.WithDefaults()
}

func (c *Conn) finishMessage(v Verdict) {
	// Decided: what still streams in needs no verifying or scanning.
	c.scan.close()
	c.msgFinal = &v
	c.logTransaction(v)
}
