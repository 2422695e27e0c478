package policy

import (
	"context"
	"fmt"
	"io"
)

// Transaction is one client transaction from connect to end of message,
// given whole: `mailward check`, rule tests and the replay of a logged
// transaction hand it to Engine.Drive, which plays it stage by stage as a
// front would. What the checks find comes from the engine's Checker (a
// replay gives one that answers with the recorded results).
type Transaction struct {
	Conn ConnInfo
	Helo string
	// From is the MAIL FROM address; "" is the null sender.
	From  string
	Mail  MailInfo
	Rcpts []string
	// Header holds the header fields as ReadHeader returns them: Value is
	// all that follows the colon, folding kept.
	Header []Header
	// Body is the message body, LF or CRLF line ends; nil: an empty body.
	Body io.Reader
	// Size, when not 0, is the message's whole size as told rather than
	// measured (a replay whose body was not kept).
	Size int64
	// Attachments, when not nil, stand in for the attachment scan (a
	// replay whose body was not kept).
	Attachments []Attachment
	// URLs and Content, when Content is not nil, stand in for the
	// content scan (a replay whose body was not kept).
	URLs    []URL
	Content *Content
	// Replayed marks a transaction from the journal: the drive stops
	// after Reached, the last stage the recorded one got to, as its
	// client did; what came later was never seen.
	Replayed bool
	Reached  Stage
}

// beyond reports whether a replay has no record of stage st.
func (t *Transaction) beyond(st Stage) bool { return t.Replayed && st > t.Reached }

// Step is the answer of one stage, for recipients one per recipient.
type Step struct {
	Stage Stage
	// Subject is what the stage decided on: the HELO name, the sender or
	// the recipient; empty at connect, data and eom.
	Subject string
	Verdict Verdict
}

// Outcome is what a driven transaction came to.
type Outcome struct {
	// Verdict is the final answer, as the front would act on it: the
	// first final verdict of a stage, the last refusal when every
	// recipient was refused, else end of message. Reject and tempfail
	// carry their SMTP reply.
	Verdict Verdict
	// Steps are the stages that ran, in order.
	Steps []Step
	// Facts are what was known when the transaction ended.
	Facts   Facts
	Matches []Match
	Rcpts   []RcptOutcome
}

// Drive plays t through e as a front would: connect, HELO, MAIL, each
// recipient, the header, the body, end of message, stopping at the first
// final verdict. A recipient refused is left out and the others go on;
// when every one is refused, the message never comes. The error is only
// about reading t.Body.
func (e *Engine) Drive(ctx context.Context, t Transaction) (*Outcome, error) {
	out := &Outcome{Steps: make([]Step, 0, 5+len(t.Rcpts))}
	step := func(st Stage, subject string, v Verdict) {
		out.Steps = append(out.Steps, Step{Stage: st, Subject: subject, Verdict: v})
	}
	c, v := e.Connect(ctx, t.Conn)
	defer c.Close()
	step(StageConnect, "", v)
	v, err := drive(ctx, c, v, t, step)
	if err == nil && v.Action == Accept && out.Steps[len(out.Steps)-1].Stage != StageEOM {
		// Accepted before the message: a front still takes it and applies
		// the edits of end of message (forged results removed, ours added,
		// the DKIM signature over the body).
		if out.Steps[len(out.Steps)-1].Stage < StageData {
			for _, h := range t.Header {
				c.HeaderField(h.Name, h.Value)
			}
			c.EndOfHeaders(ctx)
		}
		if t.Body != nil {
			if _, err := io.Copy(&CRLFWriter{W: bodyWriter{c}}, t.Body); err != nil {
				return nil, fmt.Errorf("reading body: %w", err)
			}
		}
		v = c.EndOfMessage(ctx)
	}
	out.Facts = *c.Facts()
	out.Matches = append([]Match(nil), c.Matches()...)
	out.Rcpts = append([]RcptOutcome(nil), c.Outcomes()...)
	if err != nil {
		return nil, err
	}
	if v.Action == Reject || v.Action == Tempfail {
		v = v.WithDefaults()
	}
	out.Verdict = v
	return out, nil
}

// drive runs the stages after connect; v is the connect verdict.
func drive(ctx context.Context, c *Conn, v Verdict, t Transaction, step func(Stage, string, Verdict)) (Verdict, error) {
	if v.Action.Final() || t.beyond(StageHelo) {
		return v, nil
	}
	v = c.Helo(ctx, t.Helo)
	step(StageHelo, t.Helo, v)
	if v.Action.Final() || t.beyond(StageMail) {
		return v, nil
	}
	v = c.Mail(ctx, t.From, t.Mail)
	step(StageMail, t.From, v)
	if v.Action.Final() || t.beyond(StageRcpt) {
		return v, nil
	}
	if t.Attachments != nil {
		c.SetAttachments(t.Attachments)
	}
	if t.Content != nil {
		c.SetContent(t.URLs, t.Content)
	}
	accepted := 0
	for _, r := range t.Rcpts {
		rv := c.Rcpt(ctx, r)
		step(StageRcpt, r, rv)
		switch {
		case rv.Action == Reject || rv.Action == Tempfail:
			v = rv // when every recipient is refused, the last refusal stands
		case rv.Action.Final():
			return rv, nil
		default:
			accepted++
		}
	}
	if accepted == 0 {
		return v, nil // no recipient, no message; Continue when none was given
	}
	if t.beyond(StageData) {
		return Verdict{Action: Continue, Stage: StageRcpt}, nil
	}
	for _, h := range t.Header {
		c.HeaderField(h.Name, h.Value)
	}
	v = c.EndOfHeaders(ctx)
	step(StageData, "", v)
	if v.Action.Final() || t.beyond(StageEOM) {
		return v, nil
	}
	if t.Body != nil {
		if _, err := io.Copy(&CRLFWriter{W: bodyWriter{c}}, t.Body); err != nil {
			return v, fmt.Errorf("reading body: %w", err)
		}
	}
	if t.Size > 0 {
		c.SetSize(t.Size)
	}
	v = c.EndOfMessage(ctx)
	step(StageEOM, "", v)
	return v, nil
}

// bodyWriter feeds a Conn's Body as an io.Writer.
type bodyWriter struct{ c *Conn }

func (b bodyWriter) Write(p []byte) (int, error) {
	if err := b.c.Body(p); err != nil {
		return 0, err
	}
	return len(p), nil
}
