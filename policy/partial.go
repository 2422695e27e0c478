package policy

// Some fronts see only part of a transaction: a Postfix policy service
// gets the envelope but never the message, and can add headers only
// before the message arrives. These let such a front say so.

// SkipContent tells the engine the front will never pass the message
// content: DKIM, DMARC and the attachment scan are not run for the
// current message, rather than run on an empty one. Call it after Mail.
func (c *Conn) SkipContent() {
	if c.verifier != nil {
		c.verifier.Close()
		c.verifier = nil
	}
	if c.mime != nil {
		c.mime.Close()
		c.mime = nil
	}
}

// TakeHeaders returns the header edits decided so far for the current
// message and forgets them, so that end of message does not return them
// again. For fronts that must apply edits before end of message.
func (c *Conn) TakeHeaders() []HeaderEdit {
	h := c.pendingHeaders
	c.pendingHeaders = nil
	return h
}
