package smtp

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// identMode is how upstream learns who the real client is.
type identMode int

const (
	identXCLIENT  identMode = iota // the session takes the client's identity
	identXFORWARD                  // attributes sent before each MAIL
	identReceived                  // a Received header of our own
)

func (m identMode) String() string {
	return [...]string{"xclient", "xforward", "received"}[m]
}

// clientInfo is what upstream is told about the real client.
type clientInfo struct {
	ip    netip.Addr
	port  uint16
	name  string // verified host name; "" when unknown
	helo  string
	esmtp bool
	login string
	tls   bool
}

func (ci *clientInfo) proto() string {
	if ci.esmtp {
		return "ESMTP"
	}
	return "SMTP"
}

// replyError is a failure reply of upstream's, to pass on to the client.
type replyError struct {
	r      reply
	during string
}

func (e *replyError) Error() string {
	return "upstream answered " + e.during + " with " + e.r.String()
}

var errTLSRequired = errors.New("upstream does not offer STARTTLS and smtp.upstream_tls is required")

// tlsError is a failed TLS handshake with upstream.
type tlsError struct{ err error }

func (e *tlsError) Error() string { return "TLS handshake with upstream: " + e.err.Error() }
func (e *tlsError) Unwrap() error { return e.err }

// upstream is one connection to the real MTA, used by one session.
type upstream struct {
	conn  *deadlineConn
	sock  net.Conn // the connection in use: TCP or TLS over it
	br    *bufio.Reader
	bw    *bufio.Writer
	caps  caps
	tls   bool
	ident identMode
	// loginSent: upstream took XCLIENT with LOGIN, so it knows the
	// client authenticated.
	loginSent bool
}

// dialUpstream connects, says EHLO, starts TLS as configured and, given a
// client, tells upstream who it is.
func dialUpstream(ctx context.Context, set *settings, ci *clientInfo, log *slog.Logger) (*upstream, error) {
	up, err := connectUpstream(ctx, set, set.upTLS != nil)
	var te *tlsError
	if errors.As(err, &te) && set.cfg.UpstreamTLS == "opportunistic" {
		log.Warn("smtp: TLS to upstream failed; relaying without TLS", "upstream", set.cfg.Upstream, "err", err)
		up, err = connectUpstream(ctx, set, false)
	}
	if err != nil {
		return nil, err
	}
	if ci != nil {
		if err := up.identify(ci, set.cfg.Hostname, log); err != nil {
			up.close()
			return nil, err
		}
	}
	return up, nil
}

func connectUpstream(ctx context.Context, set *settings, useTLS bool) (*upstream, error) {
	timeout := set.cfg.UpstreamTimeout
	d := net.Dialer{Timeout: timeout}
	raw, err := d.DialContext(ctx, "tcp", set.cfg.Upstream)
	if err != nil {
		return nil, fmt.Errorf("connecting to upstream %s: %w", set.cfg.Upstream, err)
	}
	up := &upstream{conn: &deadlineConn{Conn: raw, timeout: timeout}}
	up.use(up.conn)
	ok := false
	defer func() {
		if !ok {
			up.close()
		}
	}()
	greet, err := readReply(up.br)
	if err != nil {
		return nil, fmt.Errorf("reading upstream greeting: %w", err)
	}
	if greet.code != 220 {
		return nil, &replyError{greet, "the connection"}
	}
	if err := up.ehlo(set.cfg.Hostname); err != nil {
		return nil, err
	}
	if useTLS && up.caps.startTLS {
		r, err := up.cmd("STARTTLS")
		if err != nil {
			return nil, err
		}
		if r.code != 220 {
			return nil, &tlsError{fmt.Errorf("STARTTLS refused: %s", r)}
		}
		tc := tls.Client(up.conn, set.upTLS.Clone())
		hctx, cancel := context.WithTimeout(ctx, timeout)
		err = tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			return nil, &tlsError{err}
		}
		up.use(tc)
		up.tls = true
		if err := up.ehlo(set.cfg.Hostname); err != nil {
			return nil, err
		}
	}
	if set.cfg.UpstreamTLS == "required" && !up.tls {
		return nil, errTLSRequired
	}
	ok = true
	return up, nil
}

func (up *upstream) use(c net.Conn) {
	up.sock = c
	up.br = bufio.NewReaderSize(c, 4096)
	up.bw = bufio.NewWriterSize(c, 32<<10)
}

func (up *upstream) ehlo(name string) error {
	r, err := up.cmd("EHLO " + name)
	if err != nil {
		return err
	}
	if r.code != 250 {
		return &replyError{r, "EHLO"}
	}
	up.caps = parseEHLO(r)
	return nil
}

// identify tells upstream the real client: XCLIENT when offered and
// allowed, else XFORWARD before each MAIL, else a Received header.
func (up *upstream) identify(ci *clientInfo, hostname string, log *slog.Logger) error {
	if len(up.caps.xclient) > 0 {
		r, err := up.cmd(xclientLine(ci, up.caps.xclient))
		if err != nil {
			return err
		}
		if r.code == 220 {
			up.ident = identXCLIENT
			up.loginSent = ci.login != "" && up.caps.xclient["LOGIN"]
			helo := ci.helo
			if helo == "" {
				helo = hostname
			}
			return up.ehlo(helo)
		}
		log.Warn("smtp: upstream refused XCLIENT; check smtpd_authorized_xclient_hosts", "reply", r.String())
	}
	if len(up.caps.xforward) > 0 {
		up.ident = identXFORWARD
	} else {
		up.ident = identReceived
	}
	return nil
}

func addrAttr(ip netip.Addr) string {
	if !ip.IsValid() {
		return "[UNAVAILABLE]"
	}
	ip = ip.Unmap()
	if ip.Is6() {
		return "IPV6:" + ip.String()
	}
	return ip.String()
}

func nameAttr(name string) string {
	if name == "" {
		return "[UNAVAILABLE]"
	}
	return name
}

type attr struct{ name, value string }

func attrLine(cmd string, attrs []attr, allowed map[string]bool) string {
	var b strings.Builder
	b.WriteString(cmd)
	for _, a := range attrs {
		if allowed[a.name] && a.value != "" {
			b.WriteString(" " + a.name + "=" + xtextEncode(truncate(a.value, 255)))
		}
	}
	return b.String()
}

func xclientLine(ci *clientInfo, allowed map[string]bool) string {
	attrs := []attr{
		{"NAME", nameAttr(ci.name)},
		{"ADDR", addrAttr(ci.ip)},
		{"PORT", portAttr(ci.port)},
		{"PROTO", ci.proto()},
		{"HELO", ci.helo},
		{"LOGIN", ci.login},
	}
	return attrLine("XCLIENT", attrs, allowed)
}

func portAttr(p uint16) string {
	if p == 0 {
		return ""
	}
	return strconv.Itoa(int(p))
}

// xforward sends the client's attributes for the next transaction.
func (up *upstream) xforward(ci *clientInfo, id string, log *slog.Logger) error {
	lines := []string{
		attrLine("XFORWARD", []attr{{"NAME", nameAttr(ci.name)}, {"ADDR", addrAttr(ci.ip)}, {"PORT", portAttr(ci.port)}}, up.caps.xforward),
		attrLine("XFORWARD", []attr{{"PROTO", ci.proto()}, {"HELO", ci.helo}, {"IDENT", id}, {"SOURCE", "REMOTE"}}, up.caps.xforward),
	}
	for _, l := range lines {
		if l == "XFORWARD" {
			continue
		}
		r, err := up.cmd(l)
		if err != nil {
			return err
		}
		if r.code != 250 {
			log.Warn("smtp: upstream refused XFORWARD", "reply", r.String())
		}
	}
	return nil
}

// cmd sends one command and reads its reply.
func (up *upstream) cmd(line string) (reply, error) {
	verb, _, _ := strings.Cut(line, " ")
	return up.send(line, verb)
}

// saslResponse sends a client's response of an AUTH exchange. Errors name
// it only as such: the line is a credential (LOGIN's password, say).
func (up *upstream) saslResponse(resp string) (reply, error) {
	return up.send(resp, "AUTH response")
}

// send sends line and reads the reply; verb names the line in errors.
func (up *upstream) send(line, verb string) (reply, error) {
	if _, err := up.bw.WriteString(line + "\r\n"); err != nil {
		return reply{}, fmt.Errorf("sending %s upstream: %w", verb, err)
	}
	if err := up.bw.Flush(); err != nil {
		return reply{}, fmt.Errorf("sending %s upstream: %w", verb, err)
	}
	r, err := readReply(up.br)
	if err != nil {
		return reply{}, fmt.Errorf("reading upstream reply to %s: %w", verb, err)
	}
	return r, nil
}

// data sends DATA and, if upstream says 354, the message; it returns
// upstream's reply to DATA or to the end of the message.
func (up *upstream) data(write func(io.Writer) error) (reply, error) {
	r, err := up.cmd("DATA")
	if err != nil || r.code != 354 {
		return r, err
	}
	dw := newDotWriter(up.bw)
	if err := write(dw); err != nil {
		return reply{}, fmt.Errorf("sending message upstream: %w", err)
	}
	if err := dw.Close(); err != nil {
		return reply{}, fmt.Errorf("sending message upstream: %w", err)
	}
	if err := up.bw.Flush(); err != nil {
		return reply{}, fmt.Errorf("sending message upstream: %w", err)
	}
	r, err = readReply(up.br)
	if err != nil {
		return reply{}, fmt.Errorf("reading upstream reply to the message: %w", err)
	}
	return r, nil
}

// keepAlive sends NOOP now and then while the client uploads a message,
// so that upstream does not time the idle session out. stop ends it and
// reports whether upstream is still there.
func (up *upstream) keepAlive(every time.Duration) (stop func() error) {
	quit := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-quit:
				done <- nil
				return
			case <-t.C:
				r, err := up.cmd("NOOP")
				if err == nil && r.code != 250 {
					err = &replyError{r, "NOOP"}
				}
				if err != nil {
					done <- err
					return
				}
			}
		}
	}()
	return func() error {
		close(quit)
		return <-done
	}
}

// quit ends the session politely and closes the connection.
func (up *upstream) quit() {
	up.conn.timeout = 5 * time.Second
	up.cmd("QUIT")
	up.close()
}

func (up *upstream) close() {
	up.sock.Close()
}

// deadlineConn bounds every read and write with a timeout.
type deadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
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
		s.log.Warn("smtp: upstream no longer offers an extension the client uses", "upstream", s.settings.cfg.Upstream)
		return newReply(451, "4.3.0", "Upstream cannot take this message now; try again later"), nil
	}
	if s.auth.user != "" && !s.auth.relayed && !s.up.loginSent {
		s.log.Error("smtp: upstream did not take XCLIENT LOGIN; the authenticated client's mail is not relayed (smtpd_authorized_xclient_hosts)", "upstream", s.settings.cfg.Upstream)
		return newReply(451, "4.7.0", "Upstream cannot take authenticated mail now; try again later"), nil
	}
	if s.up.ident == identXFORWARD {
		if err := s.up.xforward(s.upstreamClient(), tx.id, s.log); err != nil {
			return reply{}, err
		}
	}
	return s.up.cmd("MAIL FROM:<" + tx.from + ">" + mailParams(tx.params, c))
}

func (s *session) ensureUpstream() error {
	if s.up != nil {
		return nil
	}
	up, err := dialUpstream(s.ctx, s.settings, s.upstreamClient(), s.log)
	if err != nil {
		return err
	}
	s.setUpstream(up)
	s.srv.learned(up.caps)
	return nil
}

// upstreamClient is the client as upstream is told: its verified name
// comes from the iprev check unless a trusted XCLIENT gave one.
func (s *session) upstreamClient() *clientInfo {
	ci := s.client
	if ci.name == "" {
		if r := s.conn.Facts().IPRev; r != nil && r.Result == "pass" && r.FCrDNS {
			ci.name = strings.TrimSuffix(r.PTR, ".")
		}
	}
	ci.tls = s.tlsState != nil
	if s.auth.user != "" && !s.auth.relayed {
		// Authenticated here (Dovecot): upstream learns it by XCLIENT.
		ci.login = s.auth.user
	}
	return &ci
}

// upstreamFailed answers a command when no upstream session could be had.
func (s *session) upstreamFailed(err error, during string) bool {
	var re *replyError
	if errors.As(err, &re) {
		s.log.Info("smtp: upstream refused the session", "during", during, "reply", re.r.String())
		s.reply(re.r)
		return re.r.code != 421
	}
	s.log.Warn("smtp: upstream unavailable", "upstream", s.settings.cfg.Upstream, "err", err)
	s.reply(newReply(451, "4.4.1", "Upstream server unavailable; try again later"))
	return true
}

// upstreamLost answers a command after the upstream connection broke:
// nothing was acknowledged, and the client's transaction cannot go on.
func (s *session) upstreamLost(err error, tx *transaction) bool {
	s.log.Warn("smtp: upstream connection lost", "upstream", s.settings.cfg.Upstream, "err", err)
	s.dropUpstream(false)
	if tx != nil {
		tx.broken = true
		s.conn.Abort()
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
	if s.auth.relayed {
		s.auth = authState{lost: true}
	}
}
