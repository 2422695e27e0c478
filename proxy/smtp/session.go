package smtp

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
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
	settings    *settings
	peer        netip.AddrPort // the TCP peer
	implicitTLS bool
	countedIP   netip.Addr // set by admitIP
	log         *slog.Logger
	ctx         context.Context
	cancel      context.CancelFunc

	// sock is written by the session goroutine under mu, and read by
	// Shutdown under mu.
	mu     sync.Mutex
	sock   net.Conn
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
	conn     *policy.Conn
	refused  bool
	heloDone bool
	offer    offered
	maxSize  int64
	up       *upstream
	errors   int
	tx       *transaction
	auth     authState

	// started and junk bound what a session may cost: it takes no command
	// past max_session_time, and no more than max_junk_commands commands
	// that move no mail (see countJunk) between two messages relayed.
	started  time.Time
	junk     int
	lastCode int // of the last reply written, for countJunk
	helos    int
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
	s.ctx, s.cancel = context.WithCancel(s.srv.conns.Context())
	defer s.finish()
	s.log = s.srv.log.With("client_ip", s.peer.Addr().String())
	ip, port := s.peer.Addr(), s.peer.Port()
	s.started = time.Now()
	local := false
	raw := s.sock
	if s.settings.cfg.ProxyProtocol && s.settings.isTrusted(ip) {
		raw.SetReadDeadline(time.Now().Add(s.settings.cfg.CommandTimeout))
		br := bufio.NewReaderSize(raw, 512)
		h, err := readProxyHeader(br)
		if err != nil {
			s.log.Warn("smtp: connection closed: bad or missing PROXY protocol header", "err", err)
			return
		}
		raw.SetReadDeadline(time.Time{})
		s.setSock(&bufferedConn{Conn: raw, r: br})
		if !h.Local && h.Src.Addr().IsValid() {
			ip, port = h.Src.Addr().Unmap(), h.Src.Port()
			s.log = s.srv.log.With("client_ip", ip.String(), "proxy", s.peer.Addr().String())
		}
		// A header that names no client (v1 UNKNOWN, v2 LOCAL: a health
		// check, or whoever the balancer could not tell) leaves the session
		// on the balancer's own address. That address is trusted; the
		// unknown client behind it is not, and gets no XCLIENT rights.
		local = h.Local || !h.Src.Addr().IsValid()
	}
	s.client = clientInfo{ip: ip, port: port}
	s.trusted = s.settings.isTrusted(ip) && !local
	if local {
		s.log.Info("smtp: PROXY header names no client: the session is untrusted", "local", true)
	}
	if s.implicitTLS {
		if !s.handshake() {
			return
		}
	}
	s.setupIO()
	if !s.srv.admitIP(s, ip) {
		s.log.Warn("smtp: connection refused: too many connections from this address", "limit", s.settings.cfg.MaxConnectionsPerIP)
		s.reply(newReply(421, "4.7.0", s.settings.cfg.Hostname+" Error: too many connections from "+ip.String()))
		s.bw.Flush()
		return
	}
	if !s.connect() {
		return
	}
	for {
		if time.Since(s.started) >= s.settings.cfg.MaxSessionTime {
			s.log.Warn("smtp: connection closed: session lasted too long", "limit", s.settings.cfg.MaxSessionTime)
			s.reply(newReply(421, "4.4.2", s.settings.cfg.Hostname+" Error: session lasted too long"))
			s.bw.Flush()
			return
		}
		line, err := s.readCommand()
		s.lastCode = 0
		if err == nil && s.junk >= s.settings.cfg.MaxJunkCommands {
			s.log.Warn("smtp: connection closed: too many commands that moved no mail", "limit", s.settings.cfg.MaxJunkCommands)
			s.reply(newReply(421, "4.7.0", s.settings.cfg.Hostname+" Error: too many commands"))
			s.bw.Flush()
			return
		}
		if errors.Is(err, errLineTooLong) {
			s.protocolError(newReply(500, "5.5.2", "Error: line too long"))
		} else if err != nil {
			s.readFailed(err)
			return
		} else if !s.handle(line) {
			s.bw.Flush()
			return
		}
		s.countJunk(line)
		if s.errors >= maxErrors {
			s.log.Warn("smtp: connection closed: too many errors", "errors", s.errors)
			s.reply(newReply(421, "4.7.0", s.settings.cfg.Hostname+" Error: too many errors"))
			s.bw.Flush()
			return
		}
		if s.writeErr != nil {
			s.log.Debug("smtp: client went away", "err", s.writeErr)
			return
		}
	}
}

func (s *session) setSock(c net.Conn) {
	s.mu.Lock()
	s.sock = c
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
	if s.idle.Load() && s.sock != nil {
		s.sock.SetReadDeadline(time.Now())
	}
}

func (s *session) forceClose() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sock != nil {
		s.sock.Close()
	}
	if s.upSock != nil {
		s.upSock.Close()
	}
}

func (s *session) finish() {
	if s.tx != nil && s.conn != nil {
		s.conn.Abort()
	}
	if s.conn != nil {
		s.conn.Close()
	}
	if s.up != nil {
		s.up.quit()
		s.setUpstream(nil)
	}
	s.sock.Close()
	s.cancel()
}

func (s *session) handshake() bool {
	tc := tls.Server(s.sock, tlsServerConfig(s.srv))
	tc.SetDeadline(time.Now().Add(s.settings.cfg.CommandTimeout))
	if err := tc.HandshakeContext(s.ctx); err != nil {
		s.log.Info("smtp: TLS handshake failed", "err", err)
		return false
	}
	tc.SetDeadline(time.Time{})
	state := tc.ConnectionState()
	s.tlsState = &state
	s.client.tls = true
	s.setSock(tc)
	return true
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

func (s *session) setupIO() {
	s.deadline = time.Now().Add(s.settings.cfg.CommandTimeout)
	s.br = bufio.NewReaderSize(clientReader{s}, 64<<10)
	s.bw = bufio.NewWriterSize(clientWriter{s}, 4096)
}

// clientReader bounds every read by the deadline of the record being read
// and lets an idle session notice a shutdown.
type clientReader struct{ s *session }

func (r clientReader) Read(p []byte) (int, error) {
	s := r.s
	if err := s.sock.SetReadDeadline(s.deadline); err != nil {
		return 0, err
	}
	if s.idle.Load() && s.srv.conns.Closing() {
		return 0, errShutdown
	}
	return s.sock.Read(p)
}

type clientWriter struct{ s *session }

func (w clientWriter) Write(p []byte) (int, error) {
	s := w.s
	if err := s.sock.SetWriteDeadline(time.Now().Add(s.settings.cfg.CommandTimeout)); err != nil {
		return 0, err
	}
	return s.sock.Write(p)
}

func (s *session) reply(r reply) {
	s.lastCode = r.code
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
	// Not past the session's lifetime either.
	s.deadline = time.Now().Add(s.settings.cfg.CommandTimeout)
	if end := s.started.Add(s.settings.cfg.MaxSessionTime); end.Before(s.deadline) {
		s.deadline = end
	}
	s.idle.Store(s.tx == nil)
	defer s.idle.Store(false)
	return readLine(s.br, maxLine)
}

func (s *session) readFailed(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, errShutdown):
		s.reply(newReply(421, "4.3.2", s.settings.cfg.Hostname+" Service shutting down"))
		s.bw.Flush()
	case errors.As(err, &ne) && ne.Timeout():
		if s.srv.conns.Closing() && s.tx == nil {
			s.reply(newReply(421, "4.3.2", s.settings.cfg.Hostname+" Service shutting down"))
		} else {
			s.log.Info("smtp: connection closed: client timed out", "in_transaction", s.tx != nil)
			s.reply(newReply(421, "4.4.2", s.settings.cfg.Hostname+" Error: timeout exceeded"))
		}
		s.bw.Flush()
	case s.tx != nil:
		s.log.Info("smtp: client went away during a transaction", "err", err)
	default:
		s.log.Debug("smtp: client went away", "err", err)
	}
}

// countJunk counts the command just handled against the junk budget; the
// next command past it ends the session. A command moves no mail if it was refused (a bad
// command, a refused sender or recipient, anything after a refused
// connection, a message refused at its end), or is NOOP, RSET or VRFY,
// or a HELO/EHLO after the first: each costs a round trip, and refused
// ones cost checks. A message relayed starts the count again.
func (s *session) countJunk(line string) {
	verb, _, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb)
	switch {
	case verb == "DATA" && s.lastCode == 250:
		s.junk = 0
	case s.lastCode >= 400, verb == "NOOP", verb == "RSET", verb == "VRFY":
		s.junk++
	case verb == "HELO" || verb == "EHLO":
		if s.helos++; s.helos > 1 {
			s.junk++
		}
	}
}

// connect runs the connect stage and greets the client.
func (s *session) connect() bool {
	if s.conn != nil {
		s.conn.Close()
	}
	conn, v := s.srv.engine.Connect(s.ctx, policy.ConnInfo{IP: s.client.ip, Name: s.client.name, Front: "smtp"})
	s.conn = conn
	s.refused = false
	host := s.settings.cfg.Hostname
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
	if s.auth.lost && verb != "QUIT" {
		// The upstream session that held the client's authentication is
		// gone; going on would relay its mail unauthenticated.
		s.reply(authLostReply(s.settings.cfg.Hostname))
		return false
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
	case "AUTH":
		return s.cmdAuth(arg)
	case "BDAT", "EXPN", "HELP", "ETRN", "TURN", "ATRN", "SEND", "SOML", "SAML":
		s.protocolError(newReply(502, "5.5.1", "Error: command not implemented"))
	case "":
		s.protocolError(newReply(500, "5.5.2", "Error: bad syntax"))
	default:
		s.protocolError(newReply(500, "5.5.2", "Error: command not recognized"))
	}
	return true
}
