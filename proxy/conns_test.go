package proxy

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// A connection still open when the shutdown context ends sees the
// server's context end, is closed, and is counted; background work is
// waited for.
func TestConnsShutdown(t *testing.T) {
	var g Conns[int]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Listen(ln); err != nil {
		t.Fatal(err)
	}
	if err := g.Add(1, 2); err != nil {
		t.Fatal(err)
	}
	if err := g.Add(2, 2); err != nil {
		t.Fatal(err)
	}
	if err := g.Add(3, 2); !errors.Is(err, ErrFull) {
		t.Fatalf("third connection over a limit of 2: %v", err)
	}
	g.Done(2)
	var bgDone atomic.Bool
	g.Go(func(ctx context.Context) {
		<-ctx.Done()
		time.Sleep(10 * time.Millisecond)
		bgDone.Store(true)
	})
	ctx := g.Context()
	var woken, forced atomic.Int32
	go func() {
		<-ctx.Done() // the stuck connection gives up when its checks are cancelled
		g.Done(1)
	}()
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	n := g.Shutdown(short, func(int) { woken.Add(1) }, func(int) { forced.Add(1) })
	if n != 1 || woken.Load() != 1 || forced.Load() != 1 {
		t.Fatalf("Shutdown closed %d, woke %d, forced %d; want 1 each", n, woken.Load(), forced.Load())
	}
	if !bgDone.Load() {
		t.Fatal("Shutdown returned before background work ended")
	}
	if _, err := ln.Accept(); err == nil {
		t.Fatal("listener still open")
	}
	if err := g.Add(4, 0); !errors.Is(err, ErrClosing) {
		t.Fatalf("connection added after shutdown: %v", err)
	}
	if err := g.Listen(ln); !errors.Is(err, ErrClosing) {
		t.Fatalf("listener added after shutdown: %v", err)
	}
}

// With every connection ended in time, Shutdown forces nothing.
func TestConnsShutdownClean(t *testing.T) {
	var g Conns[string]
	if err := g.Add("a", 0); err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(20 * time.Millisecond); g.Done("a") }()
	if n := g.Shutdown(context.Background(), nil, func(string) { t.Error("forced close") }); n != 0 {
		t.Fatalf("Shutdown forced %d", n)
	}
	if g.Context().Err() == nil {
		t.Fatal("server context still live after Shutdown")
	}
}
