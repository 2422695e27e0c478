package smtp

import (
	"encoding/base64"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxUserLen bounds the user name taken from an exchange.
const maxUserLen = 255

// saslUser reads the user a client named in its responses (base64, as
// sent): PLAIN's authorization identity, else its authentication
// identity; LOGIN's first response; CRAM-MD5's name before the digest;
// SCRAM's n= attribute (or a= when it acts for another). "" when none
// can be read. Nothing else of the responses is kept.
func saslUser(mech string, responses []string) string {
	if len(responses) == 0 {
		return ""
	}
	first, err := base64.StdEncoding.DecodeString(responses[0])
	if err != nil {
		return ""
	}
	var user string
	switch mech {
	case "PLAIN":
		parts := strings.SplitN(string(first), "\x00", 3)
		if len(parts) != 3 {
			return ""
		}
		user = parts[0]
		if user == "" {
			user = parts[1]
		}
	case "LOGIN":
		user = string(first)
	case "CRAM-MD5":
		// The client's only response: "user digest", the digest in hex.
		i := strings.LastIndexByte(string(first), ' ')
		if i < 0 {
			return ""
		}
		user = string(first[:i])
	case "SCRAM-SHA-1", "SCRAM-SHA-256":
		user = scramUser(string(first))
	}
	if !validUser(user) {
		return ""
	}
	return user
}

// scramUser reads a client-first-message (RFC 5802 section 7):
// gs2-header "n,a=authzid," or "n,,", then "n=user,r=nonce".
func scramUser(msg string) string {
	parts := strings.SplitN(msg, ",", 4)
	if len(parts) < 4 {
		return ""
	}
	name := func(attr, prefix string) string {
		v, ok := strings.CutPrefix(attr, prefix)
		if !ok {
			return ""
		}
		// "=2C" is a comma and "=3D" an equals sign in SCRAM names.
		return strings.NewReplacer("=2C", ",", "=3D", "=").Replace(v)
	}
	if a := name(parts[1], "a="); a != "" {
		return a
	}
	return name(parts[2], "n=")
}

// validUser accepts a name fit for logs, rules and XCLIENT LOGIN: UTF-8,
// no control characters, bounded.
func validUser(u string) bool {
	if u == "" || len(u) > maxUserLen || !utf8.ValidString(u) {
		return false
	}
	// The user goes to the log line and to rules: no control or format
	// characters (C0, DEL, C1, bidirectional overrides) that could
	// forge or hide what a log reader sees.
	for _, r := range u {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
