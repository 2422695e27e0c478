package proxy

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
)

func TestServe(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, shutdown := range []bool{true, false} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var closing atomic.Bool
		handled := make(chan struct{}, 1)
		errc := make(chan error, 1)
		go func() {
			errc <- Serve(ln, "test", closing.Load, log, func(c net.Conn) { c.Close(); handled <- struct{}{} })
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		<-handled
		closing.Store(shutdown)
		ln.Close()
		err = <-errc
		if shutdown && err != nil {
			t.Errorf("a shutdown must end Serve with nil, got %v", err)
		}
		if !shutdown && (err == nil || !strings.Contains(err.Error(), "accepting test connections")) {
			t.Errorf("a listener lost outside a shutdown must be an error naming the front, got %v", err)
		}
	}
}
