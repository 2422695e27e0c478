// Package milter is the milter front: it speaks the Sendmail milter
// protocol (versions 2 to 6) to Postfix or Sendmail and turns each stage
// into an engine call.
//
// With protocol 6 it asks the MTA not to wait for a reply to each header
// field and body chunk, and to keep the space after each header's colon,
// so that DKIM's "simple" canonicalization sees the header as sent. The
// no-reply options are only safe when what the MTA sends is acknowledged
// at once (see quickAcker): on TCP outside Linux they are not asked for. All
// the MTA says on one connection (client address, HELO, the macros of
// every stage) is kept for as long as that connection, across messages.
package milter

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mailward/mailward/internal/config"
	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/proxy"
)

// Config is the milter front's part of the config file.
type Config struct {
	// Listen is inet:HOST:PORT or unix:/path, as Postfix writes it.
	Listen string `yaml:"listen"`
	// SocketMode is the mode of a unix socket, e.g. "0660".
	SocketMode string `yaml:"socket_mode"`
}

// Validate reports bad values as config.Problems keyed within the milter
// section.
func (c Config) Validate() error {
	var ps config.Problems
	if c.Listen != "" {
		if err := config.CheckSocketAddr(c.Listen); err != nil {
			ps.Add("listen", "%v", err)
		}
	}
	if _, err := c.Mode(); err != nil {
		ps.Add("socket_mode", "%v", err)
	}
	return ps.Err()
}

// Mode parses SocketMode; 0 means leave the mode alone.
func (c Config) Mode() (fs.FileMode, error) { return config.SocketMode(c.SocketMode) }

// Server serves the milter protocol on behalf of an engine.
type Server struct {
	engine      *policy.Engine
	log         *slog.Logger
	readTimeout time.Duration
	// unanswered, in tests, is called each time the session waits for
	// the MTA again without having replied to what it read (cmd is the
	// last packet read): the MTA may send more without waiting, and
	// nothing but an ACK of ours lets Nagle's algorithm on its side go on.
	unanswered func(c net.Conn, cmd byte, proto uint32)

	// conns' context ends when Shutdown gives up waiting: checks in
	// flight stop.
	conns proxy.Conns[net.Conn]
	// wires keeps the buffers of finished connections for new ones.
	wires sync.Pool
}

// New returns a milter server; readTimeout 0 means five minutes.
func New(engine *policy.Engine, readTimeout time.Duration, log *slog.Logger) *Server {
	if readTimeout <= 0 {
		readTimeout = 5 * time.Minute
	}
	if log == nil {
		log = slog.Default()
	}
	return &Server{engine: engine, log: log, readTimeout: readTimeout}
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("milter server closed")

// Serve accepts MTA connections on ln until Shutdown. Serve may run on
// several listeners at once.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.conns.Listen(ln); err != nil {
		return ErrServerClosed
	}
	return proxy.Serve(ln, "milter", s.conns.Closing, s.log, s.serveConn)
}

func (s *Server) serveConn(c net.Conn) {
	if err := s.conns.Add(c, 0); err != nil {
		c.Close()
		return
	}

	go func() {
		defer s.conns.Done(c)
		defer c.Close()
		w, ok := s.wires.Get().(*wire)
		if ok {
			w.reset(c)
		} else {
			w = newWire(c, s.readTimeout)
		}
		defer func() {
			w.reset(nil)
			s.wires.Put(w)
		}()
		ss := &session{srv: s, w: w, ctx: s.conns.Context()}
		defer func() {
			// One broken conversation must not take the others down; the
			// MTA applies its milter_default_action to this one.
			if v := recover(); v != nil {
				ss.endConn()
				s.log.Error("milter session failed", "client", c.RemoteAddr().String(), "panic", v, "stack", string(debug.Stack()))
			}
		}()
		if err := ss.run(); err != nil {
			level := slog.LevelWarn
			if errors.Is(err, net.ErrClosed) {
				level = slog.LevelDebug // closed by Shutdown
			}
			s.log.Log(context.Background(), level, "milter connection ended", "client", c.RemoteAddr().String(), "err", err)
		}
	}()
}

// Shutdown stops accepting connections, lets the open ones finish until
// ctx ends, then stops their checks and closes them.
func (s *Server) Shutdown(ctx context.Context) error {
	if n := s.conns.Shutdown(ctx, nil, func(c net.Conn) { c.Close() }); n > 0 {
		return fmt.Errorf("closed %d milter connections still open at shutdown", n)
	}
	return nil
}

// replyText formats an SMTP reply for SMFIR_REPLYCODE: one line, and '%'
// doubled because the MTA expands it like printf.
func replyText(v policy.Verdict) string {
	return strings.ReplaceAll(strconv.Itoa(v.Code)+" "+v.Enhanced+" "+oneLine(v.Text), "%", "%%")
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return ' '
		}
		return r
	}, s)
}
