package testenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Redis is a redis-server process of a test: its own port on 127.0.0.1 and
// its own directory, no persistence. It can be killed, paused and
// restarted on the same port to test what clients do when Redis goes away.
type Redis struct {
	t    testing.TB
	bin  string
	args []string
	dir  string
	port int
	tls  *TestCert
	// confFn writes redis.conf for a port (sentinels need a config file).
	confFn func(port int) string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	log     *syncBuffer
	stopped bool
}

// RedisOptions change what StartRedisWith starts.
type RedisOptions struct {
	// Password, if set, is required of clients (requirepass).
	Password string
	// TLS, if set, makes the server speak only TLS with this certificate.
	TLS *TestCert
}

// StartRedis starts a redis-server on a free loopback port and kills it
// when the test ends. Without redis-server the test is skipped, or fails
// under MAILWARD_E2E=1.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	return StartRedisWith(t, RedisOptions{})
}

// StartRedisWith is StartRedis with a password or TLS.
func StartRedisWith(t testing.TB, o RedisOptions) *Redis {
	t.Helper()
	var extra []string
	if o.Password != "" {
		extra = append(extra, "--requirepass", o.Password)
	}
	r := newRedis(t, extra, nil)
	if o.TLS != nil {
		r.tls = o.TLS
	}
	r.startFresh()
	return r
}

// newRedis prepares a server; conf, if set, is written to redis.conf and
// passed first (sentinels need a config file they can rewrite).
func newRedis(t testing.TB, extra []string, conf func(port int) string) *Redis {
	t.Helper()
	bin := Require(t, "redis-server")
	dir := t.TempDir()
	r := &Redis{t: t, bin: bin, dir: dir, log: &syncBuffer{}}
	r.args = extra
	if conf != nil {
		r.args = append([]string{filepath.Join(dir, "redis.conf")}, extra...)
	}
	r.confFn = conf
	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			t.Logf("redis-server %s log:\n%s", r.Addr(), tail(r.log.String(), 40))
		}
	})
	return r
}

// startFresh picks a free port and starts; another process may take the
// port between FreePort and the bind, so it tries a few ports.
func (r *Redis) startFresh() {
	r.t.Helper()
	var err error
	for range 5 {
		r.port = FreePort(r.t)
		if r.confFn != nil {
			if err := os.WriteFile(filepath.Join(r.dir, "redis.conf"), []byte(r.confFn(r.port)), 0o644); err != nil {
				r.t.Fatalf("writing redis.conf: %v", err)
			}
		}
		if err = r.start(); err == nil {
			return
		}
		if !strings.Contains(r.log.String(), "in use") {
			break
		}
	}
	r.t.Fatalf("starting redis-server: %v\n%s", err, tail(r.log.String(), 40))
}

// Addr is the server's host:port.
func (r *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// Port is the server's port.
func (r *Redis) Port() int { return r.port }

// Dir is the server's working directory.
func (r *Redis) Dir() string { return r.dir }

// Log returns what the server logged so far.
func (r *Redis) Log() string { return r.log.String() }

// running reports whether the server is started and not stopped.
func (r *Redis) running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cmd != nil && !r.stopped
}

// Stop kills the server at once (SIGKILL), as a crash would. It is safe
// to call on a stopped server.
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil || r.stopped {
		return
	}
	r.cmd.Process.Signal(syscall.SIGCONT) // a paused server must run to die cleanly
	r.cmd.Process.Kill()
	<-r.exited
	r.stopped = true
}

// Start restarts a stopped server on the same port, with the same
// directory (a cluster node keeps its nodes.conf).
func (r *Redis) Start() {
	r.t.Helper()
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err = r.start(); err == nil {
			return
		}
		// The old socket may linger a moment.
		if time.Now().After(deadline) || !strings.Contains(r.log.String(), "in use") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.t.Fatalf("restarting redis-server on %s: %v\n%s", r.Addr(), err, tail(r.log.String(), 40))
}

// Pause stops the process (SIGSTOP): connections are accepted by the
// kernel but never answered, as with an overloaded or hung server.
func (r *Redis) Pause() { r.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (r *Redis) Resume() { r.signal(syscall.SIGCONT) }

func (r *Redis) signal(sig os.Signal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil && !r.stopped {
		if err := r.cmd.Process.Signal(sig); err != nil {
			r.t.Errorf("signalling redis-server: %v", err)
		}
	}
}

func (r *Redis) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil && !r.stopped {
		return errors.New("redis-server is already running")
	}
	args := append([]string{}, r.args...)
	args = append(args,
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", r.dir,
		"--daemonize", "no",
		"--logfile", "",
		"--loglevel", "notice",
	)
	if r.tls != nil {
		args = append(args,
			"--port", "0",
			"--tls-port", strconv.Itoa(r.port),
			"--tls-cert-file", r.tls.CertFile,
			"--tls-key-file", r.tls.KeyFile,
			"--tls-ca-cert-file", r.tls.CertFile,
			"--tls-auth-clients", "no",
		)
	} else {
		args = append(args, "--port", strconv.Itoa(r.port))
	}
	fmt.Fprintf(r.log, "--- starting redis-server %s\n", strings.Join(args, " "))
	cmd := exec.Command(r.bin, args...)
	cmd.Dir = r.dir
	cmd.Stdout = r.log
	cmd.Stderr = r.log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("running %s: %w", r.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	r.cmd, r.exited, r.stopped = cmd, exited, false

	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			r.stopped = true
			return fmt.Errorf("redis-server exited at start: %v", cmd.ProcessState)
		default:
		}
		if r.tls != nil {
			if c, err := net.DialTimeout("tcp", r.Addr(), time.Second); err == nil {
				c.Close()
				return nil
			}
		} else if _, err := r.do("PING"); err == nil || isReply(err) {
			return nil // NOAUTH also shows the server answers
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			r.stopped = true
			return fmt.Errorf("redis-server did not answer on %s within 10s", r.Addr())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Do runs one command on a new connection and returns the reply as text:
// arrays one element a line, nil as "(nil)". A Redis error reply is an
// error. It does not speak TLS.
func (r *Redis) Do(args ...string) (string, error) {
	return r.do(args...)
}

// MustDo is Do that fails the test on an error.
func (r *Redis) MustDo(args ...string) string {
	r.t.Helper()
	out, err := r.do(args...)
	if err != nil {
		r.t.Fatalf("redis %s on %s: %v", strings.Join(args, " "), r.Addr(), err)
	}
	return out
}

func (r *Redis) do(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", r.Addr(), 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write(b.Bytes()); err != nil {
		return "", err
	}
	return readReply(bufio.NewReader(c))
}

// readReply reads one RESP2 reply.
func readReply(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply line")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", ReplyError(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", fmt.Errorf("bad bulk length %q", line)
		}
		if n < 0 {
			return "(nil)", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", fmt.Errorf("bad array length %q", line)
		}
		parts := make([]string, 0, max(n, 0))
		for range n {
			p, err := readReply(br)
			if err != nil {
				return "", err
			}
			parts = append(parts, p)
		}
		return strings.Join(parts, "\n"), nil
	}
	return "", fmt.Errorf("unknown reply %q", line)
}

// ReplyError is an error reply from the server, as opposed to a failure
// to reach it.
type ReplyError string

func (e ReplyError) Error() string { return string(e) }

func isReply(err error) bool {
	var re ReplyError
	return errors.As(err, &re)
}

// ConnectedClients is the number of client connections the server has,
// not counting the one asking.
func (r *Redis) ConnectedClients() (int, error) {
	out, err := r.do("INFO", "clients")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "connected_clients:"); ok {
			n, err := strconv.Atoi(v)
			return n - 1, err
		}
	}
	return 0, fmt.Errorf("no connected_clients in INFO: %q", out)
}

// RedisCluster is a Redis Cluster of masters without replicas, each a
// Redis with its own port and directory.
type RedisCluster struct {
	t     testing.TB
	nodes []*Redis
}

// StartRedisCluster starts masters (at least 3) cluster-enabled servers,
// joins them with redis-cli --cluster create and waits until the cluster
// reports ok.
func StartRedisCluster(t testing.TB, masters int) *RedisCluster {
	t.Helper()
	return StartRedisClusterReplicas(t, masters, 0)
}

// StartRedisClusterReplicas is StartRedisCluster with replicas per master,
// so that a master that fails is replaced by its replica (failover).
func StartRedisClusterReplicas(t testing.TB, masters, replicas int) *RedisCluster {
	t.Helper()
	if masters < 3 {
		t.Fatalf("a Redis Cluster needs at least 3 masters, not %d", masters)
	}
	cli := Require(t, "redis-cli")
	c := &RedisCluster{t: t}
	for range masters * (1 + replicas) {
		r := newRedis(t, []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "2000",
		}, nil)
		r.startFresh()
		c.nodes = append(c.nodes, r)
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if err := c.WaitOK(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	// A replica can only take over once it has synced with its master.
	deadline := time.Now().Add(30 * time.Second)
	for synced := 0; synced < masters*replicas; {
		synced = 0
		for _, n := range c.nodes {
			if out, err := n.do("INFO", "replication"); err == nil && strings.Contains(out, "role:slave") && strings.Contains(out, "master_link_status:up") {
				synced++
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d Redis replicas synced after 30 s", synced, masters*replicas)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c
}

// Addrs lists the nodes' addresses.
func (c *RedisCluster) Addrs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.Addr()
	}
	return out
}

// Node returns node i, to stop, pause or restart it.
func (c *RedisCluster) Node(i int) *Redis { return c.nodes[i] }

// Masters counts the running nodes that are masters now.
func (c *RedisCluster) Masters() int {
	n := 0
	for _, r := range c.nodes {
		if !r.running() {
			continue
		}
		if out, err := r.do("INFO", "replication"); err == nil && strings.Contains(out, "role:master") {
			n++
		}
	}
	return n
}

// Master returns a running node that is a master now.
func (c *RedisCluster) Master() (*Redis, error) {
	for _, n := range c.nodes {
		if out, err := n.do("INFO", "replication"); err == nil && strings.Contains(out, "role:master") {
			return n, nil
		}
	}
	return nil, errors.New("no running master in the cluster")
}

// WaitOK waits until every running node says cluster_state:ok and knows
// all slots, as after creation or after a stopped node was restarted.
func (c *RedisCluster) WaitOK(d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		bad := ""
		for _, n := range c.nodes {
			if !n.running() {
				continue
			}
			out, err := n.do("CLUSTER", "INFO")
			if err != nil {
				bad = fmt.Sprintf("%s: %v", n.Addr(), err)
				break
			}
			if !strings.Contains(out, "cluster_state:ok") || !strings.Contains(out, "cluster_slots_ok:16384") {
				bad = fmt.Sprintf("%s: %s", n.Addr(), strings.Join(strings.Fields(out)[:min(4, len(strings.Fields(out)))], " "))
				break
			}
		}
		if bad == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis cluster not ok after %s: %s", d, bad)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartRedisSentinel starts a Sentinel monitoring master under name, with
// a quorum of one, and waits until it knows the master.
func StartRedisSentinel(t testing.TB, master *Redis, name string) *Redis {
	t.Helper()
	conf := func(port int) string {
		return fmt.Sprintf("port %d\nbind 127.0.0.1\nsentinel monitor %s 127.0.0.1 %d 1\nsentinel down-after-milliseconds %s 1000\n",
			port, name, master.Port(), name)
	}
	r := newRedis(t, []string{"--sentinel"}, conf)
	r.startFresh()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := r.do("SENTINEL", "get-master-addr-by-name", name)
		if err == nil && out == "127.0.0.1\n"+strconv.Itoa(master.Port()) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("sentinel on %s does not know master %s: %q %v", r.Addr(), name, out, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
