package smtp

import (
	"strconv"
	"strings"
)

// caps are the ESMTP extensions of an EHLO reply that matter to the proxy.
type caps struct {
	known      bool
	pipelining bool
	eightBit   bool
	smtpUTF8   bool
	enhanced   bool
	dsn        bool
	startTLS   bool
	hasSize    bool
	size       int64 // 0: no fixed limit
	xclient    map[string]bool
	xforward   map[string]bool
	auth       []string // SASL mechanisms, upper case
}

func parseEHLO(r reply) caps {
	c := caps{known: true}
	for _, line := range r.text[1:] {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "PIPELINING":
			c.pipelining = true
		case "8BITMIME":
			c.eightBit = true
		case "SMTPUTF8":
			c.smtpUTF8 = true
		case "ENHANCEDSTATUSCODES":
			c.enhanced = true
		case "DSN":
			c.dsn = true
		case "STARTTLS":
			c.startTLS = true
		case "SIZE":
			c.hasSize = true
			if len(f) > 1 {
				c.size, _ = strconv.ParseInt(f[1], 10, 64)
			}
		case "XCLIENT":
			c.xclient = attrSet(f[1:])
		case "XFORWARD":
			c.xforward = attrSet(f[1:])
		case "AUTH":
			for _, m := range f[1:] {
				if len(c.auth) < 32 {
					c.auth = append(c.auth, strings.ToUpper(m))
				}
			}
		}
	}
	return c
}

func attrSet(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[strings.ToUpper(n)] = true
	}
	return m
}

// sizeHeadroom is kept from upstream's SIZE for the headers the proxy adds.
const sizeHeadroom = 16 << 10

// maxSize is the largest message the proxy takes, given upstream's limit.
func maxSize(configured int64, up caps) int64 {
	if up.hasSize && up.size > 0 {
		limit := max(up.size-sizeHeadroom, up.size/2)
		if configured <= 0 || limit < configured {
			return limit
		}
	}
	return configured
}

// offer is what the proxy advertises: its own PIPELINING, SIZE and
// STARTTLS, and the extensions it passes through only when upstream has
// them. CHUNKING is never offered.
func offer(up caps, size int64, startTLS bool, xclient bool, auth []string) []string {
	out := []string{"PIPELINING"}
	if size > 0 {
		out = append(out, "SIZE "+strconv.FormatInt(size, 10))
	} else {
		out = append(out, "SIZE")
	}
	if up.eightBit {
		out = append(out, "8BITMIME")
	}
	if up.smtpUTF8 {
		out = append(out, "SMTPUTF8")
	}
	if up.enhanced {
		out = append(out, "ENHANCEDSTATUSCODES")
	}
	if up.dsn {
		out = append(out, "DSN")
	}
	if startTLS {
		out = append(out, "STARTTLS")
	}
	if len(auth) > 0 {
		out = append(out, "AUTH "+strings.Join(auth, " "))
	}
	if xclient {
		out = append(out, "XCLIENT ADDR NAME HELO PROTO LOGIN PORT")
	}
	return out
}

// offered is what one session advertised, for checking its parameters.
type offered struct {
	eightBit, smtpUTF8, dsn bool
}

func offeredFrom(up caps) offered {
	return offered{eightBit: up.eightBit, smtpUTF8: up.smtpUTF8, dsn: up.dsn}
}
