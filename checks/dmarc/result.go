package dmarc

// Result is the outcome of DMARC evaluation for one message (RFC 9989).
type Result struct {
	// Result is one of pass, fail, none, temperror, permerror.
	Result string `json:"result"`
	// Policy is the policy in force for this message after sp/np/t: none, quarantine, reject.
	Policy string `json:"policy"`
	// Domain is the Author Domain (RFC5322.From).
	Domain string `json:"domain"`
	// PolicyDomain is where the record was found.
	PolicyDomain string `json:"policy_domain,omitempty"`
	// OrgDomain is the Organizational Domain found by the tree walk.
	OrgDomain string `json:"org_domain,omitempty"`
	// Testing is true for t=y or a legacy pct=0.
	Testing bool `json:"testing"`
	// Reason says why, e.g. "no From header" or "dkim and spf not aligned".
	Reason string `json:"reason,omitempty"`
	// SPFAligned and DKIMAligned say which identifiers gave an aligned
	// pass; aggregate reports carry both (RFC 9990 policy_evaluated).
	SPFAligned  bool `json:"spf_aligned,omitempty"`
	DKIMAligned bool `json:"dkim_aligned,omitempty"`
	// Record is the DMARC Policy Record found at PolicyDomain, nil when
	// none applied; aggregate reports publish its tags. Shared: read only.
	Record *Record `json:"-"`
}
