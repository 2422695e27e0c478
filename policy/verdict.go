package policy

import (
	"fmt"
	"strconv"
	"strings"
)

// Action is what a verdict tells the MTA to do.
type Action int

const (
	// Continue means no decision yet: go on to the next stage.
	Continue Action = iota
	// Accept ends filtering: the message (or connection) is allowed.
	Accept
	Reject
	Tempfail
	Discard
	Quarantine
)

var actionNames = [...]string{"continue", "accept", "reject", "tempfail", "discard", "quarantine"}

func (a Action) String() string {
	if a < 0 || int(a) >= len(actionNames) {
		return fmt.Sprintf("action(%d)", int(a))
	}
	return actionNames[a]
}

// MarshalText makes actions readable in JSON and logs.
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// ParseAction reads an action name as written in config and rule files.
func ParseAction(name string) (Action, error) {
	for i, n := range actionNames {
		if n == name {
			return Action(i), nil
		}
	}
	return 0, fmt.Errorf("unknown action %q", name)
}

// Final reports whether the action ends filtering of the message.
func (a Action) Final() bool { return a != Continue }

// HeaderEdit adds a header, or replaces every existing one of that name.
type HeaderEdit struct {
	Name    string `json:"name"`
	Value   string `json:"value"`
	Replace bool   `json:"replace,omitempty"`
	// Prepend puts the header on top, where trace headers belong.
	Prepend bool `json:"-"`
}

// HeaderRef names one existing header: the Index-th (from 1) of that name.
type HeaderRef struct {
	Name  string `json:"name"`
	Index int    `json:"index"`
}

// Verdict is the engine's answer at one stage.
type Verdict struct {
	Action Action `json:"action"`
	// Code, Enhanced and Text make the SMTP reply for reject and tempfail.
	Code     int    `json:"smtp_code,omitempty"`
	Enhanced string `json:"enhanced_code,omitempty"`
	Text     string `json:"message,omitempty"`
	// Reason is why, for quarantine and logs.
	Reason string `json:"reason,omitempty"`
	// Rule names the rule that decided, if any.
	Rule  string `json:"rule,omitempty"`
	Stage Stage  `json:"stage"`
	// Headers are edits to apply at end of message.
	Headers []HeaderEdit `json:"headers_added,omitempty"`
	// Remove lists existing headers to delete at end of message.
	Remove []HeaderRef `json:"headers_removed,omitempty"`
	// Greylist says a greylist rule matched: with Action Continue, the
	// engine greylists the recipients (see Engine.SetCache).
	Greylist bool `json:"greylist,omitempty"`
	// Unknown names the facts the deciding rule read that are unknown
	// because a check had a temporary error ("fcrdns (iprev temperror)").
	// The engine never answers such a reject with a 5xx, nor discards.
	Unknown string `json:"unknown,omitempty"`
	// Sign is what a sign or no_sign rule asked for.
	Sign SignChoice `json:"sign,omitempty"`
}

// Default SMTP replies, as most MTAs and filters use them.
const (
	DefaultRejectCode     = 550
	DefaultRejectEnhanced = "5.7.1"
	DefaultRejectText     = "Message rejected by policy"
	DefaultTempCode       = 451
	DefaultTempEnhanced   = "4.7.1"
	DefaultTempText       = "Try again later"
)

// WithDefaults fills in the SMTP reply for reject and tempfail verdicts
// that came without one, and checks that a given code fits the action.
func (v Verdict) WithDefaults() Verdict {
	switch v.Action {
	case Reject:
		if v.Code < 500 || v.Code > 599 {
			v.Code = DefaultRejectCode
		}
		if !validEnhanced(v.Enhanced, '5') {
			v.Enhanced = DefaultRejectEnhanced
		}
		if v.Text == "" {
			v.Text = DefaultRejectText
		}
	case Tempfail:
		if v.Code < 400 || v.Code > 499 {
			v.Code = DefaultTempCode
		}
		if !validEnhanced(v.Enhanced, '4') {
			v.Enhanced = DefaultTempEnhanced
		}
		if v.Text == "" {
			v.Text = DefaultTempText
		}
	}
	return v
}

// validEnhanced checks an RFC 3463 status code whose class matches the reply.
func validEnhanced(s string, class byte) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || parts[0][0] != class {
		return false
	}
	for _, p := range parts[1:] {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 || len(p) > 3 {
			return false
		}
	}
	return true
}

// Reply formats the SMTP reply text: "550 5.7.1 text".
func (v Verdict) Reply() string {
	v = v.WithDefaults()
	return fmt.Sprintf("%d %s %s", v.Code, v.Enhanced, v.Text)
}
