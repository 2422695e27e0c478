package uribl

import "github.com/mailward/mailward/checks/dnsbl"

// Result is one zone's answer for one name: the shape of a DNS list's
// (Zone, Query, Codes, Names, Error; Allow is never set), so that rules,
// the journal and `check --json` read both alike.
type Result = dnsbl.Result
