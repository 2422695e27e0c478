package policyd

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailward/mailward/policy"
)

// key names one message: Postfix's instance attribute is unique per
// smtpd process and message; the client address keeps two clients apart
// should it ever repeat.
type key struct{ client, instance string }

// session is one policy connection. Postfix sends the requests of an SMTP
// session over one policy connection, in order, so the connection's
// current entry is the SMTP session it serves now; a request with a new
// instance means the previous message was completed or aborted.
type session struct{ cur *entry }

// entry is one SMTP session as the engine sees it, with its current
// message. Requests lock mu while they use it.
type entry struct {
	mu     sync.Mutex
	closed bool
	conn   *policy.Conn

	// Set when the entry is made, then only read.
	client, port, name string
	stateless          bool // made for one request: over max_instances

	// Under Server.mu.
	owner       *session
	keyed       bool
	key         key
	hadInstance bool

	last atomic.Int64 // unix nanoseconds of the last request

	connectV policy.Verdict
	heloDone bool
	helo     string
	heloV    policy.Verdict
	msg      message
}

// message is what one message's requests share: every verdict given, so
// that a request asked twice (the same check in two restriction lists)
// runs nothing twice, and the headers still to be prepended.
type message struct {
	instance string
	mailDone bool
	sender   string
	mailV    policy.Verdict
	rcpts    map[string]policy.Verdict
	dataDone bool
	dataV    policy.Verdict
	eomDone  bool
	eomV     policy.Verdict
	headers  []policy.HeaderEdit
	arSent   bool
}

// sameSession reports whether a request without a known instance belongs
// to the SMTP session e holds. Without client_port (Postfix before 3.0)
// two sessions from one address look alike, so only a session that has
// not yet had a message is continued.
func (e *entry) sameSession(r *request) bool {
	if e.client != r.client || e.name != r.name || e.port != r.port {
		return false
	}
	return e.port != "" || !e.hadInstance
}

func (e *entry) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.closed && e.conn != nil {
		e.conn.Close()
	}
	e.closed = true
}

// entryFor finds or makes the entry for a request and returns it locked.
// closeAfter is true for an entry made for this request alone.
func (s *Server) entryFor(sess *session, req *request, st policy.Stage) (e *entry, closeAfter bool) {
	for {
		s.mu.Lock()
		e, old := s.pick(sess, req, st)
		s.mu.Unlock()
		if old != nil {
			old.close()
		}
		e.mu.Lock()
		if !e.closed {
			e.last.Store(time.Now().UnixNano())
			return e, e.stateless
		}
		// Expired between pick and lock: pick again.
		e.mu.Unlock()
	}
}

// pick chooses the entry under s.mu; old is an entry to close once s.mu
// is released.
func (s *Server) pick(sess *session, req *request, st policy.Stage) (e, old *entry) {
	cur := sess.cur
	if cur != nil {
		if _, ok := s.live[cur]; !ok || cur.owner != sess {
			cur, sess.cur = nil, nil // expired, or taken over by another connection
		}
	}
	if req.instance != "" {
		if e := s.byKey[key{req.client, req.instance}]; e != nil {
			if e != cur {
				// A message begun on another connection (Postfix
				// reconnected): it continues here.
				old = s.unlinkLocked(cur)
				e.owner, sess.cur = sess, e
			}
			return e, old
		}
	}
	if cur != nil && st != policy.StageConnect && cur.sameSession(req) {
		return cur, nil
	}
	old = s.unlinkLocked(cur)
	sess.cur = nil
	now := time.Now()
	e = &entry{client: req.client, port: req.port, name: req.name}
	e.last.Store(now.UnixNano())
	if len(s.live) >= s.cfg.MaxInstances {
		s.sweepLocked(now)
	}
	if len(s.live) >= s.cfg.MaxInstances {
		if last := s.lastFull.Load(); now.UnixNano()-last > int64(time.Minute) && s.lastFull.CompareAndSwap(last, now.UnixNano()) {
			s.log.Warn("policy.max_instances reached: answering without per-message state, checks run per request",
				"max_instances", s.cfg.MaxInstances)
		}
		e.stateless = true
		return e, old
	}
	e.owner = sess
	s.live[e] = struct{}{}
	sess.cur = e
	return e, old
}

// unlinkLocked forgets e (nil is fine) and returns it for closing.
func (s *Server) unlinkLocked(e *entry) *entry {
	if e == nil {
		return nil
	}
	delete(s.live, e)
	if e.keyed && s.byKey[e.key] == e {
		delete(s.byKey, e.key)
	}
	e.keyed = false
	return e
}

// drop forgets and closes an entry that is not locked.
func (s *Server) drop(e *entry) {
	s.mu.Lock()
	s.unlinkLocked(e)
	s.mu.Unlock()
	e.close()
}

// endSession closes what a policy connection held.
func (s *Server) endSession(sess *session) {
	s.mu.Lock()
	var e *entry
	if sess.cur != nil && sess.cur.owner == sess {
		e = s.unlinkLocked(sess.cur)
	}
	sess.cur = nil
	s.mu.Unlock()
	if e != nil {
		e.close()
	}
}

// register files e under its message's instance; e is locked.
func (s *Server) register(e *entry, instance string) {
	if e.stateless || instance == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.live[e]; !ok {
		return
	}
	if e.keyed && s.byKey[e.key] == e {
		delete(s.byKey, e.key)
	}
	e.key = key{e.client, instance}
	e.keyed, e.hadInstance = true, true
	s.byKey[e.key] = e
}

// unregister takes e's finished message out of the instance map; e is locked.
func (s *Server) unregister(e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.keyed && s.byKey[e.key] == e {
		delete(s.byKey, e.key)
	}
	e.keyed = false
}

// sweepLocked closes entries idle for longer than instance_ttl. An entry
// in use is skipped: it is not idle.
func (s *Server) sweepLocked(now time.Time) int {
	n := 0
	limit := now.Add(-s.cfg.InstanceTTL).UnixNano()
	for e := range s.live {
		if e.last.Load() > limit || !e.mu.TryLock() {
			continue
		}
		s.unlinkLocked(e)
		if !e.closed && e.conn != nil {
			e.conn.Close()
		}
		e.closed = true
		e.mu.Unlock()
		n++
	}
	return n
}

// sweep closes expired entries as of now.
func (s *Server) sweep(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.sweepLocked(now)
	if n > 0 {
		s.log.Debug("expired idle policy instances", "count", n, "ttl", s.cfg.InstanceTTL)
	}
	return n
}

func (s *Server) sweepEvery(ctx context.Context, d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.sweep(now)
		}
	}
}

// sweepInterval checks a few times per TTL, at most once a second.
func sweepInterval(ttl time.Duration) time.Duration {
	return min(max(ttl/4, time.Second), time.Minute)
}

// advance brings e's engine connection up to the request's stage,
// replaying what the request tells of earlier stages, and returns the
// verdict at that stage. e is locked.
func (s *Server) advance(e *entry, req *request, st policy.Stage) policy.Verdict {
	ctx := s.conns.Context()
	if e.conn == nil {
		e.conn, e.connectV = s.engine.Connect(ctx, policy.ConnInfo{IP: req.ip, Name: req.name, Front: "policy", Macros: req.attrs})
	} else {
		e.conn.AddMacros(req.attrs)
	}
	if st == policy.StageConnect {
		return e.connectV
	}

	// HELO and EHLO end any transaction; a new name is a new HELO.
	heloChanged := e.heloDone && req.helo != "" && req.helo != e.helo
	if st == policy.StageHelo || heloChanged {
		s.endMessage(e)
	}
	if heloChanged || !e.heloDone && (req.helo != "" || st == policy.StageHelo) {
		e.heloV = e.conn.Helo(ctx, req.helo)
		e.helo, e.heloDone = req.helo, true
	}
	if st == policy.StageHelo {
		return e.heloV
	}

	m := &e.msg
	if !m.mailDone || req.sender != m.sender || m.instance != "" && req.instance != m.instance {
		s.endMessage(e)
		m.mailV = e.conn.Mail(ctx, req.sender, req.mailInfo())
		// No content comes through this protocol: say so rather than
		// verify DKIM on an empty message.
		e.conn.SkipContent()
		m.mailDone, m.sender, m.instance = true, req.sender, req.instance
		m.rcpts = map[string]policy.Verdict{}
		s.register(e, req.instance)
		s.collect(e)
	} else if m.instance == "" && req.instance != "" {
		// MAIL was checked before Postfix gave the message its instance
		// (smtpd_delay_reject = no): this is the same message.
		m.instance = req.instance
		s.register(e, req.instance)
	}
	e.conn.SetQueueID(req.queueID)

	switch st {
	case policy.StageMail:
		return m.mailV
	case policy.StageRcpt:
		if v, ok := m.rcpts[req.rcpt]; ok {
			return v
		}
		v := e.conn.Rcpt(ctx, req.rcpt)
		m.rcpts[req.rcpt] = v
		s.collect(e)
		return v
	case policy.StageData:
		s.toData(e, req)
		return m.dataV
	}
	if !m.eomDone {
		s.toData(e, req)
		if req.size > 0 {
			// The only part of the content this protocol tells.
			e.conn.SetSize(req.size)
		}
		m.eomV = e.conn.EndOfMessage(ctx)
		m.eomDone = true
		s.logUnsent(e, append(m.headers, m.eomV.Headers...))
		m.headers = nil
		s.unregister(e)
	}
	return m.eomV
}

// toData runs the data stage once. When no RCPT request came (the policy
// check is not in smtpd_recipient_restrictions) the one recipient
// Postfix names, if any, is replayed first.
func (s *Server) toData(e *entry, req *request) {
	m := &e.msg
	if m.dataDone {
		return
	}
	if len(m.rcpts) == 0 && req.rcpt != "" {
		m.rcpts[req.rcpt] = e.conn.Rcpt(s.conns.Context(), req.rcpt)
	}
	m.dataV = e.conn.EndOfHeaders(s.conns.Context())
	m.dataDone = true
	s.collect(e)
}

// collect moves the header edits the engine decided into the queue of
// headers to prepend.
func (s *Server) collect(e *entry) {
	e.msg.headers = append(e.msg.headers, e.conn.TakeHeaders()...)
}

// endMessage closes the current message before another begins.
func (s *Server) endMessage(e *entry) {
	m := &e.msg
	if !m.mailDone {
		return
	}
	if !m.eomDone {
		s.logUnsent(e, m.headers)
		e.conn.Abort()
	}
	s.unregister(e)
	e.msg = message{}
}

// nextHeader returns the next header to prepend and a func that marks it
// sent: rule headers first, then Authentication-Results.
func (s *Server) nextHeader(e *entry) (string, func()) {
	m := &e.msg
	for len(m.headers) > 0 {
		if h := header(m.headers[0]); h != "" {
			return h, func() { m.headers = m.headers[1:] }
		}
		s.log.Warn("header edit with an unusable name not applied", "name", m.headers[0].Name)
		m.headers = m.headers[1:]
	}
	if m.arSent || !m.mailDone || e.stateless {
		return "", nil
	}
	host := s.engine.Settings().Hostname
	if host == "" {
		return "", nil
	}
	return "Authentication-Results: " + unfold(policy.AuthResults(host, e.conn.Facts())), func() { m.arSent = true }
}

// answer turns the verdict into the action to send, with a header to
// prepend where Postfix allows one: RCPT and DATA.
func (s *Server) answer(e *entry, v policy.Verdict, st policy.Stage) string {
	var h string
	var sent func()
	if st == policy.StageRcpt && v.Action == policy.Continue ||
		st == policy.StageData && (v.Action == policy.Continue || v.Action == policy.Accept) {
		h, sent = s.nextHeader(e)
	}
	a, used := action(v, h)
	if used {
		sent()
	}
	return a
}

// logUnsent tells which rule headers never reached the message: Postfix
// takes one PREPEND per answer, and none at end of message.
func (s *Server) logUnsent(e *entry, hs []policy.HeaderEdit) {
	score := s.engine.Settings().ScoreHeader
	var names []string
	for _, h := range hs {
		// Ours are added when a slot is free; their loss is no news.
		if strings.EqualFold(h.Name, "Authentication-Results") || score != "" && strings.EqualFold(h.Name, score) {
			continue
		}
		names = append(names, h.Name)
	}
	if len(names) > 0 {
		s.log.Info("header edits not applied: a policy service can prepend one header per RCPT or DATA answer",
			"queue_id", e.conn.Facts().QueueID, "headers", strings.Join(names, ","))
	}
}
