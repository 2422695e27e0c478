package smtp

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"strconv"
	"strings"

	"github.com/mailward/mailward/policy"
)

func (s *session) cmdHelo(esmtp bool, name string) bool {
	if !validHelo(name) {
		s.protocolError(newReply(501, "5.5.4", "Syntax: EHLO hostname"))
		return true
	}
	s.abortTx()
	// Upstream was told the old name; the next transaction reconnects.
	s.forgetAuth()
	s.dropUpstream(true)
	v := s.conn.Helo(s.ctx, name)
	if v.Action == policy.Reject || v.Action == policy.Tempfail {
		s.reply(verdictReply(v))
		return true
	}
	s.client.helo, s.client.esmtp, s.heloDone = name, esmtp, true
	up := s.srv.upstreamCaps()
	s.maxSize = maxSize(s.settings.cfg.MaxMessageSize, up)
	host := s.settings.cfg.Hostname
	if !esmtp {
		s.offer = offered{}
		s.reply(reply{code: 250, text: []string{host}})
		return true
	}
	s.offer = offeredFrom(up)
	startTLS := s.settings.cert != nil && s.tlsState == nil
	s.reply(reply{code: 250, text: append([]string{host}, offer(up, s.maxSize, startTLS, s.trusted, s.authMechs(up))...)})
	return true
}

func (s *session) cmdStartTLS(arg string) bool {
	switch {
	case arg != "":
		s.protocolError(newReply(501, "5.5.4", "Syntax: STARTTLS"))
		return true
	case s.tlsState != nil:
		s.protocolError(newReply(554, "5.5.1", "Error: TLS already active"))
		return true
	case s.settings.cert == nil:
		s.protocolError(newReply(502, "5.5.1", "Error: command not implemented"))
		return true
	case s.tx != nil:
		s.protocolError(newReply(503, "5.5.1", "Error: MAIL transaction in progress"))
		return true
	}
	if n := s.br.Buffered(); n > 0 {
		// Plain text sent after STARTTLS must not count as sent over TLS.
		s.log.Warn("smtp: discarding commands pipelined after STARTTLS", "bytes", n)
		s.br.Discard(n)
	}
	s.reply(newReply(220, "2.0.0", "Ready to start TLS"))
	if err := s.bw.Flush(); err != nil {
		return false
	}
	if !s.handshake() {
		return false
	}
	s.setupIO()
	// RFC 3207: forget what the client said before TLS.
	s.heloDone, s.client.helo, s.offer = false, "", offered{}
	s.forgetAuth()
	s.dropUpstream(true)
	return true
}

func (s *session) cmdXclient(arg string) bool {
	if !s.trusted {
		s.log.Warn("smtp: XCLIENT from an untrusted address refused")
		s.protocolError(newReply(550, "5.7.0", "Error: insufficient authorization"))
		return true
	}
	if s.tx != nil {
		s.protocolError(newReply(503, "5.5.1", "Error: MAIL transaction in progress"))
		return true
	}
	ci, err := parseXclient(arg, s.client)
	if err != nil {
		s.protocolError(newReply(501, "5.5.4", "Error: "+err.Error()))
		return true
	}
	s.forgetAuth()
	s.dropUpstream(true)
	s.client = ci
	s.log = s.srv.log.With("client_ip", ci.ip.String(), "xclient_from", s.peer.Addr().String())
	s.heloDone, s.offer = ci.helo != "", offered{}
	s.maxSize = maxSize(s.settings.cfg.MaxMessageSize, s.srv.upstreamCaps())
	// The session starts over as the client named; the greeting is the reply.
	ok := s.connect()
	if ok && !s.refused && ci.helo != "" {
		s.conn.Helo(s.ctx, ci.helo)
	}
	return ok
}

func (s *session) cmdMail(arg string) bool {
	if !s.heloDone {
		s.protocolError(newReply(503, "5.5.1", "Error: send HELO/EHLO first"))
		return true
	}
	if s.tx != nil {
		s.protocolError(newReply(503, "5.5.1", "Error: nested MAIL command"))
		return true
	}
	rest, ok := cutPrefixFold(arg, "FROM:")
	if !ok {
		s.protocolError(newReply(501, "5.5.4", "Syntax: MAIL FROM:<address>"))
		return true
	}
	from, rawParams, err := parsePath(rest)
	if err != nil {
		s.protocolError(newReply(501, "5.1.7", "Bad sender address syntax"))
		return true
	}
	tx := &transaction{id: newID(), from: from}
	var size int64
	for _, p := range rawParams {
		k, v, hasValue := strings.Cut(p, "=")
		k = strings.ToUpper(k)
		switch k {
		case "SIZE":
			n, err := strconv.ParseInt(v, 10, 64)
			if !hasValue || err != nil || n < 0 {
				s.protocolError(newReply(501, "5.5.4", "Bad SIZE parameter"))
				return true
			}
			size = n
		case "BODY":
			switch strings.ToUpper(v) {
			case "7BIT":
			case "8BITMIME":
				if !s.offer.eightBit {
					s.protocolError(newReply(555, "5.5.4", "Unsupported BODY type"))
					return true
				}
				tx.needs.eightBit = true
			default:
				s.protocolError(newReply(555, "5.5.4", "Unsupported BODY type"))
				return true
			}
			v = strings.ToUpper(v)
		case "SMTPUTF8":
			if hasValue || !s.offer.smtpUTF8 {
				s.protocolError(newReply(555, "5.5.4", "Unsupported option: SMTPUTF8"))
				return true
			}
			tx.needs.smtpUTF8 = true
		case "RET", "ENVID":
			if !hasValue || !s.offer.dsn {
				s.protocolError(newReply(555, "5.5.4", "Unsupported option: "+k))
				return true
			}
			tx.needs.dsn = true
		case "AUTH":
			// RFC 4954 section 5: the proxy does not relay mail on
			// another's behalf, so the parameter is dropped; upstream
			// knows the authenticated user from its own session.
			continue
		default:
			s.protocolError(newReply(555, "5.5.4", "Unsupported option: "+truncate(k, 40)))
			return true
		}
		tx.params = append(tx.params, param{k, v})
	}
	if s.maxSize > 0 && size > s.maxSize {
		s.log.Info("smtp: message refused: declared size over the limit", "size", size, "limit", s.maxSize)
		s.reply(newReply(552, "5.3.4", "Message size exceeds fixed limit"))
		return true
	}
	info := policy.MailInfo{AuthUser: s.authUser(), QueueID: tx.id}
	if s.tlsState != nil {
		info.TLS, info.TLSVersion = true, tlsVersion(s.tlsState.Version)
	}
	v := s.conn.Mail(s.ctx, from, info)
	switch v.Action {
	case policy.Reject, policy.Tempfail:
		s.reply(verdictReply(v))
		return true
	case policy.Discard:
		tx.discard = true
		s.tx = tx
		s.reply(newReply(250, "2.1.0", "Ok"))
		return true
	}
	// An upstream session kept from an earlier message may have timed out
	// while the client was idle; nothing is lost yet, so start a new one.
	reused := s.up != nil
	r, err := s.mailUpstream(tx)
	var de *dialError
	if reused && !errors.As(err, &de) && (err != nil || r.code == 421) {
		s.log.Info("smtp: idle upstream session went away; reconnecting", "reply", r.String(), "err", err)
		s.dropUpstream(false)
		if s.auth.lost {
			// A new session upstream would not be authenticated.
			s.conn.Abort()
			s.reply(authLostReply(s.settings.cfg.Hostname))
			return false
		}
		r, err = s.mailUpstream(tx)
	}
	if err != nil {
		s.conn.Abort()
		if errors.As(err, &de) {
			return s.upstreamFailed(de.err, "MAIL")
		}
		return s.upstreamLost(err, nil)
	}
	s.reply(r)
	if !r.positive() {
		s.conn.Abort()
		return r.code != 421
	}
	tx.upMail = true
	s.tx = tx
	return true
}

func (s *session) cmdRcpt(arg string) bool {
	tx := s.tx
	if tx == nil {
		s.protocolError(newReply(503, "5.5.1", "Error: need MAIL command"))
		return true
	}
	if tx.broken {
		s.reply(newReply(451, "4.4.2", "Upstream connection lost; start the transaction again"))
		return true
	}
	rest, ok := cutPrefixFold(arg, "TO:")
	if !ok {
		s.protocolError(newReply(501, "5.5.4", "Syntax: RCPT TO:<address>"))
		return true
	}
	to, rawParams, err := parsePath(rest)
	if err != nil || to == "" {
		s.protocolError(newReply(501, "5.1.3", "Bad recipient address syntax"))
		return true
	}
	var fwd strings.Builder
	for _, p := range rawParams {
		k, v, hasValue := strings.Cut(p, "=")
		k = strings.ToUpper(k)
		if (k != "NOTIFY" && k != "ORCPT") || !hasValue || !s.offer.dsn {
			s.protocolError(newReply(555, "5.5.4", "Unsupported option: "+truncate(k, 40)))
			return true
		}
		fwd.WriteString(" " + k + "=" + v)
	}
	if max := s.settings.cfg.MaxRecipients; max > 0 && len(tx.rcpts) >= max {
		s.log.Info("smtp: recipient refused: too many recipients", "queue_id", tx.id, "limit", max)
		s.reply(newReply(452, "4.5.3", "Error: too many recipients"))
		return true
	}
	v := s.conn.Rcpt(s.ctx, to)
	switch v.Action {
	case policy.Reject, policy.Tempfail:
		s.reply(verdictReply(v))
		return true
	case policy.Discard:
		tx.discard = true
	}
	if tx.discard {
		tx.rcpts = append(tx.rcpts, to)
		s.reply(newReply(250, "2.1.5", "Ok"))
		return true
	}
	r, err := s.up.cmd("RCPT TO:<" + to + ">" + fwd.String())
	if err != nil {
		return s.upstreamLost(err, tx)
	}
	s.reply(r)
	if r.positive() {
		tx.rcpts = append(tx.rcpts, to)
		return true
	}
	// Rules at end of message see only the recipients upstream took.
	s.conn.RefuseRcpt(to, r.code)
	return r.code != 421
}

func (s *session) cmdData(arg string) bool {
	tx := s.tx
	switch {
	case arg != "":
		s.protocolError(newReply(501, "5.5.4", "Syntax: DATA"))
		return true
	case tx == nil:
		s.protocolError(newReply(503, "5.5.1", "Error: need RCPT command"))
		return true
	case tx.broken:
		s.reply(newReply(451, "4.4.2", "Upstream connection lost; start the transaction again"))
		return true
	case len(tx.rcpts) == 0:
		s.protocolError(newReply(554, "5.5.1", "Error: no valid recipients"))
		return true
	}
	s.reply(reply{code: 354, text: []string{"End data with <CR><LF>.<CR><LF>"}})
	if err := s.bw.Flush(); err != nil {
		return false
	}
	return s.receive(tx)
}

func (s *session) abortTx() {
	if s.tx == nil {
		return
	}
	s.conn.Abort()
	s.rsetUpstream(s.tx)
	s.tx = nil
}

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newID names a message in logs and Received headers.
func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return idEncoding.EncodeToString(b[:])
}
