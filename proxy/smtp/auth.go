package smtp

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Auth modes (smtp.auth).
const (
	AuthOff     = "off"
	AuthRelay   = "relay"
	AuthDovecot = "dovecot"
)

// maxSASLLine bounds the AUTH command and each client response of the
// exchange; RFC 4954 section 4 asks servers for at least 12288 octets.
const maxSASLLine = 12288

// maxSASLSteps bounds the challenges of one exchange; the mechanisms
// offered need at most a handful.
const maxSASLSteps = 8

// relayMechs are the mechanisms relayed to upstream: those whose client
// messages name the user, so that the proxy knows whom upstream accepted.
// Channel-binding (-PLUS) variants cannot work through a proxy.
var relayMechs = []string{"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"}

// authState is what a session knows about its client's authentication.
type authState struct {
	user string // authenticated as; "" when not
	// relayed: upstream's own session carries the authentication, so
	// losing that session loses it.
	relayed bool
	// lost: the upstream session that carried the authentication went
	// away; the client must connect and authenticate again.
	lost bool
}

// authMechs is what the proxy offers in EHLO now: none unless AUTH is on,
// the session is encrypted (or auth_plaintext allows it) and the client
// has not yet authenticated.
func (s *session) authMechs(up caps) []string {
	cfg := &s.settings.cfg
	if cfg.Auth == AuthOff || cfg.Auth == "" || s.auth.user != "" {
		return nil
	}
	if s.tlsState == nil && !cfg.AuthPlaintext {
		return nil
	}
	if cfg.Auth == AuthDovecot {
		return s.srv.dovecotMechs(s.ctx, s.settings, s.log)
	}
	if cfg.UpstreamTLS == "off" && !loopbackHost(s.settings.upstreamH) {
		return nil
	}
	var out []string
	for _, m := range up.auth {
		if slices.Contains(relayMechs, m) && !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// loopbackHost reports whether host (an address, or localhost) is on this
// machine; only there may credentials travel upstream in plain text.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

func loopbackConn(c net.Conn) bool {
	a, ok := c.RemoteAddr().(*net.TCPAddr)
	return ok && a.AddrPort().Addr().Unmap().IsLoopback()
}

// AuthOutcomes names what AUTH commands ended in, for AuthCount.
var AuthOutcomes = [authOutcomes]string{"ok", "failed", "blocked", "tempfail"}

const (
	authOK = iota
	authFailedOutcome
	authBlockedOutcome
	authTempfail
	authOutcomes
)

// AuthCount is how many AUTH exchanges ended in outcome (one of
// AuthOutcomes) since the server started.
func (s *Server) AuthCount(outcome string) uint64 {
	for i, o := range AuthOutcomes {
		if o == outcome {
			return s.auths[i].Load()
		}
	}
	return 0
}

func (s *session) countAuth(outcome int) { s.srv.auths[outcome].Add(1) }

func authLostReply(host string) reply {
	return newReply(421, "4.4.2", host+" Error: upstream connection lost; connect and authenticate again")
}

// forgetAuth drops what the client authenticated as, for a new EHLO,
// STARTTLS or XCLIENT: each starts the session over.
func (s *session) forgetAuth() {
	if s.auth.user != "" {
		s.log.Info("smtp: authentication forgotten as the session starts over", "auth_user", s.auth.user)
	}
	s.auth = authState{}
}

// authUser is the user the engine sees: the one authenticated here, else
// the LOGIN of a trusted XCLIENT.
func (s *session) authUser() string {
	if s.auth.user != "" {
		return s.auth.user
	}
	return s.client.login
}

func (s *session) cmdAuth(arg string) bool {
	cfg := &s.settings.cfg
	switch {
	case cfg.Auth != AuthRelay && cfg.Auth != AuthDovecot:
		s.protocolError(newReply(502, "5.5.1", "Error: command not implemented"))
		return true
	case !s.heloDone || !s.client.esmtp:
		s.protocolError(newReply(503, "5.5.1", "Error: send EHLO first"))
		return true
	case s.auth.user != "":
		s.protocolError(newReply(503, "5.5.1", "Error: already authenticated"))
		return true
	case s.tx != nil:
		s.protocolError(newReply(503, "5.5.1", "Error: MAIL transaction in progress"))
		return true
	case s.tlsState == nil && !cfg.AuthPlaintext:
		s.log.Info("smtp: AUTH before STARTTLS refused")
		s.protocolError(newReply(530, "5.7.0", "Must issue a STARTTLS command first"))
		return true
	}
	mech, initial, _ := strings.Cut(arg, " ")
	mech = strings.ToUpper(mech)
	var offered []string
	if cfg.Auth == AuthRelay {
		offered = s.authMechs(s.srv.upstreamCaps())
	} else {
		offered = s.authMechs(caps{})
	}
	if !slices.Contains(offered, mech) {
		s.protocolError(newReply(504, "5.5.4", "Unrecognized authentication type"))
		return true
	}
	if s.authBlocked() {
		s.countAuth(authBlockedOutcome)
		s.reply(newReply(454, "4.7.0", "Too many failed authentications from "+s.countIP().String()+"; try again later"))
		return true
	}
	if cfg.Auth == AuthDovecot {
		return s.dovecotAuth(mech, initial)
	}
	return s.relayAuth(mech, initial)
}

// relayAuth runs the exchange between the client and upstream's session
// for this client, which keeps the authentication for the messages after.
func (s *session) relayAuth(mech, initial string) bool {
	if err := s.ensureUpstream(); err != nil {
		s.log.Warn("smtp: AUTH: upstream unavailable", "upstream", s.settings.cfg.Upstream, "err", err)
		s.tempFailAuth()
		return true
	}
	if !s.up.tls && !loopbackConn(s.up.conn.Conn) {
		s.log.Error("smtp: AUTH refused: upstream session has no TLS and is not on loopback; credentials are never relayed in plain text", "upstream", s.settings.cfg.Upstream)
		s.tempFailAuth()
		return true
	}
	if !slices.Contains(s.up.caps.auth, mech) {
		s.log.Warn("smtp: AUTH: upstream session does not offer the mechanism", "mechanism", mech)
		s.tempFailAuth()
		return true
	}
	line := "AUTH " + mech
	if initial != "" {
		line += " " + initial
	}
	var responses []string
	if initial != "" {
		// The first response names the user: one the proxy cannot read
		// is refused here, before upstream could accept it.
		if saslUser(mech, []string{initial}) == "" {
			s.refuseUnreadableUser(mech)
			return true
		}
		responses = append(responses, initial)
	}
	r, err := s.up.cmd(line)
	for step := 0; err == nil && r.code == 334; step++ {
		if step >= maxSASLSteps {
			s.log.Warn("smtp: AUTH: too many challenges from upstream", "mechanism", mech)
			r, err = s.up.saslResponse("*")
			if err == nil {
				r = newReply(454, "4.7.0", "Temporary authentication failure")
			}
			break
		}
		s.reply(r)
		resp, rerr := s.readSASLLine()
		if errors.Is(rerr, errLineTooLong) {
			// Upstream is waiting for an answer: cancel there, refuse here.
			if _, err = s.up.saslResponse("*"); err == nil {
				s.protocolError(newReply(500, "5.5.6", "Authentication exchange line is too long"))
				return true
			}
			break
		}
		if rerr != nil {
			s.readFailed(rerr)
			return false
		}
		if strings.ContainsAny(resp, "\r\x00") {
			resp = "*"
		}
		if len(responses) == 0 && resp != "*" && saslUser(mech, []string{resp}) == "" {
			// Cancelled upstream, refused here: a 235 for a user the
			// proxy cannot name could only be followed by a drop.
			if _, err = s.up.saslResponse("*"); err != nil {
				s.dropUpstream(false)
			}
			s.refuseUnreadableUser(mech)
			return true
		}
		responses = append(responses, resp)
		r, err = s.up.saslResponse(resp)
	}
	if err != nil {
		s.log.Warn("smtp: AUTH: upstream connection lost", "upstream", s.settings.cfg.Upstream, "err", err)
		s.dropUpstream(false)
		s.tempFailAuth()
		return true
	}
	if r.code == 235 && saslUser(mech, responses) == "" {
		// Not reached: the first response was read before it went
		// upstream. Should it be, the client is not told 235, and the
		// upstream session that holds the authentication is dropped.
		s.log.Error("smtp: AUTH accepted by upstream, but the user could not be read from the exchange; refused", "mechanism", mech)
		s.dropUpstream(true)
		s.tempFailAuth()
		return true
	}
	s.reply(r)
	switch {
	case r.code == 235:
		user := saslUser(mech, responses)
		s.auth = authState{user: user, relayed: true}
		s.countAuth(authOK)
		s.log.Info("smtp: client authenticated", "auth_user", user, "mechanism", mech)
	case r.code == 421:
		s.dropUpstream(false)
		return false
	case r.code == 535:
		s.authFailed(mech)
	case r.transient():
		s.countAuth(authTempfail)
	case r.code >= 500 && !(len(responses) > 0 && responses[len(responses)-1] == "*"):
		// A response upstream could not decode, say: a bad command,
		// not a wrong password.
		s.errors++
	}
	return true
}

// refuseUnreadableUser answers an exchange whose first response names
// no user the proxy can read (not the mechanism's format, or a name
// unfit for logs, rules and XCLIENT): a failed authentication, decided
// before anything of it reached upstream.
func (s *session) refuseUnreadableUser(mech string) {
	s.log.Info("smtp: AUTH refused before relaying: no user name the proxy can read in the response", "mechanism", mech)
	s.reply(newReply(535, "5.7.8", "Error: authentication failed: user name not readable"))
	s.authFailed(mech)
}

// readSASLLine reads one client response of an exchange, flushing the
// challenge first, bounded in length and time like a command.
func (s *session) readSASLLine() (string, error) {
	if err := s.bw.Flush(); err != nil {
		return "", err
	}
	s.deadline = time.Now().Add(s.settings.cfg.CommandTimeout)
	if end := s.started.Add(s.settings.cfg.MaxSessionTime); end.Before(s.deadline) {
		s.deadline = end
	}
	return readLine(s.br, maxSASLLine)
}

// authFailed counts a refused authentication: against the session's error
// budget and the client address's failure limit.
func (s *session) authFailed(mech string) {
	s.errors++
	s.countAuth(authFailedOutcome)
	s.log.Info("smtp: authentication failed", "mechanism", mech)
	s.countAuthFailure()
}

func (s *session) tempFailAuth() {
	s.countAuth(authTempfail)
	s.reply(newReply(454, "4.7.0", "Temporary authentication failure"))
}
