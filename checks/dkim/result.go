package dkim

// Result is the outcome of verifying one DKIM-Signature (RFC 6376 section 6).
type Result struct {
	Domain    string `json:"domain"`
	Selector  string `json:"selector"`
	Algorithm string `json:"algorithm,omitempty"`
	// Result is one of pass, fail, neutral, policy, temperror, permerror, none.
	Result string `json:"result"`
	Reason string `json:"reason"`
	// Identifier is the i= tag (or @domain when absent).
	Identifier string `json:"identifier,omitempty"`
	// Signature is the first characters of b=, for header.b in Authentication-Results.
	Signature string `json:"-"`
}
