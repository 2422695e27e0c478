package policyd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"github.com/mailward/mailward/policy"
)

// errMalformed marks a request that arrived whole but cannot be used: the
// connection stays in step and the next request can follow.
var errMalformed = errors.New("malformed policy request")

// errTooLong marks a line or request over the limits: the rest of it is
// not read, so the connection cannot be trusted to be in step any more.
var errTooLong = errors.New("policy request too long")

// readAttrs reads one request: name=value lines up to an empty line. It
// returns io.EOF when the peer closed between requests, and
// io.ErrUnexpectedEOF when it closed within one.
func readAttrs(r *bufio.Reader) (map[string]string, error) {
	attrs := map[string]string{}
	size := 0
	var bad error
	for n := 0; ; n++ {
		line, err := r.ReadSlice('\n')
		size += len(line)
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			return nil, fmt.Errorf("%w: line %d longer than %d bytes", errTooLong, n+1, r.Size())
		case size > MaxRequest:
			return nil, fmt.Errorf("%w: more than %d bytes", errTooLong, MaxRequest)
		case err == io.EOF && n == 0 && len(line) == 0:
			return nil, io.EOF
		case err == io.EOF:
			return nil, fmt.Errorf("connection closed within a request: %w", io.ErrUnexpectedEOF)
		case err != nil:
			return nil, err
		}
		line = bytes.TrimSuffix(line[:len(line)-1], []byte{'\r'})
		if len(line) == 0 {
			if bad != nil {
				return nil, bad
			}
			return attrs, nil
		}
		if bad != nil {
			continue // read to the end of the request to stay in step
		}
		name, value, ok := bytes.Cut(line, []byte{'='})
		switch {
		case !ok:
			bad = fmt.Errorf("%w: line %d: %q is not name=value", errMalformed, n+1, clip(line))
		case len(name) == 0:
			bad = fmt.Errorf("%w: line %d: empty attribute name", errMalformed, n+1)
		case bytes.IndexByte(line, 0) >= 0:
			bad = fmt.Errorf("%w: line %d: NUL byte in attribute %q", errMalformed, n+1, clip(name))
		default:
			// Postfix allows keeping the first or the last of a repeated
			// attribute; the first cannot be overridden by appended lines.
			if _, dup := attrs[string(name)]; !dup {
				attrs[string(name)] = string(value)
			}
		}
	}
}

func clip(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}

// request is a request's attributes as the front uses them.
type request struct {
	attrs    map[string]string
	state    string // protocol_state, upper case
	client   string // client_address as sent
	ip       netip.Addr
	port     string
	name     string // verified client name; "" for unknown
	helo     string
	sender   string
	rcpt     string
	instance string
	queueID  string
	authUser string
	tls      string // encryption_protocol
	size     int64
}

// parseRequest checks the attributes mailward relies on.
func parseRequest(attrs map[string]string) (*request, error) {
	if len(attrs) == 0 {
		return nil, fmt.Errorf("%w: no attributes", errMalformed)
	}
	switch rq, ok := attrs["request"]; {
	case !ok:
		return nil, fmt.Errorf("%w: no request attribute", errMalformed)
	case rq != "smtpd_access_policy":
		return nil, fmt.Errorf("%w: request=%q, want smtpd_access_policy", errMalformed, clip([]byte(rq)))
	}
	r := &request{
		attrs:    attrs,
		state:    strings.ToUpper(attrs["protocol_state"]),
		client:   attrs["client_address"],
		port:     attrs["client_port"],
		name:     attrs["client_name"],
		helo:     attrs["helo_name"],
		sender:   attrs["sender"],
		rcpt:     attrs["recipient"],
		instance: attrs["instance"],
		queueID:  attrs["queue_id"],
		authUser: attrs["sasl_username"],
		tls:      attrs["encryption_protocol"],
	}
	if r.state == "" {
		return nil, fmt.Errorf("%w: no protocol_state attribute", errMalformed)
	}
	if r.client != "" && r.client != "unknown" {
		ip, err := netip.ParseAddr(r.client)
		if err != nil {
			return nil, fmt.Errorf("%w: client_address=%q is not an IP address", errMalformed, clip([]byte(r.client)))
		}
		r.ip = ip.Unmap()
	}
	if r.name == "unknown" {
		r.name = ""
	}
	if s := attrs["size"]; s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%w: size=%q is not a byte count", errMalformed, clip([]byte(s)))
		}
		r.size = n
	}
	return r, nil
}

// stage maps protocol_state to an engine stage; VRFY, ETRN and states
// newer than this code have none.
func (r *request) stage() (policy.Stage, bool) {
	switch r.state {
	case "CONNECT":
		return policy.StageConnect, true
	case "EHLO", "HELO":
		return policy.StageHelo, true
	case "MAIL":
		return policy.StageMail, true
	case "RCPT":
		return policy.StageRcpt, true
	case "DATA":
		return policy.StageData, true
	case "END-OF-MESSAGE":
		return policy.StageEOM, true
	}
	return 0, false
}

func (r *request) mailInfo() policy.MailInfo {
	return policy.MailInfo{
		AuthUser:   r.authUser,
		TLS:        r.tls != "",
		TLSVersion: r.tls,
		QueueID:    r.queueID,
	}
}
