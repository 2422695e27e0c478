// Package proxy holds what the fronts in its sub-packages share. Each
// front (milter, smtp, policyd) translates one protocol into engine calls.
package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"syscall"
	"time"
)

// Serve hands each connection ln accepts to handle, until accepting fails
// for good or closing reports a shutdown (then it returns nil). Running out
// of file descriptors or a temporary error is retried after a growing
// pause, so a burst of clients never stops a front.
func Serve(ln net.Listener, what string, closing func() bool, log *slog.Logger, handle func(net.Conn)) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if closing() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				log.Warn("accept failed; retrying", "front", what, "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("accepting %s connections: %w", what, err)
		}
		delay = 0
		handle(c)
	}
}
