package spf

// Result is the outcome of one SPF check_host() evaluation (RFC 7208 section 2.6).
type Result struct {
	// Result is one of none, neutral, pass, fail, softfail, temperror, permerror.
	Result string `json:"result"`
	// Domain is the domain whose policy was evaluated.
	Domain string `json:"domain,omitempty"`
	// Identity is "mailfrom" or "helo".
	Identity string `json:"identity,omitempty"`
	// Explanation is the expanded exp= text for a fail, if any.
	Explanation string `json:"explanation,omitempty"`
	// Reason says why, for logs and Authentication-Results comments.
	Reason string `json:"reason,omitempty"`
}
