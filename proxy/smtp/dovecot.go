package smtp

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/mailward/mailward/proxy/smtp/dovecotauth"
)

// mechsTTL is how long Dovecot's mechanism list is reused for EHLO
// replies; mechsRetry how long a Dovecot that did not answer is left alone.
const (
	mechsTTL   = time.Minute
	mechsRetry = 10 * time.Second
	// dovecotDial bounds connecting and the handshake.
	dovecotDial = 10 * time.Second
	// mechsWait bounds how long an EHLO waits for a list when none is
	// known yet or Dovecot last did not answer: a Dovecot that hangs
	// costs an EHLO this much, not the dial's bound, and AUTH is not
	// offered in that reply.
	mechsWait = 2 * time.Second
)

// mechCache is Dovecot's mechanism list as EHLO offers it. One fetch is
// in flight at a time, on its own goroutine, never under mu: while it
// runs, EHLO replies use the last list known, or wait for it only as
// long as their own bound.
type mechCache struct {
	mu     sync.Mutex
	socket string
	mechs  []string
	known  bool      // a fetch has ended
	failed bool      // it got no answer (mechs is nil)
	until  time.Time // fresh until then; a fetch is started after
	// fetching is closed when the fetch under way ends; nil when none.
	fetching chan struct{}
}

// dovecotMechs returns what EHLO offers with auth: dovecot: Dovecot's
// mechanisms but private, anonymous and channel-binding ones. None when
// Dovecot does not answer.
func (s *Server) dovecotMechs(ctx context.Context, set *settings, log *slog.Logger) []string {
	mc := &s.mechs
	socket := set.cfg.DovecotSocket
	mc.mu.Lock()
	if mc.socket != socket {
		// A reload named another socket: what was known is of the old.
		mc.socket, mc.mechs, mc.known, mc.failed, mc.until, mc.fetching = socket, nil, false, false, time.Time{}, nil
	}
	if mc.known && time.Now().Before(mc.until) {
		defer mc.mu.Unlock()
		return mc.mechs
	}
	if mc.fetching == nil {
		done := make(chan struct{})
		mc.fetching = done
		// Under the server's context, not the session's: the list is
		// the server's, and one session ending must not end the fetch
		// the others wait for; a shutdown does.
		if !s.conns.Go(func(sctx context.Context) { mc.fetch(sctx, socket, done, log) }) {
			// Shutting down: no fetch will close done, so none is under
			// way, and no EHLO of a session still draining waits for it.
			mc.fetching = nil
			mc.mu.Unlock()
			return nil
		}
	}
	done, mechs, answered := mc.fetching, mc.mechs, mc.known && !mc.failed
	mc.mu.Unlock()
	if answered {
		return mechs // the last list, while a new one is fetched
	}
	// None known, or Dovecot did not answer last time: this fetch is the
	// first word of a Dovecot that may be back, so the reply waits for
	// it as the first EHLO does, rather than go without AUTH while
	// Dovecot answers at once.
	wait := time.NewTimer(mechsWait)
	defer wait.Stop()
	select {
	case <-done:
	case <-wait.C:
		return nil
	case <-ctx.Done():
		return nil
	}
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if mc.socket != socket {
		return nil
	}
	return mc.mechs
}

// fetch dials Dovecot for its mechanisms and keeps them, or that it did
// not answer, for the next EHLO replies; it closes done when it ends.
func (mc *mechCache) fetch(ctx context.Context, socket string, done chan struct{}, log *slog.Logger) {
	defer close(done)
	dctx, cancel := context.WithTimeout(ctx, dovecotDial)
	defer cancel()
	var mechs []string
	ttl := mechsTTL
	dc, err := dovecotauth.Dial(dctx, socket, dovecotDial)
	if err != nil {
		log.Warn("smtp: Dovecot auth unavailable: AUTH not offered", "err", err)
		ttl = mechsRetry
	} else {
		dc.Close()
		mechs = offerable(dc.Mechs())
	}
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if mc.fetching != done {
		return // the socket changed while it ran
	}
	mc.mechs, mc.known, mc.failed, mc.until, mc.fetching = mechs, true, err != nil, time.Now().Add(ttl), nil
}

func offerable(ms []dovecotauth.Mech) []string {
	var out []string
	for _, m := range ms {
		if m.Has("private") || m.Has("anonymous") || strings.HasSuffix(m.Name, "-PLUS") || len(out) >= 32 {
			continue
		}
		out = append(out, m.Name)
	}
	return out
}

// dovecotAuth runs the exchange with Dovecot; on success upstream is told
// the user with XCLIENT LOGIN before the client hears 235.
func (s *session) dovecotAuth(mech, initial string) bool {
	cfg := &s.settings.cfg
	tempFail := func(msg string, args ...any) bool {
		s.log.Warn("smtp: AUTH: "+msg, args...)
		s.tempFailAuth()
		return true
	}
	dctx, cancel := context.WithTimeout(s.ctx, dovecotDial)
	dc, err := dovecotauth.Dial(dctx, cfg.DovecotSocket, cfg.UpstreamTimeout)
	cancel()
	if err != nil {
		return tempFail("Dovecot unavailable", "err", err)
	}
	defer dc.Close()
	// A shutdown must not wait for Dovecot: Conns.Shutdown waits for the
	// session after cancelling it, and each read here may take
	// upstream_timeout.
	defer context.AfterFunc(s.ctx, func() { dc.Close() })()
	info := dovecotauth.Info{Service: "smtp", Remote: netip.AddrPortFrom(s.client.ip, s.client.port), Secured: s.tlsState != nil}
	if a, ok := s.sock.LocalAddr().(*net.TCPAddr); ok {
		info.Local = a.AddrPort()
	}
	if !validSASLArg(initial) {
		s.protocolError(newReply(501, "5.5.2", "Cannot decode response"))
		return true
	}
	r, err := dc.Auth(mech, initial, info)
	for step := 0; err == nil && r.Status == dovecotauth.Continue; step++ {
		if step >= maxSASLSteps {
			return tempFail("too many challenges from Dovecot", "mechanism", mech)
		}
		s.reply(reply{code: 334, text: []string{r.Challenge}})
		resp, rerr := s.readSASLLine()
		switch {
		case errors.Is(rerr, errLineTooLong):
			s.protocolError(newReply(500, "5.5.6", "Authentication exchange line is too long"))
			return true
		case rerr != nil:
			s.readFailed(rerr)
			return false
		case resp == "*":
			s.reply(newReply(501, "5.7.0", "Authentication aborted"))
			return true
		case resp != "" && !validSASLArg(resp):
			s.protocolError(newReply(501, "5.5.2", "Cannot decode response"))
			return true
		}
		r, err = dc.Continue(resp)
	}
	if err != nil {
		return tempFail("Dovecot exchange failed", "err", err)
	}
	switch {
	case r.Status == dovecotauth.Fail && r.Temp:
		return tempFail("Dovecot could not decide", "mechanism", mech)
	case r.Status == dovecotauth.Fail:
		text := "Error: authentication failed"
		if r.Reason != "" {
			text += ": " + truncate(oneLine(r.Reason), 200)
		}
		s.reply(newReply(535, "5.7.8", text))
		s.authFailed(mech)
		return true
	}
	if !validUser(r.User) {
		return tempFail("Dovecot named a user unfit for XCLIENT LOGIN", "mechanism", mech)
	}
	// Upstream must know before the client hears 235: a new session
	// that starts with XCLIENT LOGIN.
	s.auth = authState{user: r.User}
	s.dropUpstream(true)
	if err := s.ensureUpstream(); err != nil {
		s.auth = authState{}
		return tempFail("upstream unavailable", "upstream", cfg.Upstream, "err", err)
	}
	if !s.up.loginSent {
		s.auth = authState{}
		s.dropUpstream(true)
		s.log.Error("smtp: AUTH refused: upstream did not take XCLIENT LOGIN, so it would not know the client authenticated; allow mailward in smtpd_authorized_xclient_hosts", "upstream", cfg.Upstream)
		s.tempFailAuth()
		return true
	}
	s.countAuth(authOK)
	s.log.Info("smtp: client authenticated", "auth_user", r.User, "mechanism", mech, "by", "dovecot")
	s.reply(newReply(235, "2.7.0", "Authentication successful"))
	return true
}

// validSASLArg accepts an initial response or a response: base64, or "="
// for an empty initial response; nothing that could reach another
// protocol as anything but data.
func validSASLArg(s string) bool {
	if s == "" || s == "=" {
		return true
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=') {
			return false
		}
	}
	return true
}
