package policy

import (
	"slices"
	"strings"
)

// Some fronts see only part of a transaction: a Postfix policy service
// gets the envelope but never the message, and can add headers only
// before the message arrives. These let such a front say so.

// SkipContent tells the engine the front will never pass the message
// content: DKIM, DMARC and the attachment scan are not run for the
// current message, nor the content scan, rather than run on an empty one, and rules that read
// the header or content are skipped (Facts.NoContent). Call it after Mail.
func (c *Conn) SkipContent() {
	c.facts.NoContent = true
	c.scan.closeContent()
}

// TakeHeaders returns the header edits decided so far for the current
// message and forgets them, so that end of message does not return them
// again. For fronts that must apply edits before end of message.
func (c *Conn) TakeHeaders() []HeaderEdit {
	h := c.pendingHeaders
	c.pendingHeaders = nil
	return h
}

// RefuseRcpt records that the next hop refused a recipient the engine had
// accepted (a proxy's upstream said no): rules at end of message no longer
// see it, and the log line shows the refusal.
func (c *Conn) RefuseRcpt(rcpt string, code int) {
	rcpt = strings.Trim(rcpt, "<>")
	if i := slices.Index(c.facts.Rcpts, rcpt); i >= 0 {
		c.facts.Rcpts = slices.Delete(c.facts.Rcpts, i, i+1)
	}
	for i := len(c.outcome) - 1; i >= 0; i-- {
		if c.outcome[i].Rcpt == rcpt && c.outcome[i].Action == Continue {
			c.outcome[i].Action, c.outcome[i].Code = Reject, code
			if code/100 == 4 {
				c.outcome[i].Action = Tempfail
			}
			break
		}
	}
}

// SetContent records what the content scan found for a transaction whose
// body is not at hand (one replayed from the journal): the scan does not
// run, rules see these and no text.
func (c *Conn) SetContent(urls []URL, s *Content) {
	c.scan.closeContentScan()
	c.facts.URLs, c.facts.Content = urls, s
}

// SetSize records the message's whole size, header included, for a
// front that is told it rather than given the body.
func (c *Conn) SetSize(n int64) {
	c.facts.Size = n
	c.sizeGiven = true
}

// SetAttachments records the message's attachments for a transaction
// whose body is not at hand (one replayed from the journal): the
// attachment scan does not run, rules see these.
func (c *Conn) SetAttachments(a []Attachment) {
	c.scan.closeMIME()
	c.facts.Attachments = a
}
