package policy

import (
	"context"
	"fmt"
	"time"

	"github.com/mailward/mailward/cache"
)

// Greylisting runs when a greylist rule matched and no terminal rule
// decided the stage. At RCPT it decides that recipient; at DATA or end of
// message it checks every accepted recipient and tempfails the message if
// any of them is not through yet.
//
// A client network that once delivered a message passing DMARC skips
// greylisting afterwards: its mail is known to be authenticated.

// dmarcPassKey names the record of a network that delivered a DMARC pass.
func dmarcPassKey(network string) string { return "dmarcpass:v1:" + network }

// applyGreylist turns a greylist match into a tempfail or lets it go on.
// A cache error skips greylisting: mail keeps flowing.
func (c *Conn) applyGreylist(ctx context.Context, st Stage, v Verdict) Verdict {
	greylist := v.Greylist && v.Action == Continue
	v.Greylist = false
	if !greylist {
		return v
	}
	g := c.snap.grey
	if g == nil || !c.facts.IP.IsValid() {
		return v
	}
	if c.dmarcAllowed(ctx, g) {
		c.greylisted("skipped", "dmarc_pass")
		v.Reason = "greylisting skipped: the client's network delivered a DMARC pass"
		return v
	}
	rcpts := c.facts.Rcpts
	if st == StageRcpt {
		rcpts = []string{c.facts.Rcpt}
	}
	var wait time.Duration
	var why cache.Reason
	for _, r := range rcpts {
		d, err := g.Check(ctx, c.facts.IP, c.facts.MailFrom, r)
		if err != nil {
			c.e.log.Warn("greylisting skipped", "err", err.Error(), "queue_id", c.facts.QueueID)
			c.greylisted("skipped", "cache_error")
			v.Reason = "greylisting skipped: the cache did not answer"
			return v
		}
		if !d.Pass && d.RetryAfter >= wait {
			wait, why = d.RetryAfter, d.Reason
			if wait == 0 {
				wait = time.Nanosecond // still refused: at least one second
			}
		}
	}
	if wait == 0 {
		c.greylisted("passed", "")
		return v
	}
	c.greylisted("greylisted", string(why))
	secs := cache.Decision{RetryAfter: wait}.RetrySeconds()
	return Verdict{
		Action: Tempfail, Code: 451, Enhanced: "4.7.1", Stage: st, Rule: v.Rule,
		Text:   fmt.Sprintf("Greylisted, please retry in %d seconds", secs),
		Reason: "greylisted (" + string(why) + ")",
	}
}

// dmarcAllowed reports whether the client's network delivered a DMARC
// pass before; asked once per connection.
func (c *Conn) dmarcAllowed(ctx context.Context, g *cache.Greylist) bool {
	if c.greyAllowKnown {
		return c.greyAllowed
	}
	if c.snap.cache == nil {
		return false
	}
	network, err := g.Network(c.facts.IP)
	if err != nil {
		return false
	}
	_, ok, err := c.snap.cache.Get(ctx, dmarcPassKey(network))
	if err != nil {
		// Unknown: ask again next time rather than remember a guess.
		return false
	}
	c.greyAllowKnown, c.greyAllowed = true, ok
	return ok
}

// recordDMARCPass remembers the client's network after a DMARC pass.
func (c *Conn) recordDMARCPass(ctx context.Context) {
	g := c.snap.grey
	if g == nil || c.snap.cache == nil || c.facts.DMARC == nil || c.facts.DMARC.Result != "pass" || !c.facts.IP.IsValid() {
		return
	}
	network, err := g.Network(c.facts.IP)
	if err != nil {
		return
	}
	if c.greyAllowKnown && c.greyAllowed {
		return
	}
	if err := c.snap.cache.Set(ctx, dmarcPassKey(network), []byte("1"), time.Duration(g.Config().Expiry)); err != nil {
		c.e.log.Debug("not recording a DMARC pass for greylisting", "network", network, "err", err.Error())
	}
}

// GreylistObserver is an Observer that also counts greylisting
// outcomes: greylisted (reason new or early), passed, or skipped (reason
// dmarc_pass or cache_error).
type GreylistObserver interface {
	Greylist(front, outcome, reason string)
}

func (c *Conn) greylisted(outcome, reason string) {
	c.greyNote = outcome
	if reason != "" {
		c.greyNote += " (" + reason + ")"
	}
	if o, ok := c.e.obs.(GreylistObserver); ok {
		o.Greylist(c.info.Front, outcome, reason)
	}
}
