package smtp

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailward/mailward/policy"
)

// maxErrors is how many bad commands a client may send before it is cut off.
const maxErrors = 20

// bodyBatch is how much body is gathered before the engine and the spool see it.
const bodyBatch = 32 << 10

// keepAliveEvery is how often upstream hears a NOOP while a client uploads.
const keepAliveEvery = time.Minute

var errShutdown = errors.New("server shutting down")

// session is one client connection.
type session struct {
	srv         *Server
	st          *settings
	peer        netip.AddrPort // the TCP peer
	implicitTLS bool
	countedIP   netip.Addr // set by admitIP
	log         *slog.Logger
	ctx         context.Context
	cancel      context.CancelFunc

	// conn is written by the session goroutine under mu, and read by
	// Shutdown under mu.
	mu     sync.Mutex
	conn   net.Conn
	upSock net.Conn
	closed bool

	idle atomic.Bool // waiting for a command outside a transaction
	// deadline bounds the record being read: a whole command line, or the
	// whole message content. Set per record, not per read, so that a
	// client trickling a byte at a time cannot hold the session.
	deadline time.Time
	br       *bufio.Reader
	bw       *bufio.Writer
	writeErr error

	trusted  bool
	client   clientInfo
	tlsState *tls.ConnectionState
	ec       *policy.Conn
	refused  bool
	heloDone bool
	offer    offered
	maxSize  int64
	up       *upstream
	errors   int
	tx       *transaction
}

// transaction is one message from MAIL to the end of DATA.
type transaction struct {
	id      string
	from    string
	params  []param
	needs   offered // extensions the message uses
	rcpts   []string
	discard bool
	upMail  bool // upstream accepted MAIL
	broken  bool // upstream was lost; the client must start over
}

type param struct{ key, value string }

func (s *session) serve() {
	s.ctx, s.cancel = context.WithCancel(s.srv.ctx)
	defer s.finish()
	st := s.st
	s.log = s.srv.log.With("client_ip", s.peer.Addr().String())
	ip, port := s.peer.Addr(), s.peer.Port()
	raw := s.conn
	if st.cfg.ProxyProtocol && st.isTrusted(ip) {
		raw.SetReadDeadline(time.Now().Add(st.cfg.CommandTimeout))
		br := bufio.NewReaderSize(raw, 512)
		h, err := readProxyHeader(br)
		if err != nil {
			s.log.Warn("smtp: connection closed: bad or missing PROXY protocol header", "err", err)
			return
		}
		raw.SetReadDeadline(time.Time{})
		s.setConn(&bufferedConn{Conn: raw, r: br})
		if !h.Local && h.Src.Addr().IsValid() {
			ip, port = h.Src.Addr().Unmap(), h.Src.Port()
			s.log = s.srv.log.With("client_ip", ip.String(), "proxy", s.peer.Addr().String())
		}
	}
	s.client = clientInfo{ip: ip, port: port}
	s.trusted = st.isTrusted(ip)
	if s.implicitTLS {
		if !s.handshake() {
			return
		}
	}
	s.setupIO()
	if !s.srv.admitIP(s, ip) {
		s.log.Warn("smtp: connection refused: too many connections from this address", "limit", st.cfg.MaxConnectionsPerIP)
		s.reply(newReply(421, "4.7.0", st.cfg.Hostname+" Error: too many connections from "+ip.String()))
		s.bw.Flush()
		return
	}
	if !s.connect() {
		return
	}
	for {
		line, err := s.readCommand()
		if errors.Is(err, errLineTooLong) {
			s.protocolError(newReply(500, "5.5.2", "Error: line too long"))
		} else if err != nil {
			s.readFailed(err)
			return
		} else if !s.handle(line) {
			s.bw.Flush()
			return
		}
		if s.errors >= maxErrors {
			s.log.Warn("smtp: connection closed: too many errors", "errors", s.errors)
			s.reply(newReply(421, "4.7.0", s.st.cfg.Hostname+" Error: too many errors"))
			s.bw.Flush()
			return
		}
		if s.writeErr != nil {
			s.log.Debug("smtp: client went away", "err", s.writeErr)
			return
		}
	}
}

func (s *session) setConn(c net.Conn) {
	s.mu.Lock()
	s.conn = c
	s.mu.Unlock()
}

func (s *session) setUpstream(up *upstream) {
	s.mu.Lock()
	s.up = up
	s.upSock = nil
	if up != nil {
		s.upSock = up.sock
	}
	s.mu.Unlock()
}

// wakeIfIdle makes an idle session see the shutdown now rather than
// after its command timeout.
func (s *session) wakeIfIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idle.Load() && s.conn != nil {
		s.conn.SetReadDeadline(time.Now())
	}
}

func (s *session) forceClose() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		s.conn.Close()
	}
	if s.upSock != nil {
		s.upSock.Close()
	}
}

func (s *session) finish() {
	if s.tx != nil && s.ec != nil {
		s.ec.Abort()
	}
	if s.ec != nil {
		s.ec.Close()
	}
	if s.up != nil {
		s.up.quit()
		s.setUpstream(nil)
	}
	s.conn.Close()
	s.cancel()
}

func (s *session) handshake() bool {
	tc := tls.Server(s.conn, tlsServerConfig(s.srv))
	tc.SetDeadline(time.Now().Add(s.st.cfg.CommandTimeout))
	if err := tc.HandshakeContext(s.ctx); err != nil {
		s.log.Info("smtp: TLS handshake failed", "err", err)
		return false
	}
	tc.SetDeadline(time.Time{})
	state := tc.ConnectionState()
	s.tlsState = &state
	s.client.tls = true
	s.setConn(tc)
	return true
}

func (s *session) setupIO() {
	s.deadline = time.Now().Add(s.st.cfg.CommandTimeout)
	s.br = bufio.NewReaderSize(clientReader{s}, 64<<10)
	s.bw = bufio.NewWriterSize(clientWriter{s}, 4096)
}

// clientReader bounds every read by the deadline of the record being read
// and lets an idle session notice a shutdown.
type clientReader struct{ s *session }

func (r clientReader) Read(p []byte) (int, error) {
	s := r.s
	if err := s.conn.SetReadDeadline(s.deadline); err != nil {
		return 0, err
	}
	if s.idle.Load() && s.srv.closing.Load() {
		return 0, errShutdown
	}
	return s.conn.Read(p)
}

type clientWriter struct{ s *session }

func (w clientWriter) Write(p []byte) (int, error) {
	s := w.s
	if err := s.conn.SetWriteDeadline(time.Now().Add(s.st.cfg.CommandTimeout)); err != nil {
		return 0, err
	}
	return s.conn.Write(p)
}

func (s *session) reply(r reply) {
	if err := r.writeTo(s.bw); err != nil && s.writeErr == nil {
		s.writeErr = err
	}
}

func (s *session) protocolError(r reply) {
	s.errors++
	s.reply(r)
}

func verdictReply(v policy.Verdict) reply {
	v = v.WithDefaults()
	return newReply(v.Code, v.Enhanced, v.Text)
}

// readCommand flushes the replies owed when the client has nothing more
// pipelined, then reads the next command line.
func (s *session) readCommand() (string, error) {
	if s.br.Buffered() == 0 {
		if err := s.bw.Flush(); err != nil {
			return "", err
		}
	}
	s.deadline = time.Now().Add(s.st.cfg.CommandTimeout)
	s.idle.Store(s.tx == nil)
	defer s.idle.Store(false)
	return readLine(s.br, maxLine)
}

func (s *session) readFailed(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, errShutdown):
		s.reply(newReply(421, "4.3.2", s.st.cfg.Hostname+" Service shutting down"))
		s.bw.Flush()
	case errors.As(err, &ne) && ne.Timeout():
		if s.srv.closing.Load() && s.tx == nil {
			s.reply(newReply(421, "4.3.2", s.st.cfg.Hostname+" Service shutting down"))
		} else {
			s.log.Info("smtp: connection closed: client timed out", "in_transaction", s.tx != nil)
			s.reply(newReply(421, "4.4.2", s.st.cfg.Hostname+" Error: timeout exceeded"))
		}
		s.bw.Flush()
	case s.tx != nil:
		s.log.Info("smtp: client went away during a transaction", "err", err)
	default:
		s.log.Debug("smtp: client went away", "err", err)
	}
}

// connect runs the connect stage and greets the client.
func (s *session) connect() bool {
	if s.ec != nil {
		s.ec.Close()
	}
	ec, v := s.srv.engine.Connect(s.ctx, policy.ConnInfo{IP: s.client.ip, Name: s.client.name, Front: "smtp"})
	s.ec = ec
	s.refused = false
	host := s.st.cfg.Hostname
	switch v.Action {
	case policy.Reject:
		v = v.WithDefaults()
		s.refused = true
		s.reply(newReply(554, v.Enhanced, host+" "+v.Text))
	case policy.Tempfail:
		v = v.WithDefaults()
		s.reply(newReply(421, v.Enhanced, host+" "+v.Text))
		return false
	default:
		s.reply(reply{code: 220, text: []string{host + " ESMTP"}})
	}
	return true
}

// handle runs one command; false ends the session.
func (s *session) handle(line string) bool {
	if strings.ContainsAny(line, "\r\x00") {
		s.protocolError(newReply(500, "5.5.2", "Error: bad characters in command"))
		return true
	}
	verb, arg, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb)
	arg = strings.TrimSpace(arg)
	if s.refused && verb != "QUIT" && verb != "NOOP" {
		s.protocolError(newReply(503, "5.5.1", "Error: access denied"))
		return true
	}
	switch verb {
	case "EHLO", "HELO":
		return s.cmdHelo(verb == "EHLO", arg)
	case "STARTTLS":
		return s.cmdStartTLS(arg)
	case "XCLIENT":
		return s.cmdXclient(arg)
	case "MAIL":
		return s.cmdMail(arg)
	case "RCPT":
		return s.cmdRcpt(arg)
	case "DATA":
		return s.cmdData(arg)
	case "RSET":
		s.abortTx()
		s.reply(newReply(250, "2.0.0", "Ok"))
	case "NOOP":
		s.reply(newReply(250, "2.0.0", "Ok"))
	case "QUIT":
		s.reply(newReply(221, "2.0.0", "Bye"))
		return false
	case "VRFY":
		s.reply(newReply(252, "2.0.0", "Send some mail and delivery will be attempted"))
	case "GET", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS":
		s.log.Warn("smtp: connection closed: HTTP request on the SMTP port", "command", verb)
		return false
	case "PROXY":
		// A trusted proxy's header is read before the greeting; here it
		// comes from an address not allowed to send one.
		s.log.Warn("smtp: connection closed: PROXY protocol header not expected (untrusted address, or smtp.proxy_protocol off)")
		s.reply(newReply(550, "5.7.0", "Error: PROXY protocol not accepted from this address"))
		return false
	case "BDAT", "AUTH", "EXPN", "HELP", "ETRN", "TURN", "ATRN", "SEND", "SOML", "SAML":
		s.protocolError(newReply(502, "5.5.1", "Error: command not implemented"))
	case "":
		s.protocolError(newReply(500, "5.5.2", "Error: bad syntax"))
	default:
		s.protocolError(newReply(500, "5.5.2", "Error: command not recognized"))
	}
	return true
}

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

func (s *session) cmdHelo(esmtp bool, name string) bool {
	if !validHelo(name) {
		s.protocolError(newReply(501, "5.5.4", "Syntax: EHLO hostname"))
		return true
	}
	s.abortTx()
	// Upstream was told the old name; the next transaction reconnects.
	s.dropUpstream(true)
	v := s.ec.Helo(s.ctx, name)
	if v.Action == policy.Reject || v.Action == policy.Tempfail {
		s.reply(verdictReply(v))
		return true
	}
	s.client.helo, s.client.esmtp, s.heloDone = name, esmtp, true
	up := s.srv.upstreamCaps()
	s.maxSize = maxSize(s.st.cfg.MaxMessageSize, up)
	host := s.st.cfg.Hostname
	if !esmtp {
		s.offer = offered{}
		s.reply(reply{code: 250, text: []string{host}})
		return true
	}
	s.offer = offeredFrom(up)
	startTLS := s.st.cert != nil && s.tlsState == nil
	s.reply(reply{code: 250, text: append([]string{host}, offer(up, s.maxSize, startTLS, s.trusted)...)})
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
	case s.st.cert == nil:
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
	s.dropUpstream(true)
	s.client = ci
	s.log = s.srv.log.With("client_ip", ci.ip.String(), "xclient_from", s.peer.Addr().String())
	s.heloDone, s.offer = ci.helo != "", offered{}
	s.maxSize = maxSize(s.st.cfg.MaxMessageSize, s.srv.upstreamCaps())
	// The session starts over as the client named; the greeting is the reply.
	ok := s.connect()
	if ok && !s.refused && ci.helo != "" {
		s.ec.Helo(s.ctx, ci.helo)
	}
	return ok
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
			ci.name = v
			if unavailable {
				ci.name = ""
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
			ci.login = v
			if unavailable {
				ci.login = ""
			}
		case "REVERSE_NAME", "DESTADDR", "DESTPORT":
			// Known, and of no use to the checks.
		default:
			return ci, fmt.Errorf("unknown XCLIENT attribute %q", truncate(k, 40))
		}
	}
	return ci, nil
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
			// The proxy offers no AUTH; the parameter means nothing here.
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
	info := policy.MailInfo{AuthUser: s.client.login, QueueID: tx.id}
	if s.tlsState != nil {
		info.TLS, info.TLSVersion = true, tlsVersion(s.tlsState.Version)
	}
	v := s.ec.Mail(s.ctx, from, info)
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
		r, err = s.mailUpstream(tx)
	}
	if err != nil {
		s.ec.Abort()
		if errors.As(err, &de) {
			return s.upstreamFailed(de.err, "MAIL")
		}
		return s.upstreamLost(err, nil)
	}
	s.reply(r)
	if !r.positive() {
		s.ec.Abort()
		return r.code != 421
	}
	tx.upMail = true
	s.tx = tx
	return true
}

// dialError is a failure to get an upstream session at all.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// mailUpstream starts the transaction upstream: a session if there is
// none, XFORWARD if that is how upstream learns the client, then MAIL.
func (s *session) mailUpstream(tx *transaction) (reply, error) {
	if err := s.ensureUpstream(); err != nil {
		return reply{}, &dialError{err}
	}
	c := s.up.caps
	if tx.needs.eightBit && !c.eightBit || tx.needs.smtpUTF8 && !c.smtpUTF8 || tx.needs.dsn && !c.dsn {
		s.log.Warn("smtp: upstream no longer offers an extension the client uses", "upstream", s.st.cfg.Upstream)
		return newReply(451, "4.3.0", "Upstream cannot take this message now; try again later"), nil
	}
	if s.up.ident == identXFORWARD {
		if err := s.up.xforward(s.upstreamClient(), tx.id, s.log); err != nil {
			return reply{}, err
		}
	}
	return s.up.cmd("MAIL FROM:<" + tx.from + ">" + mailParams(tx.params, c))
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
	if max := s.st.cfg.MaxRecipients; max > 0 && len(tx.rcpts) >= max {
		s.log.Info("smtp: recipient refused: too many recipients", "queue_id", tx.id, "limit", max)
		s.reply(newReply(452, "4.5.3", "Error: too many recipients"))
		return true
	}
	v := s.ec.Rcpt(s.ctx, to)
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
	s.ec.RefuseRcpt(to, r.code)
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

// receive reads the message, feeding the engine and the spool as it
// comes, then answers according to the verdict and upstream.
func (s *session) receive(tx *transaction) bool {
	s.deadline = time.Now().Add(s.st.cfg.DataTimeout)
	dr := newDataReader(s.br)
	hp := &headerParser{}
	sp := &spool{dir: s.st.spoolDir}
	defer sp.close()
	stopKeepAlive := func() error { return nil }
	if s.up != nil && tx.upMail && !tx.discard {
		stopKeepAlive = s.up.keepAlive(keepAliveEvery)
	}
	var (
		size    int64
		refusal *reply          // answered once the data has ended
		early   *policy.Verdict // a reject or tempfail at end of headers
		bodyErr bool
	)
	// Body bytes go to the engine and the spool in batches, not line by line.
	batch := make([]byte, 0, bodyBatch)
	flushBody := func() {
		if len(batch) == 0 {
			return
		}
		if err := s.ec.Body(batch); err != nil && !bodyErr {
			bodyErr = true
			s.log.Warn("smtp: message body not checked", "queue_id", tx.id, "err", err)
		}
		if !tx.discard {
			if _, err := sp.Write(batch); err != nil && refusal == nil {
				s.log.Error("smtp: cannot spool message", "queue_id", tx.id, "err", err)
				r := newReply(452, "4.3.1", "Insufficient system storage")
				refusal = &r
			}
		}
		batch = batch[:0]
	}
	refuse := func(r reply) {
		if refusal == nil {
			refusal = &r
		}
	}
	endHeaders := func() {
		for _, h := range hp.headers {
			s.ec.HeaderField(h.name, h.afterColon())
		}
		v := s.ec.EndOfHeaders(s.ctx)
		switch v.Action {
		case policy.Reject, policy.Tempfail:
			early = &v
		case policy.Discard:
			tx.discard = true
		}
	}
	for {
		frag, err := dr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// finish aborts the transaction and closes both sides.
			stopKeepAlive()
			s.readFailed(err)
			return false
		}
		size += int64(len(frag))
		if refusal != nil || early != nil {
			continue
		}
		if s.maxSize > 0 && size > s.maxSize {
			s.log.Info("smtp: message refused: over the size limit", "queue_id", tx.id, "limit", s.maxSize)
			refuse(newReply(552, "5.3.4", "Message size exceeds fixed limit"))
			continue
		}
		if !hp.done {
			body, err := hp.feed(frag)
			if err != nil {
				s.log.Info("smtp: message refused: header block too large", "queue_id", tx.id, "limit", maxHeaderBytes)
				refuse(newReply(552, "5.3.4", "Message header size exceeds limit"))
				continue
			}
			if !hp.done {
				continue
			}
			if endHeaders(); early != nil {
				continue
			}
			if frag = body; len(frag) == 0 {
				continue
			}
		}
		batch = append(batch, frag...)
		if len(batch) >= bodyBatch {
			flushBody()
		}
	}
	if refusal == nil && early == nil {
		flushBody()
	}
	if refusal == nil && early == nil && !hp.done {
		hp.finish()
		hp.done = true
		endHeaders()
	}
	upErr := stopKeepAlive()
	s.tx = nil
	switch {
	case refusal != nil:
		s.ec.Abort()
		s.rsetUpstream(tx)
		s.reply(*refusal)
		return true
	case early != nil:
		s.rsetUpstream(tx)
		s.reply(verdictReply(*early))
		return true
	}
	v := s.ec.EndOfMessage(s.ctx)
	if tx.discard {
		v.Action = policy.Discard
	}
	var extra []policy.HeaderEdit
	switch v.Action {
	case policy.Reject, policy.Tempfail:
		s.rsetUpstream(tx)
		s.reply(verdictReply(v))
		return true
	case policy.Discard:
		s.rsetUpstream(tx)
		s.log.Info("smtp: message discarded", "queue_id", tx.id, "from", tx.from, "rcpts", len(tx.rcpts))
		s.reply(newReply(250, "2.0.0", "Ok: queued as "+tx.id))
		return true
	case policy.Quarantine:
		reason := oneLine(v.Reason)
		if reason == "" {
			reason = "quarantined by policy"
		}
		switch s.st.cfg.Quarantine {
		case "tempfail":
			s.rsetUpstream(tx)
			s.log.Info("smtp: quarantined message deferred", "queue_id", tx.id, "reason", reason)
			s.reply(newReply(451, "4.7.1", "Message held for review; try again later"))
			return true
		case "reject":
			s.rsetUpstream(tx)
			s.log.Info("smtp: quarantined message rejected", "queue_id", tx.id, "reason", reason)
			s.reply(newReply(550, "5.7.1", "Message rejected by policy"))
			return true
		}
		extra = append(extra, policy.HeaderEdit{Name: s.st.cfg.QuarantineHeader, Value: reason})
	}
	return s.relay(tx, v, extra, hp, sp, size, upErr)
}

// relay sends an accepted message upstream and passes on upstream's reply.
func (s *session) relay(tx *transaction, v policy.Verdict, extra []policy.HeaderEdit, hp *headerParser, sp *spool, size int64, upErr error) bool {
	if upErr != nil || s.up == nil || !tx.upMail {
		if upErr == nil {
			upErr = errors.New("no upstream transaction")
		}
		return s.upstreamLost(upErr, nil)
	}
	var top []policy.HeaderEdit
	if s.up.ident == identReceived {
		top = append(top, s.received(tx))
	}
	edits := planEdits(hp.headers, v, append(top, extra...))
	body, err := sp.reader()
	if err != nil {
		s.log.Error("smtp: cannot read spooled message", "queue_id", tx.id, "err", err)
		s.rsetUpstream(tx)
		s.reply(newReply(451, "4.3.0", "Local error; try again later"))
		return true
	}
	r, err := s.up.data(func(w io.Writer) error { return edits.write(w, hp.headers, hp.blank, body) })
	if err != nil {
		return s.upstreamLost(err, nil)
	}
	s.reply(r)
	msg := "smtp: message relayed"
	if !r.positive() {
		msg = "smtp: upstream refused the message"
	}
	s.log.Info(msg, "queue_id", tx.id, "from", tx.from, "rcpts", len(tx.rcpts), "size", size,
		"verdict", v.Action.String(), "upstream_reply", r.String())
	return r.code != 421
}

// received is the trace header for an upstream that cannot be told the
// client by XCLIENT or XFORWARD.
func (s *session) received(tx *transaction) policy.HeaderEdit {
	ci := s.upstreamClient()
	name := ci.name
	if name == "" {
		name = "unknown"
	}
	with := ci.proto()
	if ci.tls {
		with += "S"
	}
	if ci.login != "" {
		with += "A"
	}
	v := fmt.Sprintf("from %s (%s [%s])\r\n\tby %s (mailward) with %s id %s", ci.helo, name, ci.ip, s.st.cfg.Hostname, with, tx.id)
	if len(tx.rcpts) == 1 {
		v += "\r\n\tfor <" + tx.rcpts[0] + ">"
	}
	v += "; " + time.Now().Format(time.RFC1123Z)
	return policy.HeaderEdit{Name: "Received", Value: v}
}

// upstreamClient is the client as upstream is told: its verified name
// comes from the iprev check unless a trusted XCLIENT gave one.
func (s *session) upstreamClient() *clientInfo {
	ci := s.client
	if ci.name == "" {
		if r := s.ec.Facts().IPRev; r != nil && r.Result == "pass" && r.FCrDNS {
			ci.name = strings.TrimSuffix(r.PTR, ".")
		}
	}
	ci.tls = s.tlsState != nil
	return &ci
}

func (s *session) ensureUpstream() error {
	if s.up != nil {
		return nil
	}
	up, err := dialUpstream(s.ctx, s.st, s.upstreamClient(), s.log)
	if err != nil {
		return err
	}
	s.setUpstream(up)
	s.srv.learned(up.caps)
	return nil
}

// upstreamFailed answers a command when no upstream session could be had.
func (s *session) upstreamFailed(err error, during string) bool {
	var re *replyError
	if errors.As(err, &re) {
		s.log.Info("smtp: upstream refused the session", "during", during, "reply", re.r.String())
		s.reply(re.r)
		return re.r.code != 421
	}
	s.log.Warn("smtp: upstream unavailable", "upstream", s.st.cfg.Upstream, "err", err)
	s.reply(newReply(451, "4.4.1", "Upstream server unavailable; try again later"))
	return true
}

// upstreamLost answers a command after the upstream connection broke:
// nothing was acknowledged, and the client's transaction cannot go on.
func (s *session) upstreamLost(err error, tx *transaction) bool {
	s.log.Warn("smtp: upstream connection lost", "upstream", s.st.cfg.Upstream, "err", err)
	s.dropUpstream(false)
	if tx != nil {
		tx.broken = true
		s.ec.Abort()
	}
	s.reply(newReply(451, "4.4.2", "Upstream connection lost; try again later"))
	return true
}

func (s *session) rsetUpstream(tx *transaction) {
	if s.up == nil || !tx.upMail {
		return
	}
	if r, err := s.up.cmd("RSET"); err != nil || r.code != 250 {
		s.dropUpstream(false)
	}
}

func (s *session) abortTx() {
	if s.tx == nil {
		return
	}
	s.ec.Abort()
	s.rsetUpstream(s.tx)
	s.tx = nil
}

func (s *session) dropUpstream(polite bool) {
	if s.up == nil {
		return
	}
	if polite {
		s.up.quit()
	} else {
		s.up.close()
	}
	s.setUpstream(nil)
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

func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return tls.VersionName(v)
}

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newID names a message in logs and Received headers.
func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return idEncoding.EncodeToString(b[:])
}
