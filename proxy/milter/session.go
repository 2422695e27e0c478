package milter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/mailward/mailward/policy"
)

// Milter protocol version 6, as Sendmail 8.14+ and Postfix 2.6+ speak it.
const protocolVersion = 6

// Actions (SMFIF_*) mailward may ask the MTA for.
const (
	actAddHeader    = 0x01
	actChangeHeader = 0x10
	actQuarantine   = 0x20
	wantActions     = actAddHeader | actChangeHeader | actQuarantine
)

// Protocol options (SMFIP_*).
const (
	optNoReplyHeader = 0x80     // no reply to each header field
	optNoUnknown     = 0x100    // do not send unknown SMTP commands
	optNoData        = 0x200    // do not send DATA
	optNoReplyBody   = 0x80000  // no reply to each body chunk
	optLeadingSpace  = 0x100000 // header values keep the space after the colon
	// mailward never answers a single header field or body chunk with
	// anything but continue, so the MTA need not wait for those replies:
	// that saves one round trip per header field.
	wantProtocol = optNoReplyHeader | optNoUnknown | optNoData | optNoReplyBody | optLeadingSpace
	// noReply are the options under which the MTA sends a packet and
	// does not wait for an answer (Postfix still sends the macros of a
	// stage it skips). Where such a packet cannot be acknowledged at once
	// (TCP outside Linux), they are not asked for: with Nagle on the
	// MTA's side, its next write would wait on our delayed ACK.
	noReply = optNoReplyHeader | optNoUnknown | optNoData | optNoReplyBody
)

// nul ends each string in a milter packet.
const nul = "\x00"

// session is one MTA connection. Everything the MTA told us on it (client
// address, HELO, macros) lives here for as long as the connection, across
// messages and rejected recipients.
type session struct {
	srv     *Server
	w       *wire
	ctx     context.Context
	actions uint32
	proto   uint32
	conn    *policy.Conn
	macros  map[string]string
}

// errQuit ends a session at the MTA's request.
var errQuit = errors.New("quit")

// run reads commands until the MTA quits or the connection fails.
func (s *session) run() error {
	defer s.endConn()
	if s.srv.unanswered != nil {
		s.w.unanswered = func(cmd byte) { s.srv.unanswered(s.w.conn, cmd, s.proto) }
	}
	for {
		cmd, data, err := s.w.read()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading milter command: %w", err)
		}
		err = s.handle(cmd, data)
		if ferr := s.w.flush(); ferr != nil {
			return fmt.Errorf("writing milter reply: %w", ferr)
		}
		if err == errQuit {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (s *session) handle(cmd byte, data []byte) error {
	switch cmd {
	case cmdOptNeg:
		return s.negotiate(data)
	case cmdMacro:
		s.macro(data)
		return nil
	case cmdConnect:
		return s.connect(data)
	case cmdQuit:
		return errQuit
	case cmdQuitNewConn:
		// Quit, but the MTA will use this connection for a new SMTP session.
		s.endConn()
		s.macros = nil
		return nil
	case cmdAbort:
		if s.conn != nil {
			s.conn.Abort()
		}
		s.w.release()
		return nil
	case cmdData, cmdUnknown:
		// DATA and unknown commands, if the MTA sends them anyway.
		s.w.put(replyContinue)
		return nil
	}
	c := s.conn
	if c == nil {
		return fmt.Errorf("milter command %q before connect", cmd)
	}
	switch cmd {
	case cmdHelo:
		name, _ := cstring(data)
		s.verdict(c.Helo(s.ctx, name))
	case cmdMail:
		args := cstrings(data)
		if len(args) == 0 {
			return errors.New("malformed MAIL command")
		}
		mac := s.macros
		info := policy.MailInfo{
			AuthUser:   mac["{auth_authen}"],
			TLS:        mac["{tls_version}"] != "",
			TLSVersion: mac["{tls_version}"],
			QueueID:    mac["i"],
		}
		s.verdict(c.Mail(s.ctx, strings.Trim(args[0], "<>"), info))
	case cmdRcpt:
		args := cstrings(data)
		if len(args) == 0 {
			return errors.New("malformed RCPT command")
		}
		s.verdict(c.Rcpt(s.ctx, strings.Trim(args[0], "<>")))
	case cmdHeader:
		name, rest := cstring(data)
		value, _ := cstring(rest)
		if s.proto&optLeadingSpace != 0 {
			c.HeaderField(name, value)
		} else {
			c.Header(name, value)
		}
		if s.proto&optNoReplyHeader == 0 {
			s.w.put(replyContinue)
		}
	case cmdEndOfHeaders:
		s.verdict(c.EndOfHeaders(s.ctx))
	case cmdBody:
		if err := c.Body(data); err != nil {
			s.srv.log.Warn("message body not checked", "queue_id", c.Facts().QueueID, "err", err)
		}
		if s.proto&optNoReplyBody == 0 {
			s.w.put(replyContinue)
		}
	case cmdEndOfMessage:
		if len(data) > 0 {
			// Sendmail may send the last body chunk with end of message.
			if err := c.Body(data); err != nil {
				s.srv.log.Warn("message body not checked", "queue_id", c.Facts().QueueID, "err", err)
			}
		}
		s.endOfMessage(c)
		s.w.release()
	default:
		return fmt.Errorf("unknown milter command %q", cmd)
	}
	return nil
}

// negotiate answers the MTA's options: the newest version both speak,
// and of the actions and options mailward wants, those the MTA offers.
func (s *session) negotiate(data []byte) error {
	if len(data) < 12 {
		return fmt.Errorf("malformed option negotiation (%d bytes)", len(data))
	}
	version := binary.BigEndian.Uint32(data)
	if version < 2 {
		return fmt.Errorf("milter protocol version %d is not supported (need 2 or later)", version)
	}
	version = min(version, protocolVersion)
	s.actions = binary.BigEndian.Uint32(data[4:]) & wantActions
	s.proto = binary.BigEndian.Uint32(data[8:]) & wantProtocol
	if !s.w.noReplySafe {
		s.proto &^= noReply
	}
	if s.actions != wantActions {
		s.srv.log.Warn("the MTA does not allow all header changes mailward makes",
			"offered", fmt.Sprintf("%#x", binary.BigEndian.Uint32(data[4:])), "wanted", fmt.Sprintf("%#x", wantActions))
	}
	s.srv.log.Debug("milter options negotiated", "version", version,
		"offered_actions", fmt.Sprintf("%#x", binary.BigEndian.Uint32(data[4:])), "actions", fmt.Sprintf("%#x", s.actions),
		"offered_options", fmt.Sprintf("%#x", binary.BigEndian.Uint32(data[8:])), "options", fmt.Sprintf("%#x", s.proto))
	var b [12]byte
	binary.BigEndian.PutUint32(b[:], version)
	binary.BigEndian.PutUint32(b[4:], s.actions)
	binary.BigEndian.PutUint32(b[8:], s.proto)
	s.w.put(replyOptNeg, string(b[:]))
	return nil
}

// macro merges a stage's macros into the connection's: the MTA sends
// each only at its own stage, and later stages need earlier ones.
func (s *session) macro(data []byte) {
	if len(data) < 1 {
		return
	}
	kv := cstrings(data[1:])
	if len(kv) < 2 {
		return
	}
	if s.macros == nil {
		s.macros = make(map[string]string, len(kv)/2)
	}
	m := make(map[string]string, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		s.macros[kv[i]] = kv[i+1]
		m[kv[i]] = kv[i+1]
	}
	if s.conn != nil {
		s.conn.AddMacros(m)
		if id := m["i"]; id != "" {
			s.conn.SetQueueID(id)
		}
	}
}

func (s *session) connect(data []byte) error {
	host, rest := cstring(data)
	if len(rest) < 1 {
		return errors.New("malformed connect command")
	}
	family, rest := rest[0], rest[1:]
	info := policy.ConnInfo{Name: host, Front: "milter", Macros: s.macros}
	if family == '4' || family == '6' {
		if len(rest) < 2 {
			return errors.New("malformed connect command: no port")
		}
		port := binary.BigEndian.Uint16(rest)
		addr, _ := cstring(rest[2:])
		// Sendmail writes IPv6 addresses as IPv6:ADDR.
		if len(addr) > 5 && strings.EqualFold(addr[:5], "ipv6:") {
			addr = addr[5:]
		}
		if ip, err := netip.ParseAddr(addr); err == nil {
			info.IP = ip.Unmap()
		}
		// Postfix's non_smtpd_milters (sendmail, pickup) connect as
		// localhost, 127.0.0.1, port 0: no TCP client has port 0.
		info.Local = port == 0 && host == "localhost" && info.IP.IsLoopback()
	}
	if host == "unknown" || strings.HasPrefix(host, "[") {
		// Postfix names a client without a verified name by its address.
		info.Name = ""
	}
	// A second connect on one MTA connection starts a new SMTP session.
	s.endConn()
	c, v := s.srv.engine.Connect(s.ctx, info)
	s.conn = c
	s.verdict(v)
	return nil
}

func (s *session) endOfMessage(c *policy.Conn) {
	v := c.EndOfMessage(s.ctx)
	if v.Action == policy.Quarantine && s.actions&actQuarantine == 0 {
		s.srv.log.Error("the MTA does not allow quarantine; deferring the message instead", "queue_id", c.Facts().QueueID)
		v = policy.Verdict{Action: policy.Tempfail, Code: 451, Enhanced: "4.7.1", Text: "Message held for review; try again later"}
	}
	if v.Action == policy.Accept || v.Action == policy.Quarantine {
		s.edits(v, c.Facts().Headers)
	}
	switch v.Action {
	case policy.Quarantine:
		s.w.put(replyQuarantine, oneLine(v.Reason), nul)
		s.w.put(replyAccept)
	case policy.Accept:
		s.w.put(replyAccept)
	default:
		s.verdict(v)
	}
}

// edits removes forged headers and adds ours, in milter terms.
func (s *session) edits(v policy.Verdict, have []policy.Header) {
	if s.actions&actChangeHeader != 0 {
		// Delete from the last so earlier indexes stay valid.
		for i := len(v.Remove) - 1; i >= 0; i-- {
			s.changeHeader(v.Remove[i].Index, v.Remove[i].Name)
		}
	}
	for _, h := range v.Headers {
		switch {
		case h.Replace && s.actions&actChangeHeader != 0:
			n := 0
			for _, x := range have {
				if strings.EqualFold(x.Name, h.Name) {
					n++
				}
			}
			for i := n; i >= 1; i-- {
				s.changeHeader(i, h.Name)
			}
		case h.Replace:
			continue
		}
		if s.actions&actAddHeader == 0 {
			continue
		}
		// The MTA folds on LF, as libmilter's smfi_addheader takes it.
		value := strings.ReplaceAll(h.Value, "\r\n", "\n")
		if s.proto&optLeadingSpace != 0 {
			value = " " + value
		}
		if h.Prepend {
			var idx [4]byte
			s.w.put(replyInsertHeader, string(idx[:]), h.Name, nul, value, nul)
		} else {
			s.w.put(replyAddHeader, h.Name, nul, value, nul)
		}
	}
}

// changeHeader with an empty value deletes the index-th field of that name.
func (s *session) changeHeader(index int, name string) {
	var idx [4]byte
	binary.BigEndian.PutUint32(idx[:], uint32(index))
	s.w.put(replyChangeHeader, string(idx[:]), name, nul, nul)
}

// verdict queues the reply to a stage before end of message.
func (s *session) verdict(v policy.Verdict) {
	switch v.Action {
	case policy.Accept:
		if s.actions&(actAddHeader|actChangeHeader) != 0 {
			// SMFIR_ACCEPT now would end the MTA's calls for this message
			// (or connection): forged Authentication-Results could no
			// longer be removed, nor ours added. The engine answers the
			// accept again at end of message, with its edits.
			s.w.put(replyContinue)
			return
		}
		s.w.put(replyAccept)
	case policy.Discard:
		s.w.put(replyDiscard)
	case policy.Reject, policy.Tempfail:
		s.w.put(replyCode, replyText(v.WithDefaults()), nul)
	default:
		s.w.put(replyContinue)
	}
}

func (s *session) endConn() {
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}
