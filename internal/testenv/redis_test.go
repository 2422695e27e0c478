package testenv

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"
)

func TestRedisStopStartPause(t *testing.T) {
	r := StartRedis(t)
	if got := r.MustDo("SET", "k", "v"); got != "OK" {
		t.Fatalf("SET: %q", got)
	}
	if got := r.MustDo("GET", "k"); got != "v" {
		t.Fatalf("GET: %q, want v", got)
	}
	if got := r.MustDo("CONFIG", "GET", "save"); got != "save\n" {
		t.Fatalf("persistence is on: CONFIG GET save = %q", got)
	}
	if got := r.MustDo("GET", "missing"); got != "(nil)" {
		t.Fatalf("GET missing: %q", got)
	}
	if _, err := r.Do("NOSUCHCOMMAND"); err == nil {
		t.Fatal("an unknown command gave no error")
	}

	addr := r.Addr()
	r.Stop()
	r.Stop() // twice is fine
	if _, err := r.Do("PING"); err == nil {
		t.Fatal("PING answered after Stop")
	}
	r.Start()
	if r.Addr() != addr {
		t.Fatalf("restarted on %s, want %s", r.Addr(), addr)
	}
	if got := r.MustDo("GET", "k"); got != "(nil)" {
		t.Fatalf("data survived a restart without persistence: %q", got)
	}

	r.Pause()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("a paused server should still accept connections: %v", err)
	}
	c.SetDeadline(time.Now().Add(200 * time.Millisecond))
	c.Write([]byte("PING\r\n"))
	buf := make([]byte, 16)
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("a paused server answered %q", buf[:n])
	}
	c.Close()
	r.Resume()
	if got := r.MustDo("PING"); got != "PONG" {
		t.Fatalf("PING after Resume: %q", got)
	}
	if n, err := r.ConnectedClients(); err != nil || n != 0 {
		t.Fatalf("ConnectedClients = %d, %v; want 0", n, err)
	}
}

func TestRedisPassword(t *testing.T) {
	r := StartRedisWith(t, RedisOptions{Password: "s3cret"})
	if _, err := r.Do("GET", "k"); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("GET without AUTH: %v, want NOAUTH", err)
	}
}

func TestRedisTLS(t *testing.T) {
	cert := SelfSignedCert(t, "127.0.0.1")
	r := StartRedisWith(t, RedisOptions{TLS: cert})
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", r.Addr(), &tls.Config{RootCAs: cert.Pool})
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	c.Write([]byte("PING\r\n"))
	buf := make([]byte, 7)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "+PONG\r\n" {
		t.Fatalf("PING over TLS: %q %v", buf[:n], err)
	}
}

func TestRedisCluster(t *testing.T) {
	c := StartRedisCluster(t, 3)
	if len(c.Addrs()) != 3 {
		t.Fatalf("Addrs = %v", c.Addrs())
	}
	// Every master owns slots.
	for i := range 3 {
		if id := c.Node(i).MustDo("CLUSTER", "MYID"); len(id) != 40 {
			t.Fatalf("node %d: CLUSTER MYID = %q", i, id)
		}
		info := c.Node(i).MustDo("CLUSTER", "INFO")
		if !strings.Contains(info, "cluster_size:3") {
			t.Fatalf("node %d: %s", i, info)
		}
	}
	// A key is refused by a node that does not own its slot.
	moved := 0
	for i := range 3 {
		if _, err := c.Node(i).Do("SET", "some-key", "v"); err != nil && strings.HasPrefix(err.Error(), "MOVED") {
			moved++
		}
	}
	if moved != 2 {
		t.Fatalf("%d nodes answered MOVED for one key, want 2", moved)
	}

	c.Node(1).Stop()
	c.Node(1).Start()
	if err := c.WaitOK(20 * time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestRedisSentinel(t *testing.T) {
	m := StartRedis(t)
	s := StartRedisSentinel(t, m, "mymaster")
	out := s.MustDo("SENTINEL", "get-master-addr-by-name", "mymaster")
	if out != "127.0.0.1\n"+strings.TrimPrefix(m.Addr(), "127.0.0.1:") {
		t.Fatalf("sentinel reports master %q, want %s", out, m.Addr())
	}
}
