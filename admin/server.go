package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mailward/mailward/internal/config"
)

// Config is the admin listener's part of the config file.
type Config struct {
	// Listen is HOST:PORT; empty turns the admin listener off.
	Listen string `yaml:"listen"`
	// Pprof serves /debug/pprof/ on the admin listener.
	Pprof bool `yaml:"pprof"`
}

// Validate reports bad values as config.Problems keyed within the admin
// section.
func (c Config) Validate() error {
	var ps config.Problems
	if c.Listen != "" {
		if err := config.CheckHostPort(c.Listen, true); err != nil {
			ps.Add("listen", "%v", err)
		}
	}
	return ps.Err()
}

// Hooks are what the admin endpoints ask of the running daemon.
type Hooks struct {
	// Ready reports why mailward cannot take mail, or nil. A shared
	// dependency that mail flows past (Redis behind its breaker) is no
	// reason: a load balancer would pull every instance at once.
	Ready func(ctx context.Context) error
	// Health lists the state of such dependencies for /healthz, one
	// line each ("redis: ok"); /healthz answers 200 either way.
	Health func(ctx context.Context) []string
	// Reload reloads config and rules, as SIGHUP does.
	Reload func() error
}

// Server serves the admin endpoints.
type Server struct {
	srv *http.Server
	log *slog.Logger
}

// New builds the admin HTTP server.
func New(cfg Config, m *Metrics, h Hooks, log *slog.Logger) *Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
		if h.Health != nil {
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			for _, line := range h.Health(ctx) {
				fmt.Fprintln(w, line)
			}
		}
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if h.Ready != nil {
			if err := h.Ready(ctx); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		if h.Reload == nil {
			http.Error(w, "reload is not available", http.StatusNotImplemented)
			return
		}
		if err := h.Reload(); err != nil {
			http.Error(w, "reload failed; the running config and rules stay:\n"+err.Error(), http.StatusUnprocessableEntity)
			return
		}
		fmt.Fprintln(w, "reloaded")
	})
	if cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return &Server{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)},
		log: log,
	}
}

// Serve serves on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin listener: %w", err)
	}
	return nil
}

// Shutdown stops the server.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }
