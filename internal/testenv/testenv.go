// Package testenv starts the real parts that tests run against: a fixture
// DNS server, redis-server, a private Postfix instance and an SMTP sink.
// Everything listens on loopback only.
package testenv

import (
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// E2E reports whether end-to-end tests must run: with MAILWARD_E2E=1 a
// missing binary fails the test instead of skipping it.
func E2E() bool { return os.Getenv("MAILWARD_E2E") == "1" }

// Require returns the path of an external program the test needs. Without
// it the test is skipped, or fails under MAILWARD_E2E=1.
func Require(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"} {
		p := dir + "/" + name
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if E2E() {
		t.Fatalf("%s is not installed; MAILWARD_E2E=1 requires it (run .ci/run, which installs it)", name)
	}
	t.Skipf("%s is not installed: skipping (set MAILWARD_E2E=1 to make this a failure)", name)
	return ""
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// It is picked below the kernel's ephemeral range when it can be: a port
// from that range (what listening on port 0 gives) can be taken, before
// the process under test binds it, as the source port of any outgoing
// connection the tests make, and the tests make many.
func FreePort(t testing.TB) int {
	t.Helper()
	if lo := ephemeralLow(); lo > 11000 {
		for range 50 {
			port := 10000 + rand.IntN(lo-10000)
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err == nil {
				l.Close()
				return port
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ephemeralLow is the first port of Linux's ephemeral range, or 0.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	lo, _ := strconv.Atoi(f[0])
	return lo
}

// WriteFiles writes name → content (names may hold directories) into a
// new temporary directory and returns it.
func WriteFiles(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
