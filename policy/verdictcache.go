package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"hash"
	"slices"
	"strings"
	"time"

	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/dmarc"
)

// DefaultVerdictTTL is the usual Settings.VerdictTTL.
const DefaultVerdictTTL = time.Hour

// A message seen again (an MTA retrying after a tempfail further down,
// the same message through a second MX) gets the verdict it got before,
// without verifying DKIM and DMARC again. The key is a SHA-256 of the
// envelope and of the content as it streamed past; nothing is buffered.
//
// Only verdicts reached on complete information are kept: never a
// tempfail, never one after a fallback (timeout, internal error), never
// one whose checks saw a DNS error. A temperror must be retried, not
// remembered.

// storedVerdict is a Verdict as kept in the cache, with the results the
// log line and observers show.
type storedVerdict struct {
	Action   string         `json:"action"` // Action has no UnmarshalText
	Code     int            `json:"code,omitempty"`
	Enhanced string         `json:"enhanced,omitempty"`
	Text     string         `json:"text,omitempty"`
	Reason   string         `json:"reason,omitempty"`
	Rule     string         `json:"rule,omitempty"`
	Headers  []storedHeader `json:"headers,omitempty"`
	Remove   []HeaderRef    `json:"remove,omitempty"`
	DKIM     []dkim.Result  `json:"dkim,omitempty"`
	DMARC    *dmarc.Result  `json:"dmarc,omitempty"`
	Score    float64        `json:"score,omitempty"`
}

// storedHeader keeps what HeaderEdit leaves out of JSON: Prepend puts
// Authentication-Results on top.
type storedHeader struct {
	Name    string `json:"name"`
	Value   string `json:"value"`
	Replace bool   `json:"replace,omitempty"`
	Prepend bool   `json:"prepend,omitempty"`
}

// verdictCaching reports whether this message's verdict may be looked up and kept.
func (c *Conn) verdictCaching() bool {
	return c.snap.cache != nil && c.snap.settings.VerdictTTL > 0
}

// newDigest starts hashing a message's content.
func (c *Conn) newDigest() hash.Hash {
	if !c.verdictCaching() {
		return nil
	}
	return sha256.New()
}

// verdictKey names the message: envelope, content and the authserv-id
// its Authentication-Results carry.
func (c *Conn) verdictKey() string {
	f := &c.facts
	h := sha256.New()
	rcpts := make([]string, len(f.Rcpts))
	for i, r := range f.Rcpts {
		rcpts[i] = strings.ToLower(r)
	}
	slices.Sort(rcpts)
	for _, s := range []string{c.snap.settings.Hostname, ipString(f), strings.ToLower(f.Helo), strings.ToLower(f.MailFrom), strings.Join(rcpts, ",")} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	h.Write(c.scan.digest.Sum(nil))
	return "verdict:v1:" + hex.EncodeToString(h.Sum(nil))
}

// cachedVerdict returns the verdict stored for this message, if any.
func (c *Conn) cachedVerdict(ctx context.Context, key string) (Verdict, bool) {
	ctx, cancel := context.WithTimeout(ctx, c.snap.settings.CheckTimeout)
	defer cancel()
	data, ok, err := c.snap.cache.Get(ctx, key)
	if err != nil || !ok {
		return Verdict{}, false
	}
	var s storedVerdict
	var a Action
	err = json.Unmarshal(data, &s)
	if err == nil {
		a, err = ParseAction(s.Action)
	}
	if err != nil || !cacheableAction(a) {
		c.e.log.Warn("ignoring a cached verdict that does not decode", "key", key)
		return Verdict{}, false
	}
	v := Verdict{Action: a, Code: s.Code, Enhanced: s.Enhanced, Text: s.Text, Reason: s.Reason,
		Rule: s.Rule, Stage: StageEOM, Remove: s.Remove}
	for _, h := range s.Headers {
		v.Headers = append(v.Headers, HeaderEdit(h))
	}
	if v.Reason == "" {
		v.Reason = "cached verdict"
	} else {
		v.Reason += " (cached verdict)"
	}
	c.facts.DKIM, c.facts.DMARC, c.facts.Score = s.DKIM, s.DMARC, s.Score
	return v, true
}

// storeVerdict keeps v for a retry of the same message when it was
// reached on complete information.
func (c *Conn) storeVerdict(ctx context.Context, key string, v Verdict) {
	if !cacheableAction(v.Action) || c.degraded || c.facts.temperror() {
		return
	}
	s := storedVerdict{Action: v.Action.String(), Code: v.Code, Enhanced: v.Enhanced, Text: v.Text, Reason: v.Reason,
		Rule: v.Rule, Remove: v.Remove, DKIM: c.facts.DKIM, DMARC: c.facts.DMARC, Score: c.facts.Score}
	for _, h := range v.Headers {
		s.Headers = append(s.Headers, storedHeader(h))
	}
	data, err := json.Marshal(s)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.snap.settings.CheckTimeout)
	defer cancel()
	if err := c.snap.cache.Set(ctx, key, data, c.snap.settings.VerdictTTL); err != nil {
		c.e.log.Debug("verdict not cached", "err", err.Error(), "queue_id", c.facts.QueueID)
	}
}

func cacheableAction(a Action) bool {
	switch a {
	case Accept, Reject, Quarantine, Discard:
		return true
	}
	return false
}
