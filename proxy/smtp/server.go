// Package smtp is the inline SMTP proxy front: it speaks SMTP to clients,
// asks the engine at every stage, and relays what passes to the real MTA,
// whose own replies go back to the client.
package smtp

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/proxy"
)

// ErrServerClosed is returned by Serve when called after Shutdown.
var ErrServerClosed = errors.New("smtp proxy: server closed")

// probeRetry is how long a failed look at upstream's extensions is
// trusted before the next client triggers another.
const probeRetry = 10 * time.Second

// Server is the SMTP proxy.
type Server struct {
	engine   *policy.Engine
	log      *slog.Logger
	settings atomic.Pointer[settings]
	caps     atomic.Pointer[caps]

	probeMu   sync.Mutex
	probeFail time.Time

	conns  proxy.Conns[*session]
	mu     sync.Mutex // guards perIP
	perIP  map[netip.Addr]int
	probed sync.Once
	limits atomic.Pointer[limitCache] // for the failed-auth limit
	mechs  mechCache                  // Dovecot's, for EHLO
	auths  [authOutcomes]atomic.Uint64
}

// New checks cfg, loads its certificate and returns a server; nothing
// listens until Serve.
func New(engine *policy.Engine, cfg Config, log *slog.Logger) (*Server, error) {
	if engine == nil {
		return nil, errors.New("smtp proxy: no engine")
	}
	if log == nil {
		log = slog.Default()
	}
	set, err := newSettings(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{engine: engine, log: log, perIP: map[netip.Addr]int{}}
	s.limits.Store(&limitCache{newLimitCache()})
	s.settings.Store(set)
	return s, nil
}

// Reload swaps in a new config for new connections: certificate, limits,
// timeouts, trusted networks, upstream. Listen addresses are the caller's.
// On error the running config stays.
func (s *Server) Reload(cfg Config) error {
	set, err := newSettings(cfg)
	if err != nil {
		return err
	}
	old := s.settings.Swap(set)
	if old.cfg.Upstream != set.cfg.Upstream || old.cfg.UpstreamTLS != set.cfg.UpstreamTLS {
		s.caps.Store(nil)
		s.conns.Go(func(context.Context) { s.upstreamCaps() })
	}
	return nil
}

// ListenAndServe listens on Listen and ListenTLS and serves both until
// Shutdown.
func (s *Server) ListenAndServe() error {
	cfg := s.settings.Load().cfg
	errc := make(chan error, 2)
	n := 0
	for _, l := range []struct {
		addr     string
		implicit bool
	}{{cfg.Listen, false}, {cfg.ListenTLS, true}} {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			s.Shutdown(context.Background())
			return fmt.Errorf("listening on %s: %w", l.addr, err)
		}
		n++
		go func(implicit bool) {
			if implicit {
				errc <- s.ServeTLS(ln)
			} else {
				errc <- s.Serve(ln)
			}
		}(l.implicit)
	}
	if n == 0 {
		return errors.New("smtp proxy: neither smtp.listen nor smtp.listen_tls is set")
	}
	// The first listener to stop (Shutdown, or an error) ends the call.
	err := <-errc
	if errors.Is(err, ErrServerClosed) {
		return nil
	}
	return err
}

// Serve accepts plain SMTP connections (STARTTLS offered when a
// certificate is configured) on ln until Shutdown, then returns nil.
func (s *Server) Serve(ln net.Listener) error { return s.serve(ln, false) }

// ServeTLS accepts implicit-TLS connections on ln until Shutdown.
func (s *Server) ServeTLS(ln net.Listener) error { return s.serve(ln, true) }

func (s *Server) serve(ln net.Listener, implicitTLS bool) error {
	if err := s.conns.Listen(ln); err != nil {
		return ErrServerClosed
	}
	s.probed.Do(func() { s.conns.Go(func(context.Context) { s.upstreamCaps() }) })
	return proxy.Serve(ln, "SMTP", s.conns.Closing, s.log, func(c net.Conn) { s.accept(c, implicitTLS) })
}

func (s *Server) accept(c net.Conn, implicitTLS bool) {
	set := s.settings.Load()
	sess := &session{srv: s, settings: set, sock: c, peer: remoteAddrPort(c), implicitTLS: implicitTLS}
	switch err := s.conns.Add(sess, set.cfg.MaxConnections); {
	case errors.Is(err, proxy.ErrClosing):
		c.Close()
		return
	case errors.Is(err, proxy.ErrFull):
		s.log.Warn("smtp: connection refused: too many connections", "client_ip", remoteIP(c).String(), "limit", set.cfg.MaxConnections)
		if !implicitTLS {
			// A TLS client could not read a plain-text reply.
			c.SetWriteDeadline(time.Now().Add(time.Second))
			fmt.Fprintf(c, "421 4.7.0 %s Error: too many connections; try again later\r\n", set.cfg.Hostname)
		}
		c.Close()
		return
	}
	go func() {
		defer s.release(sess)
		sess.serve()
	}()
}

// admitIP counts a connection against its client's limit.
func (s *Server) admitIP(sess *session, ip netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	limit := sess.settings.cfg.MaxConnectionsPerIP
	if limit > 0 && s.perIP[ip] >= limit {
		return false
	}
	s.perIP[ip]++
	sess.countedIP = ip
	return true
}

func (s *Server) release(sess *session) {
	s.mu.Lock()
	if ip := sess.countedIP; ip.IsValid() {
		if s.perIP[ip]--; s.perIP[ip] <= 0 {
			delete(s.perIP, ip)
		}
	}
	s.mu.Unlock()
	s.conns.Done(sess)
}

// Shutdown stops accepting connections and tells idle clients 421; the
// transactions in flight finish until ctx ends, then their connections
// are closed.
func (s *Server) Shutdown(ctx context.Context) error {
	if n := s.conns.Shutdown(ctx, (*session).wakeIfIdle, (*session).forceClose); n > 0 {
		return fmt.Errorf("closed %d SMTP connections still open at shutdown", n)
	}
	return nil
}

// upstreamCaps returns what upstream offers, learning it first if need
// be. When upstream cannot be reached the result is not known, and the
// proxy offers only what it can do alone.
func (s *Server) upstreamCaps() caps {
	if c := s.caps.Load(); c != nil {
		return *c
	}
	s.probeMu.Lock()
	defer s.probeMu.Unlock()
	if c := s.caps.Load(); c != nil {
		return *c
	}
	if time.Since(s.probeFail) < probeRetry {
		return caps{}
	}
	set := s.settings.Load()
	ctx, cancel := context.WithTimeout(s.conns.Context(), min(set.cfg.UpstreamTimeout, 30*time.Second))
	defer cancel()
	up, err := dialUpstream(ctx, set, nil, s.log)
	if err != nil {
		s.probeFail = time.Now()
		s.log.Warn("smtp: cannot learn upstream's extensions", "upstream", set.cfg.Upstream, "err", err)
		return caps{}
	}
	up.quit()
	c := up.caps
	s.caps.Store(&c)
	return c
}

// learned records the extensions of a live upstream session.
func (s *Server) learned(c caps) {
	s.caps.Store(&c)
}

func remoteAddrPort(c net.Conn) netip.AddrPort {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

func remoteIP(c net.Conn) netip.Addr { return remoteAddrPort(c).Addr() }

// bufferedConn reads first what a bufio.Reader already holds, so that
// bytes read past a PROXY header reach the SMTP or TLS layer.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func tlsServerConfig(s *Server) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := s.settings.Load().cert; c != nil {
				return c, nil
			}
			return nil, errors.New("no certificate configured (smtp.tls_cert)")
		},
	}
}
