package dnsbl

// Result is one zone's answer for one query (RFC 5782).
type Result struct {
	Zone string `json:"zone"`
	// Query is what was looked up: the client IP, or a domain for domain lists.
	Query string `json:"query,omitempty"`
	// Codes are the A records returned, e.g. 127.0.0.2.
	Codes []string `json:"codes,omitempty"`
	// Names are the configured names for those codes, e.g. sbl.
	Names []string `json:"names,omitempty"`
	// Allow is true for DNSWL zones.
	Allow bool `json:"allow,omitempty"`
	// Error is set when the look-up failed (temporary).
	Error string `json:"error,omitempty"`
}
