package smtp

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/mailward/mailward/cache"
)

// authLimitBytes bounds the memory cache the failed-auth limit uses when
// the server was given no cache of its own.
const authLimitBytes = 4 << 20

type limitCache struct{ cache.Cache }

// SetCache makes the failed-auth limit use c (the cache the engine uses,
// so that a fleet sharing Redis shares the limit); it may be called while
// serving, as on a reload that replaced the cache. Without it the server
// keeps its own small memory cache.
func (s *Server) SetCache(c cache.Cache) {
	if c != nil {
		s.limits.Store(&limitCache{c})
	}
}

func newLimitCache() cache.Cache {
	return cache.NewMemory(cache.Config{MaxBytes: authLimitBytes}, cache.Options{})
}

// countIP is the address failures are counted for: the one the client
// connected from (or its PROXY header's), never one set by XCLIENT. IPv6
// clients are counted by /64, as one host usually has a whole one.
func (s *session) countIP() netip.Prefix {
	ip := s.countedIP
	if !ip.IsValid() {
		ip = s.peer.Addr()
	}
	ip = ip.Unmap()
	bits := ip.BitLen()
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

func (s *session) authLimitKeys() (count, block string) {
	p := s.countIP().String()
	return "smtp:authfail:" + p, "smtp:authblock:" + p
}

// authBlocked reports whether the client's address is over its
// failed-auth limit. A cache that does not answer blocks no one: a fault
// of ours must not lock users out.
func (s *session) authBlocked() bool {
	if s.settings.cfg.AuthFailLimit <= 0 {
		return false
	}
	_, block := s.authLimitKeys()
	until, ok, err := s.srv.limits.Load().Get(s.ctx, block)
	if err != nil || !ok {
		return false
	}
	s.log.Warn("smtp: AUTH refused: too many failed authentications from this address", "limit", s.settings.cfg.AuthFailLimit,
		"window", s.settings.cfg.AuthFailWindow, "blocked_until", string(until))
	return true
}

// countAuthFailure takes one failure from the address's allowance; once
// it is spent the address is blocked from AUTH until the limiter would
// allow another failure.
func (s *session) countAuthFailure() {
	limit, window := s.settings.cfg.AuthFailLimit, s.settings.cfg.AuthFailWindow
	if limit <= 0 {
		return
	}
	count, block := s.authLimitKeys()
	allowed, remaining, retry, err := s.srv.limits.Load().Allow(s.ctx, count, limit, window)
	if err != nil {
		s.log.Warn("smtp: failed-auth limit unavailable", "err", err)
		return
	}
	if allowed && remaining > 0 {
		return
	}
	if allowed {
		// That was the last failure allowed: the next AUTH is refused
		// until the allowance grows back by one.
		retry = window / time.Duration(limit)
	}
	retry = max(retry, time.Second)
	until := strconv.FormatInt(time.Now().Add(retry).Unix(), 10)
	if err := s.srv.limits.Load().Set(s.ctx, block, []byte(until), retry); err != nil {
		s.log.Warn("smtp: failed-auth limit unavailable", "err", err)
		return
	}
	s.log.Warn("smtp: too many failed authentications: address blocked from AUTH", "limit", limit, "window", window, "for", retry.Round(time.Second))
}
