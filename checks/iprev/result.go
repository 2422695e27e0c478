package iprev

// Result is the outcome of a reverse DNS check (RFC 8601 section 3, "iprev").
type Result struct {
	// Result is one of pass, fail, temperror, permerror.
	Result string `json:"result"`
	// PTR is the first forward-confirmed name, or the first PTR name if none confirmed.
	PTR string `json:"ptr"`
	// Names are all PTR names found.
	Names []string `json:"names,omitempty"`
	// FCrDNS is true when a PTR name resolves back to the client IP.
	FCrDNS bool `json:"fcrdns"`
}
