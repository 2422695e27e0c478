package proxy

import (
	"net"
	"os"
	"strings"
	"testing"
)

func TestListenUnixRemovesStaleSocket(t *testing.T) {
	path := t.TempDir() + "/m.sock"
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	// Leave the file behind as a crashed process would.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l2, err := Listen("unix:"+path, 0o660)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer l2.Close()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode = %v, %v; want 0660", fi.Mode().Perm(), err)
	}
	if _, err := Listen("unix:"+path, 0); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a live socket was replaced: %v", err)
	}
	for _, addr := range []string{"bogus", "inet:127.0.0.1", "unix:", "udp:127.0.0.1:25"} {
		if _, err := Listen(addr, 0); err == nil {
			t.Errorf("malformed address %q was accepted", addr)
		}
	}
}

func TestListenInet(t *testing.T) {
	for _, addr := range []string{"inet:127.0.0.1:0", "inet:0@127.0.0.1", "tcp:127.0.0.1:0"} {
		l, err := Listen(addr, 0o600)
		if err != nil {
			t.Errorf("Listen(%q): %v", addr, err)
			continue
		}
		if a, ok := l.Addr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
			t.Errorf("Listen(%q) listens on %v", addr, l.Addr())
		}
		l.Close()
	}
}
