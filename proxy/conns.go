package proxy

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
)

var (
	// ErrClosing refuses a listener or connection once Shutdown has begun.
	ErrClosing = errors.New("server shutting down")
	// ErrFull refuses a connection over the limit.
	ErrFull = errors.New("too many connections")
)

// Conns is the lifecycle every front shares: the listeners it accepts
// on, the connections it has open, the context their checks run under,
// and a shutdown that lets them finish, then closes what is left. C is
// what a front keeps of one connection. The zero value is ready to use.
type Conns[C comparable] struct {
	closing atomic.Bool

	mu     sync.Mutex
	lns    map[net.Listener]struct{}
	conns  map[C]struct{}
	ctx    context.Context
	cancel context.CancelFunc
	open   sync.WaitGroup // connections
	bg     sync.WaitGroup // work started by Go
}

// Context is the context a front's connections run under: it ends when
// Shutdown gives up waiting for them, so checks in flight stop, or when
// Shutdown returns.
func (g *Conns[C]) Context() context.Context {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.initLocked()
	return g.ctx
}

func (g *Conns[C]) initLocked() {
	if g.ctx == nil {
		g.ctx, g.cancel = context.WithCancel(context.Background())
		g.lns = map[net.Listener]struct{}{}
		g.conns = map[C]struct{}{}
	}
}

// Closing reports whether Shutdown has begun.
func (g *Conns[C]) Closing() bool { return g.closing.Load() }

// Listen records a listener for Shutdown to close. After Shutdown has
// begun it closes ln and returns ErrClosing.
func (g *Conns[C]) Listen(ln net.Listener) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing.Load() {
		ln.Close()
		return ErrClosing
	}
	g.initLocked()
	g.lns[ln] = struct{}{}
	return nil
}

// Add records a connection, refusing it (ErrClosing) once Shutdown has
// begun or (ErrFull) when max > 0 are open already. The caller closes a
// refused one, and calls Done when an added one ends.
func (g *Conns[C]) Add(c C, max int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing.Load() {
		return ErrClosing
	}
	g.initLocked()
	if max > 0 && len(g.conns) >= max {
		return ErrFull
	}
	g.conns[c] = struct{}{}
	g.open.Add(1)
	return nil
}

// Done forgets a connection that has ended.
func (g *Conns[C]) Done(c C) {
	g.mu.Lock()
	delete(g.conns, c)
	g.mu.Unlock()
	g.open.Done()
}

// Len is how many connections are open.
func (g *Conns[C]) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

// Go runs fn, work of the server's own rather than a connection's, under
// the server's context; Shutdown waits for it after ending that context.
// Once Shutdown has begun fn is not run, and Go returns false.
func (g *Conns[C]) Go(fn func(ctx context.Context)) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing.Load() {
		return false
	}
	g.initLocked()
	ctx := g.ctx
	g.bg.Add(1)
	go func() {
		defer g.bg.Done()
		fn(ctx)
	}()
	return true
}

// Shutdown closes the listeners and calls wake, if not nil, on each open
// connection (under a lock: it must not block), then waits for them to
// end until ctx ends. Then it ends the server's context, calls
// forceClose on each connection left and waits for those too. It
// returns how many were closed so.
func (g *Conns[C]) Shutdown(ctx context.Context, wake, forceClose func(C)) int {
	g.mu.Lock()
	g.closing.Store(true)
	g.initLocked()
	for ln := range g.lns {
		ln.Close()
	}
	if wake != nil {
		for c := range g.conns {
			wake(c)
		}
	}
	g.mu.Unlock()
	done := make(chan struct{})
	go func() { g.open.Wait(); close(done) }()
	n := 0
	select {
	case <-done:
	case <-ctx.Done():
		// Cancel under the lock: a connection that ends because its
		// context ended is still one Shutdown had to stop, so it is
		// counted and closed rather than racing its own Done.
		g.mu.Lock()
		g.cancel()
		n = len(g.conns)
		for c := range g.conns {
			forceClose(c)
		}
		g.mu.Unlock()
		<-done
	}
	g.cancel()
	g.bg.Wait()
	return n
}
