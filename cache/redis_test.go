package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/testenv"
)

func redisConfig(addrs ...string) Config {
	c := DefaultConfig()
	c.Type = TypeRedis
	c.Redis.Addrs = addrs
	// The default 100ms bound is for production; a healthy loopback Redis
	// can take longer than that under -race on a loaded machine. Tests of
	// the bound itself set outageTimeout.
	c.Redis.Timeout = Duration(5 * time.Second)
	return c
}

// outageTimeout is the operation timeout of the outage tests, and
// outageSlack the scheduling they allow on top of it: short enough that
// the breaker opens within an outage and a hung call is caught, long
// enough that a healthy Redis answers within it on a loaded machine.
const (
	outageTimeout = 400 * time.Millisecond
	outageSlack   = 400 * time.Millisecond
)

func newRedis(t testing.TB, cfg Config, opts Options) *Redis {
	t.Helper()
	r, err := NewRedis(cfg, opts)
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// syncLog collects log output for assertions.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestRedisConformance(t *testing.T) {
	srv := testenv.StartRedis(t)
	c, err := New(redisConfig(srv.Addr()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*Redis); !ok {
		t.Fatalf("New built a %T for type redis", c)
	}
	conformance(t, c, "t")
	if st := c.Stats(); st.Errors != 0 || st.Breaker != BreakerClosed {
		t.Fatalf("data errors counted as Redis failures: %+v", st)
	}
}

func TestRedisTTL(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartRedis(t)
	c := newRedis(t, redisConfig(srv.Addr()), Options{})
	c.Set(ctx, "short", []byte("v"), 300*time.Millisecond)
	c.Set(ctx, "sub-ms", []byte("v"), time.Microsecond)
	c.Set(ctx, "forever", []byte("v"), 0)
	if pttl, _ := strconv.Atoi(srv.MustDo("PTTL", "mailward:v1:short")); pttl <= 0 || pttl > 300 {
		t.Fatalf("PTTL of short = %d", pttl)
	}
	if got := srv.MustDo("PTTL", "mailward:v1:forever"); got != "-1" {
		t.Fatalf("PTTL of forever = %s", got)
	}
	// Counters get their TTL when created only.
	c.Incr(ctx, "ctr", 1, time.Hour)
	srv.MustDo("PEXPIRE", "mailward:v1:ctr", "50000")
	c.Incr(ctx, "ctr", 1, time.Hour)
	if pttl, _ := strconv.Atoi(srv.MustDo("PTTL", "mailward:v1:ctr")); pttl > 50000 {
		t.Fatalf("Incr extended the counter's TTL to %dms", pttl)
	}
	c.Incr(ctx, "ctr0", 1, 0)
	if got := srv.MustDo("PTTL", "mailward:v1:ctr0"); got != "-1" {
		t.Fatalf("PTTL of a counter without TTL = %s", got)
	}
	time.Sleep(350 * time.Millisecond)
	for key, want := range map[string]bool{"short": false, "sub-ms": false, "forever": true} {
		if _, ok, err := c.Get(ctx, key); ok != want || err != nil {
			t.Errorf("Get %s = %v, %v; want %v", key, ok, err, want)
		}
	}
}

func TestRedisKeyLayout(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartRedis(t)
	a := newRedis(t, redisConfig(srv.Addr()), Options{})
	cfgB := redisConfig(srv.Addr())
	cfgB.Redis.KeyPrefix = "other:"
	b := newRedis(t, cfgB, Options{})

	a.Set(ctx, "spf:192.0.2.1:example.com", []byte("pass"), time.Hour)
	b.Set(ctx, "spf:192.0.2.1:example.com", []byte("fail"), time.Hour)
	a.Allow(ctx, "sasl:alice", 10, time.Minute)
	a.Incr(ctx, "n", 1, 0)
	g, _ := NewGreylist(a, GreylistConfig{})
	g.Check(ctx, netip.MustParseAddr("192.0.2.1"), "s@example.com", "r@example.org")
	g2, _ := NewGreylist(a, GreylistConfig{AutoAllow: 1, Delay: Duration(time.Millisecond), RetryWindow: Duration(time.Hour)})
	g2.Check(ctx, netip.MustParseAddr("2001:db8::1"), "s@example.com", "r@example.org")
	time.Sleep(5 * time.Millisecond)
	g2.Check(ctx, netip.MustParseAddr("2001:db8::1"), "s@example.com", "r@example.org")

	keys := strings.Split(srv.MustDo("KEYS", "*"), "\n")
	sort.Strings(keys)
	trip := Triplet("s@example.com", "r@example.org")
	want := []string{
		"mailward:v1:grey:{192.0.2.0/24}:t:" + trip,
		"mailward:v1:grey:{2001:db8::/64}:ok",
		"mailward:v1:grey:{2001:db8::/64}:t:" + trip,
		"mailward:v1:n",
		"mailward:v1:rate:sasl:alice",
		"mailward:v1:spf:192.0.2.1:example.com",
		"other:v1:spf:192.0.2.1:example.com",
	}
	if strings.Join(keys, "\n") != strings.Join(want, "\n") {
		t.Fatalf("keys:\n%s\nwant:\n%s", strings.Join(keys, "\n"), strings.Join(want, "\n"))
	}
	if v, _, _ := a.Get(ctx, "spf:192.0.2.1:example.com"); string(v) != "pass" {
		t.Fatalf("prefix mailward: reads %q", v)
	}
	if v, _, _ := b.Get(ctx, "spf:192.0.2.1:example.com"); string(v) != "fail" {
		t.Fatalf("prefix other: reads %q", v)
	}
	// Data of an older layout is never read.
	srv.MustDo("SET", "mailward:v0:spf:x", "old")
	if _, ok, _ := a.Get(ctx, "spf:x"); ok {
		t.Fatal("read a v0 key")
	}
}

// TestRedisShared: two caches on one Redis, as two mailwards of a fleet,
// see each other's values, rate limits and greylisting.
func TestRedisShared(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartRedis(t)
	a := newRedis(t, redisConfig(srv.Addr()), Options{})
	b := newRedis(t, redisConfig(srv.Addr()), Options{})

	a.Set(ctx, "dnsbl:192.0.2.1", []byte("listed"), time.Hour)
	if v, ok, _ := b.Get(ctx, "dnsbl:192.0.2.1"); !ok || string(v) != "listed" {
		t.Fatalf("b reads %q %v", v, ok)
	}
	a.Incr(ctx, "conns", 2, time.Hour)
	if n, _ := b.Incr(ctx, "conns", 3, time.Hour); n != 5 {
		t.Fatalf("shared counter = %d, want 5", n)
	}

	// 4 per 4s: a takes 3, b gets the last one. One event comes back
	// every second, so the burst must be in within a second: a loaded
	// machine may take a few hundred milliseconds.
	for range 3 {
		if ok, _, _, err := a.Allow(ctx, "client:192.0.2.1", 4, 4*time.Second); !ok || err != nil {
			t.Fatalf("a refused: %v", err)
		}
	}
	ok, rem, _, _ := b.Allow(ctx, "client:192.0.2.1", 4, 4*time.Second)
	if !ok || rem != 0 {
		t.Fatalf("b: allowed %v, %d left; want allowed, 0 left", ok, rem)
	}
	ok, _, retry, _ := a.Allow(ctx, "client:192.0.2.1", 4, 4*time.Second)
	if ok || retry <= 0 || retry > time.Second {
		t.Fatalf("a after the burst: allowed %v, retry %s; want refused within 1s", ok, retry)
	}
	time.Sleep(retry + 10*time.Millisecond)
	if ok, _, _, _ := b.Allow(ctx, "client:192.0.2.1", 4, 4*time.Second); !ok {
		t.Fatal("b refused after the retry time")
	}

	// Greylisting with a 1s delay.
	cfg := GreylistConfig{Delay: Duration(time.Second), RetryWindow: Duration(time.Minute), Expiry: Duration(time.Hour), AutoAllow: 2}
	ga, _ := NewGreylist(a, cfg)
	gb, _ := NewGreylist(b, cfg)
	ip := netip.MustParseAddr("198.51.100.1")
	d, err := ga.Check(ctx, ip, "s@example.com", "r@example.org")
	if err != nil || d.Pass || d.Reason != ReasonNew || d.RetryAfter != time.Second {
		t.Fatalf("first sight on a = %+v, %v", d, err)
	}
	d, err = gb.Check(ctx, ip, "s@example.com", "r@example.org")
	if err != nil || d.Pass || d.Reason != ReasonEarly || d.RetryAfter <= 0 || d.RetryAfter >= time.Second {
		t.Fatalf("early retry on b = %+v, %v", d, err)
	}
	d2, _ := ga.Check(ctx, ip, "s2@example.com", "r@example.org")
	time.Sleep(d.RetryAfter + 20*time.Millisecond)
	d, err = gb.Check(ctx, ip, "s@example.com", "r@example.org")
	if err != nil || !d.Pass || d.Reason != ReasonRetried {
		t.Fatalf("retry after the delay on b = %+v, %v", d, err)
	}
	d, err = ga.Check(ctx, ip, "s@example.com", "r@example.org")
	if err != nil || !d.Pass || d.Reason != ReasonKnown {
		t.Fatalf("known triplet on a = %+v, %v", d, err)
	}
	if d2.Reason != ReasonNew {
		t.Fatalf("second triplet: %+v", d2)
	}
	// The second successful retry auto-allows 198.51.100.0/24.
	if d, _ := gb.Check(ctx, netip.MustParseAddr("198.51.100.2"), "s2@example.com", "r@example.org"); d.Reason != ReasonRetried {
		t.Fatalf("second triplet retry: %+v", d)
	}
	if d, _ := ga.Check(ctx, netip.MustParseAddr("198.51.100.3"), "new@example.net", "r@example.org"); !d.Pass || d.Reason != ReasonAutoAllowed {
		t.Fatalf("auto-allow: %+v", d)
	}
	if pttl, _ := strconv.Atoi(srv.MustDo("PTTL", "mailward:v1:grey:{198.51.100.0/24}:ok")); pttl < 3500_000 || pttl > 3600_000 {
		t.Fatalf("auto-allow entry PTTL %d, want about the expiry (1h)", pttl)
	}
}

// TestRedisTwoProcesses shares one Redis between this process and a
// child process running TestRedisHelperProcess.
func TestRedisTwoProcesses(t *testing.T) {
	ctx := context.Background()
	srv := testenv.StartRedis(t)
	c := newRedis(t, redisConfig(srv.Addr()), Options{})

	cmd := exec.Command(os.Args[0], "-test.run=^TestRedisHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "MAILWARD_CACHE_HELPER_REDIS="+srv.Addr())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper process: %v\n%s", err, out)
	}
	var res helperResult
	line := out
	if i := bytes.Index(out, []byte("RESULT ")); i >= 0 {
		line = out[i+len("RESULT "):]
		line = line[:bytes.IndexByte(line, '\n')]
	}
	if err := json.Unmarshal(line, &res); err != nil {
		t.Fatalf("helper output %q: %v", out, err)
	}
	if res.Greylist != string(ReasonNew) || res.Remaining != 2 {
		t.Fatalf("helper saw %+v", res)
	}
	if v, ok, _ := c.Get(ctx, "from-child"); !ok || string(v) != strconv.Itoa(res.PID) {
		t.Fatalf("value from the child: %q %v, want its pid %d", v, ok, res.PID)
	}
	// The child used 3 of 5: two are left here.
	for i := range 2 {
		if ok, _, _, _ := c.Allow(ctx, "shared", 5, time.Hour); !ok {
			t.Fatalf("parent refused at its event %d", i)
		}
	}
	if ok, _, _, _ := c.Allow(ctx, "shared", 5, time.Hour); ok {
		t.Fatal("the parent got a 6th event of 5")
	}
	g, _ := NewGreylist(c, GreylistConfig{})
	if d, _ := g.Check(ctx, netip.MustParseAddr("192.0.2.55"), "child@example.com", "r@example.org"); d.Reason != ReasonEarly {
		t.Fatalf("the child's triplet is %s here, want early", d.Reason)
	}
}

type helperResult struct {
	PID       int
	Remaining int
	Greylist  string
}

func TestRedisHelperProcess(t *testing.T) {
	addr := os.Getenv("MAILWARD_CACHE_HELPER_REDIS")
	if addr == "" {
		t.Skip("runs only as the helper process of TestRedisTwoProcesses")
	}
	ctx := context.Background()
	c := newRedis(t, redisConfig(addr), Options{})
	var res helperResult
	res.PID = os.Getpid()
	for range 3 {
		ok, rem, _, err := c.Allow(ctx, "shared", 5, time.Hour)
		if !ok || err != nil {
			t.Fatalf("child refused: %v", err)
		}
		res.Remaining = rem
	}
	g, _ := NewGreylist(c, GreylistConfig{})
	d, err := g.Check(ctx, netip.MustParseAddr("192.0.2.55"), "child@example.com", "r@example.org")
	if err != nil {
		t.Fatal(err)
	}
	res.Greylist = string(d.Reason)
	if err := c.Set(ctx, "from-child", []byte(strconv.Itoa(res.PID)), time.Hour); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res)
	fmt.Printf("RESULT %s\n", b)
}

func TestRedisCluster(t *testing.T) {
	ctx := context.Background()
	cl := testenv.StartRedisCluster(t, 3)
	cfg := redisConfig(cl.Addrs()...)
	// The first operation loads the slot map and dials: more than 100ms
	// on a loaded machine under -race. Timeouts are tested elsewhere.
	cfg.Redis.Timeout = Duration(2 * time.Second)
	c := newRedis(t, cfg, Options{})
	conformance(t, c, "cl")

	for i := range 300 {
		k := fmt.Sprint("spread:", i)
		if err := c.Set(ctx, k, []byte(k), time.Hour); err != nil {
			t.Fatalf("Set %s: %v", k, err)
		}
		if n, err := c.Incr(ctx, fmt.Sprint("ctr:", i%7), 1, time.Hour); err != nil || n < 1 {
			t.Fatalf("Incr: %d %v", n, err)
		}
		if _, _, _, err := c.Allow(ctx, fmt.Sprint("rl:", i%11), 1000, time.Hour); err != nil {
			t.Fatalf("Allow: %v", err)
		}
	}
	for i := range 300 {
		k := fmt.Sprint("spread:", i)
		if v, ok, err := c.Get(ctx, k); err != nil || !ok || string(v) != k {
			t.Fatalf("Get %s = %q %v %v", k, v, ok, err)
		}
	}
	// Greylisting touches two keys in one script: the hash tag keeps them
	// in one slot whatever the network.
	g, _ := NewGreylist(c, GreylistConfig{AutoAllow: 1})
	for i := range 50 {
		ip := netip.AddrFrom4([4]byte{10, byte(i), 0, 1})
		if d, err := g.Check(ctx, ip, "s@example.com", "r@example.org"); err != nil || d.Reason != ReasonNew {
			t.Fatalf("greylist on %s: %+v %v", ip, d, err)
		}
	}
	for i := range 3 {
		n, err := strconv.Atoi(cl.Node(i).MustDo("DBSIZE"))
		if err != nil || n < 50 {
			t.Fatalf("node %d holds %d keys: the cluster is not used", i, n)
		}
	}
	if st := c.Stats(); st.Errors != 0 {
		t.Fatalf("errors in a healthy cluster: %+v", st)
	}
}

func TestRedisSentinel(t *testing.T) {
	ctx := context.Background()
	m := testenv.StartRedis(t)
	s := testenv.StartRedisSentinel(t, m, "mail")
	cfg := redisConfig(s.Addr())
	cfg.Redis.MasterName = "mail"
	cfg.Redis.DB = 2
	c := newRedis(t, cfg, Options{})
	if err := c.Set(ctx, "via-sentinel", []byte("v"), time.Hour); err != nil {
		t.Fatalf("Set through Sentinel: %v", err)
	}
	if got := m.MustDo("SELECT", "2"); got != "OK" {
		t.Fatal(got)
	}
	if n := m.MustDo("EVAL", "redis.call('SELECT', 2) return redis.call('GET', KEYS[1])", "1", "mailward:v1:via-sentinel"); n != "v" {
		t.Fatalf("the master's db 2 holds %q", n)
	}
	if ok, _, _, err := c.Allow(ctx, "x", 1, time.Minute); !ok || err != nil {
		t.Fatalf("Allow through Sentinel: %v", err)
	}
}

func TestRedisTLSAndAuth(t *testing.T) {
	ctx := context.Background()
	cert := testenv.SelfSignedCert(t, "127.0.0.1")
	srv := testenv.StartRedisWith(t, testenv.RedisOptions{TLS: cert, Password: "pw"})

	cfg := redisConfig(srv.Addr())
	cfg.Redis.TLS = true
	cfg.Redis.CAFile = cert.CertFile
	cfg.Redis.Password = "pw"
	cfg.Redis.Timeout = Duration(2 * time.Second) // RSA handshakes under -race
	c := newRedis(t, cfg, Options{})
	if err := c.Set(ctx, "k", []byte("v"), time.Minute); err != nil {
		t.Fatalf("Set over TLS: %v", err)
	}
	if v, _, _ := c.Get(ctx, "k"); string(v) != "v" {
		t.Fatalf("Get over TLS: %q", v)
	}

	// The system roots do not know the test certificate.
	cfg.Redis.CAFile = ""
	if err := newRedis(t, cfg, Options{}).Set(ctx, "k", []byte("v"), time.Minute); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Set with an unknown certificate: %v", err)
	}
	cfg.Redis.CAFile = cert.CertFile
	cfg.Redis.Password = "wrong"
	if err := newRedis(t, cfg, Options{}).Set(ctx, "k", []byte("v"), time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Set with a wrong password: %v", err)
	}

	// The password from a file, as a systemd credential.
	creds := t.TempDir()
	if err := os.WriteFile(filepath.Join(creds, "redis-password"), []byte("pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	cfg.Redis.Password = ""
	cfg.Redis.PasswordFile = CredentialPath("redis-password", "/nonexistent")
	if err := newRedis(t, cfg, Options{}).Set(ctx, "k", []byte("v"), time.Minute); err != nil {
		t.Fatalf("Set with password_file: %v", err)
	}
	cfg.Redis.PasswordFile = CredentialPath("other", creds+"/absent")
	if _, err := NewRedis(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "password_file") {
		t.Fatalf("missing password_file: %v", err)
	}
	cfg.Redis.PasswordFile = ""
	cfg.Redis.CAFile = "/nonexistent/ca.pem"
	if _, err := NewRedis(cfg, Options{}); err == nil || !strings.Contains(err.Error(), "ca_file") {
		t.Fatalf("missing ca_file: %v", err)
	}
}

// outage runs operations from several goroutines for d and returns the
// slowest one and every error seen.
func outage(c Cache, d time.Duration) (slowest time.Duration, errs []error, ok int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	g, _ := NewGreylist(c, GreylistConfig{})
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for i := 0; time.Now().Before(stop); i++ {
				start := time.Now()
				var err error
				switch (w + i) % 5 {
				case 0:
					_, _, err = c.Get(ctx, "k")
				case 1:
					err = c.Set(ctx, "k", []byte("v"), time.Minute)
				case 2:
					_, err = c.Incr(ctx, "n", 1, time.Minute)
				case 3:
					_, _, _, err = c.Allow(ctx, "r", 1000, time.Second)
				case 4:
					_, err = g.Check(ctx, netip.MustParseAddr("192.0.2.1"), "a@b", "c@d")
				}
				el := time.Since(start)
				mu.Lock()
				slowest = max(slowest, el)
				if err != nil {
					errs = append(errs, err)
				} else {
					ok++
				}
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	return slowest, errs, ok
}

// TestRedisDownAndSlow kills and then pauses Redis in the middle of a run
// of operations: every call must return within the timeout, the breaker
// must open, and the cache must recover when Redis is back.
func TestRedisDownAndSlow(t *testing.T) {
	const timeout, slack = outageTimeout, outageSlack
	srv := testenv.StartRedis(t)
	cfg := redisConfig(srv.Addr())
	cfg.Redis.Timeout = Duration(timeout)
	cfg.Breaker = BreakerConfig{Failures: 5, Cooldown: Duration(400 * time.Millisecond)}
	logs := &syncLog{}
	c := newRedis(t, cfg, Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})

	if slowest, errs, _ := outage(c, 200*time.Millisecond); len(errs) > 0 {
		t.Fatalf("errors with Redis up: %v (slowest %s)", errs[0], slowest)
	}

	for _, tc := range []struct {
		name       string
		down, up   func()
		wantErrors bool
	}{
		{"killed", srv.Stop, srv.Start, true},
		{"paused", srv.Pause, srv.Resume, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := c.Stats()
			tc.down()
			slowest, errs, _ := outage(c, 2500*time.Millisecond)
			if slowest > timeout+slack {
				t.Errorf("slowest operation took %s with Redis %s; bound is %s", slowest, tc.name, timeout+slack)
			}
			if len(errs) == 0 {
				t.Fatal("no errors with Redis down")
			}
			for _, err := range errs {
				if !errors.Is(err, ErrUnavailable) {
					t.Fatalf("error %v is not ErrUnavailable", err)
				}
			}
			st := c.Stats()
			if st.BreakerOpens <= before.BreakerOpens || st.Unavailable <= before.Unavailable {
				t.Fatalf("breaker did not open: %+v", st)
			}
			// Once open, calls fail at once: most of the run is refused
			// without touching the network.
			if failed := st.Errors - before.Errors; failed > uint64(len(errs))/2 {
				t.Errorf("%d of %d errors went to the network: the breaker is not doing its job", failed, len(errs))
			}
			t.Logf("Redis %s: %d errors, %d of them network failures, slowest %s", tc.name, len(errs), st.Errors-before.Errors, slowest)

			tc.up()
			deadline := time.Now().Add(5 * time.Second)
			for c.Set(context.Background(), "back", []byte("v"), time.Minute) != nil {
				if time.Now().After(deadline) {
					t.Fatalf("no recovery 5s after Redis came back: %+v", c.Stats())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if st := c.Stats(); st.Breaker != BreakerClosed {
				t.Fatalf("breaker %s after a success", st.Breaker)
			}
			if slowest, errs, _ := outage(c, 200*time.Millisecond); len(errs) > 0 {
				t.Fatalf("errors after recovery: %v (slowest %s)", errs[0], slowest)
			}
		})
	}
	for _, want := range []string{"redis cache unavailable: running uncached", "redis cache available again"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// TestRedisClusterNodeDown stops one master of three: keys on the others
// keep working or fail fast, and all recover when it is back.
func TestRedisClusterNodeDown(t *testing.T) {
	const timeout, slack = outageTimeout, outageSlack
	cl := testenv.StartRedisCluster(t, 3)
	cfg := redisConfig(cl.Addrs()...)
	cfg.Redis.Timeout = Duration(timeout)
	cfg.Breaker = BreakerConfig{Failures: 5, Cooldown: Duration(300 * time.Millisecond)}
	c := newRedis(t, cfg, Options{})
	ctx := context.Background()
	// The first operation loads the slot map and may take longer than
	// the timeout on a loaded machine.
	deadline := time.Now().Add(5 * time.Second)
	for c.Set(ctx, "k", []byte("v"), time.Hour) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("cluster unusable: %+v", c.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cl.Node(0).Stop()
	slowest, errs, _ := outage(c, time.Second)
	if slowest > timeout+slack {
		t.Errorf("slowest operation took %s with a master down", slowest)
	}
	if len(errs) == 0 {
		t.Error("no errors with a master down")
	}
	cl.Node(0).Start()
	if err := cl.WaitOK(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		_, errs, _ := outage(c, 100*time.Millisecond)
		if len(errs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster client did not recover: %v", errs[0])
		}
	}
}

// TestRedisNoLeak: Close releases every goroutine and connection, also
// after an outage.
func TestRedisNoLeak(t *testing.T) {
	srv := testenv.StartRedis(t)
	runtime.GC()
	goroutines := runtime.NumGoroutine()

	cfg := redisConfig(srv.Addr())
	cfg.Breaker.Cooldown = Duration(100 * time.Millisecond)
	c, err := NewRedis(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	outage(c, 200*time.Millisecond)
	if n, err := srv.ConnectedClients(); err != nil || n == 0 {
		t.Fatalf("%d connections while in use (%v)", n, err)
	}
	srv.Stop()
	outage(c, 300*time.Millisecond)
	srv.Start()
	time.Sleep(150 * time.Millisecond)
	outage(c, 300*time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, _, err := c.Get(context.Background(), "k"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}

	deadline := time.Now().Add(5 * time.Second)
	for {
		n, _ := srv.ConnectedClients()
		g := runtime.NumGoroutine()
		if n == 0 && g <= goroutines {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("after Close: %d connections, %d goroutines (%d before)\n%s", n, g, goroutines, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRouteClientLogs(t *testing.T) {
	logs := &syncLog{}
	RouteClientLogs(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer RouteClientLogs(slog.New(slog.DiscardHandler))
	srv := testenv.StartRedis(t)
	c := newRedis(t, redisConfig(srv.Addr()), Options{})
	srv.Stop()
	c.Get(context.Background(), "k")
	if !strings.Contains(logs.String(), "level=DEBUG msg=\"redis client: ") {
		t.Fatalf("client library log not routed:\n%s", logs.String())
	}
}
