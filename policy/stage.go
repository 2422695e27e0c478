// Package policy is the transaction model and the engine that turns check
// results and rules into verdicts. It knows no protocol: the fronts in proxy/
// translate MTA conversations into calls on Engine and Conn.
package policy

import "fmt"

// Stage is a point in an SMTP transaction at which a verdict can be given.
type Stage int

// The stages in the order an SMTP transaction reaches them.
const (
	StageConnect Stage = iota
	StageHelo
	StageMail
	StageRcpt
	StageData // end of headers
	StageEOM  // end of message
)

var stageNames = [...]string{"connect", "helo", "mail", "rcpt", "data", "eom"}

// Stages lists every stage in order.
var Stages = []Stage{StageConnect, StageHelo, StageMail, StageRcpt, StageData, StageEOM}

func (s Stage) String() string {
	if s < 0 || int(s) >= len(stageNames) {
		return fmt.Sprintf("stage(%d)", int(s))
	}
	return stageNames[s]
}

// ParseStage reads a stage name as written in rule files and config.
func ParseStage(name string) (Stage, error) {
	for i, n := range stageNames {
		if n == name {
			return Stage(i), nil
		}
	}
	return 0, fmt.Errorf("unknown stage %q (want one of connect, helo, mail, rcpt, data, eom)", name)
}

// MarshalText makes stages readable in JSON and logs.
func (s Stage) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
