package smtp

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

func validHelo(name string) bool {
	if name == "" || len(name) > 255 {
		return false
	}
	for _, r := range name {
		if r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// validHostname accepts a host name as a resolver returns one: labels
// of letters, digits, '-' and '_' (seen in real PTR names), at most 63
// octets each and 253 in all, a final dot allowed. What XCLIENT NAME
// says reaches logs, Received headers and upstream's XCLIENT, so nothing
// else may pass, CR and LF least of all.
func validHostname(name string) bool {
	name = strings.TrimSuffix(name, ".")
	if name == "" || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// printable accepts a SASL login name: valid UTF-8 without control
// characters, at most 255 octets.
func printable(s string) bool {
	if s == "" || len(s) > 255 || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func parseXclient(arg string, ci clientInfo) (clientInfo, error) {
	fields := strings.Fields(arg)
	if len(fields) == 0 {
		return ci, errors.New("want XCLIENT attribute=value")
	}
	for _, f := range fields {
		k, raw, ok := strings.Cut(f, "=")
		if !ok {
			return ci, fmt.Errorf("bad XCLIENT attribute %q", truncate(f, 40))
		}
		v, err := xtextDecode(raw)
		if err != nil {
			return ci, fmt.Errorf("bad XCLIENT %s value: %v", k, err)
		}
		unavailable := v == "[UNAVAILABLE]" || v == "[TEMPUNAVAIL]"
		switch strings.ToUpper(k) {
		case "ADDR":
			if unavailable {
				return ci, errors.New("XCLIENT ADDR must be an address")
			}
			ip, err := netip.ParseAddr(strings.TrimPrefix(strings.TrimPrefix(v, "IPV6:"), "ipv6:"))
			if err != nil || ip.Zone() != "" {
				return ci, fmt.Errorf("bad XCLIENT ADDR %q", truncate(v, 60))
			}
			ci.ip = ip.Unmap()
		case "NAME":
			ci.name = ""
			if !unavailable {
				if !validHostname(v) {
					return ci, fmt.Errorf("bad XCLIENT NAME %q", truncate(v, 60))
				}
				ci.name = v
			}
		case "PORT":
			ci.port = 0
			if !unavailable {
				p, err := strconv.ParseUint(v, 10, 16)
				if err != nil {
					return ci, fmt.Errorf("bad XCLIENT PORT %q", truncate(v, 10))
				}
				ci.port = uint16(p)
			}
		case "HELO":
			ci.helo = v
			if unavailable {
				ci.helo = ""
			} else if !validHelo(v) {
				return ci, fmt.Errorf("bad XCLIENT HELO %q", truncate(v, 60))
			}
		case "PROTO":
			switch strings.ToUpper(v) {
			case "SMTP":
				ci.esmtp = false
			case "ESMTP":
				ci.esmtp = true
			default:
				if !unavailable {
					return ci, fmt.Errorf("bad XCLIENT PROTO %q", truncate(v, 20))
				}
			}
		case "LOGIN":
			ci.login = ""
			if !unavailable {
				if !printable(v) {
					return ci, fmt.Errorf("bad XCLIENT LOGIN %q", truncate(v, 60))
				}
				ci.login = v
			}
		case "REVERSE_NAME", "DESTADDR", "DESTPORT":
			// Known, and of no use to the checks.
		default:
			return ci, fmt.Errorf("unknown XCLIENT attribute %q", truncate(k, 40))
		}
	}
	return ci, nil
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return "", false
	}
	return s[len(prefix):], true
}

// parsePath reads "<address> PARAM=VALUE ..." as MAIL and RCPT carry it.
// The address is kept as given (quoted local parts, source routes) for
// upstream to judge; only what could break the command line is refused.
func parsePath(s string) (string, []string, error) {
	s = strings.TrimLeft(s, " ")
	var addr, rest string
	if strings.HasPrefix(s, "<") {
		end, quoted := -1, false
		for i := 1; i < len(s) && end < 0; i++ {
			switch s[i] {
			case '\\':
				i++
			case '"':
				quoted = !quoted
			case '>':
				if !quoted {
					end = i
				}
			}
		}
		if end < 0 {
			return "", nil, errors.New("unterminated address")
		}
		addr, rest = s[1:end], s[end+1:]
	} else {
		// Postfix takes a bare address too.
		addr, rest, _ = strings.Cut(s, " ")
		rest = " " + rest
	}
	if rest != "" && rest[0] != ' ' {
		return "", nil, errors.New("junk after address")
	}
	if len(addr) > 512 || strings.ContainsAny(addr, "<\t") {
		return "", nil, errors.New("bad address")
	}
	for _, r := range addr {
		if r < ' ' || r == 0x7f {
			return "", nil, errors.New("control character in address")
		}
	}
	return addr, strings.Fields(rest), nil
}

// mailParams renders the MAIL parameters upstream can take.
func mailParams(ps []param, c caps) string {
	var b strings.Builder
	for _, p := range ps {
		switch p.key {
		case "SIZE":
			if !c.hasSize {
				continue
			}
		case "BODY":
			if !c.eightBit {
				continue
			}
		}
		b.WriteString(" " + p.key)
		if p.key != "SMTPUTF8" {
			b.WriteString("=" + p.value)
		}
	}
	return b.String()
}
