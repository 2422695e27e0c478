// Package policyd is the Postfix policy service front: it answers SMTPD
// access policy delegation requests (check_policy_service) by turning each
// protocol state into an engine stage.
package policyd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/proxy"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("policy server closed")

// Server answers policy requests on behalf of an engine.
type Server struct {
	engine *policy.Engine
	cfg    Config
	log    *slog.Logger

	// conns' context ends when Shutdown gives up waiting: checks in
	// flight stop.
	conns    proxy.Conns[*connState]
	sweeping sync.Once

	mu    sync.Mutex
	live  map[*entry]struct{}
	byKey map[key]*entry

	connections atomic.Int64
	requests    atomic.Int64
	malformed   atomic.Int64
	lastFull    atomic.Int64 // when the "too many instances" warning was last logged
}

// connState is what Shutdown needs to know of a connection.
type connState struct {
	c    net.Conn
	busy atomic.Bool
}

// Stats are counts since the server started, for tests and metrics.
type Stats struct {
	Connections int64 // connections accepted
	Open        int64 // connections open now
	Requests    int64 // requests answered (or the answer being written), malformed ones included
	Malformed   int64 // requests answered DEFER_IF_PERMIT because they could not be used
	Instances   int64 // messages and sessions held now
}

// New returns a policy server. Zero values in cfg take the defaults.
func New(engine *policy.Engine, cfg Config, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{
		engine: engine,
		cfg:    cfg.withDefaults(),
		log:    log,
		live:   map[*entry]struct{}{},
		byKey:  map[key]*entry{},
	}
}

// Stats returns the counters so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	n := int64(len(s.live))
	s.mu.Unlock()
	open := int64(s.conns.Len())
	return Stats{
		Connections: s.connections.Load(),
		Open:        open,
		Requests:    s.requests.Load(),
		Malformed:   s.malformed.Load(),
		Instances:   n,
	}
}

// Serve accepts connections on ln until Shutdown; each connection serves
// many requests, one at a time, as Postfix sends them. Serve may run on
// several listeners at once.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.conns.Listen(ln); err != nil {
		return ErrServerClosed
	}
	s.sweeping.Do(func() {
		s.conns.Go(func(ctx context.Context) { s.sweepEvery(ctx, sweepInterval(s.cfg.InstanceTTL)) })
	})
	return proxy.Serve(ln, "policy", s.conns.Closing, s.log, func(c net.Conn) {
		st := &connState{c: c}
		if err := s.conns.Add(st, 0); err != nil {
			c.Close()
			return
		}
		s.connections.Add(1)
		peer := c.RemoteAddr().String()
		if peer == "" || peer == "@" {
			peer = "unix:" + ln.Addr().String() // unix peers have no address of their own
		}
		go func() {
			defer s.conns.Done(st)
			s.serveStream(c, peer, st)
			c.Close()
		}()
	})
}

// Shutdown stops accepting connections and closes the idle ones at once
// (Postfix reconnects for its next request); requests in flight finish
// until ctx ends. Then every message state is dropped.
func (s *Server) Shutdown(ctx context.Context) error {
	closeIdle := func(st *connState) {
		if !st.busy.Load() {
			st.c.Close()
		}
	}
	var err error
	if n := s.conns.Shutdown(ctx, closeIdle, func(st *connState) { st.c.Close() }); n > 0 {
		err = fmt.Errorf("closed %d policy connections still busy at shutdown", n)
	}
	s.mu.Lock()
	var left []*entry
	for e := range s.live {
		left = append(left, e)
	}
	s.live = map[*entry]struct{}{}
	s.byKey = map[key]*entry{}
	s.mu.Unlock()
	for _, e := range left {
		e.close()
	}
	return err
}

// stream is what a session reads and writes: a net.Conn in service, a
// buffer in the fuzz test.
type stream interface {
	io.Reader
	io.Writer
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// serveStream answers requests until the peer closes, a timeout, an
// oversized request or shutdown. st is nil when there is no Shutdown to
// tell about.
func (s *Server) serveStream(rw stream, peer string, st *connState) {
	sess := &session{}
	defer s.endSession(sess)
	r := bufio.NewReaderSize(rw, MaxLine)
	for {
		rw.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		if _, err := r.Peek(1); err != nil {
			switch {
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
			case isTimeout(err):
				s.log.Debug("closing idle policy connection", "peer", peer, "idle", s.cfg.IdleTimeout)
			default:
				s.log.Warn("policy connection failed", "peer", peer, "err", err)
			}
			return
		}
		if st != nil {
			s.setBusy(st, true)
		}
		rw.SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout))
		answer, keep := s.next(r, sess, peer)
		if answer != "" {
			s.requests.Add(1) // before the write, so that a client reading the answer sees it counted
			rw.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
			if _, err := io.WriteString(rw, "action="+answer+"\n\n"); err != nil {
				s.log.Warn("writing policy answer", "peer", peer, "err", err)
				return
			}
		}
		if st != nil && !s.setBusy(st, false) {
			return
		}
		if !keep {
			return
		}
	}
}

// next reads and answers one request. An empty answer means none can be
// given; keep false means the connection must close after it.
func (s *Server) next(r *bufio.Reader, sess *session, peer string) (answer string, keep bool) {
	attrs, err := readAttrs(r)
	if err == nil {
		var req *request
		if req, err = parseRequest(attrs); err == nil {
			return s.handle(sess, req, peer), true
		}
	}
	switch {
	case errors.Is(err, errMalformed):
		s.malformed.Add(1)
		s.log.Error("malformed policy request; answering DEFER_IF_PERMIT", "peer", peer, "err", err)
		return deferAnswer, true
	case errors.Is(err, errTooLong):
		// The rest of the request is unread: answer, then close rather
		// than take its tail for the next request.
		s.malformed.Add(1)
		s.log.Error("oversized policy request; answering DEFER_IF_PERMIT and closing", "peer", peer, "err", err)
		return deferAnswer, false
	case isTimeout(err):
		s.log.Warn("policy request not completed in time; closing", "peer", peer, "timeout", s.cfg.ReadTimeout)
	case errors.Is(err, io.ErrUnexpectedEOF):
		s.log.Warn("policy connection closed within a request", "peer", peer)
	default:
		s.log.Warn("reading policy request", "peer", peer, "err", err)
	}
	return "", false
}

// setBusy marks a connection busy with a request or idle between
// requests, so that Shutdown closes only idle ones. It reports false
// once shutdown has begun: either this sees the shutdown or Shutdown
// sees the connection idle.
func (s *Server) setBusy(st *connState, busy bool) bool {
	st.busy.Store(busy)
	return !s.conns.Closing()
}

// handle answers one well-formed request.
func (s *Server) handle(sess *session, req *request, peer string) (answer string) {
	st, ok := req.stage()
	if !ok {
		// VRFY, ETRN and states newer than this code: no stage to run.
		s.log.Debug("policy request at a state mailward does not filter", "peer", peer, "state", req.state)
		return "DUNNO"
	}
	e, closeAfter := s.entryFor(sess, req, st)
	defer func() {
		if r := recover(); r != nil {
			// The entry's state is unknown now: drop it rather than reuse it.
			s.log.Error("internal error answering policy request", "peer", peer, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			closeAfter = true
			answer = deferAnswer
		}
		e.mu.Unlock()
		if closeAfter {
			s.drop(e)
		}
	}()
	v := s.advance(e, req, st)
	answer = s.answer(e, v, st)
	s.log.Debug("policy request", "peer", peer, "state", req.state, "client", req.client,
		"instance", req.instance, "queue_id", req.queueID, "rcpt", req.rcpt, "action", answer)
	return answer
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
