package smtp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailward/mailward/policy"
)

const authservID = "mw.test.example"

// testRules exercise each kind of verdict the proxy must translate.
func testRules() policy.Rules {
	return policy.RulesFunc(func(_ context.Context, st policy.Stage, f *policy.Facts, _ *[]policy.Match) policy.Verdict {
		switch st {
		case policy.StageConnect:
			if f.IP == netip.MustParseAddr("127.0.0.66") {
				return policy.Verdict{Action: policy.Reject, Code: 550, Enhanced: "5.7.1", Text: "Client blocked"}
			}
			if f.IP == netip.MustParseAddr("127.0.0.87") {
				return policy.Verdict{Action: policy.Accept, Rule: "partner-network"}
			}
		case policy.StageMail:
			if f.MailFrom == "billing@partner.example" {
				return policy.Verdict{Action: policy.Accept, Rule: "partner-domain"}
			}
			if f.MailFrom == "spammer@bad.example" {
				return policy.Verdict{Action: policy.Reject, Code: 550, Enhanced: "5.7.1", Text: "Sender spammer@bad.example refused"}
			}
		case policy.StageRcpt:
			if strings.HasPrefix(f.Rcpt, "refused@") {
				return policy.Verdict{Action: policy.Reject, Code: 550, Enhanced: "5.1.1", Text: "No such user here"}
			}
			if strings.HasPrefix(f.Rcpt, "later@") {
				return policy.Verdict{Action: policy.Tempfail, Code: 450, Enhanced: "4.2.1", Text: "Mailbox busy"}
			}
		case policy.StageData:
			if f.Header("Subject") == "reject at data" {
				return policy.Verdict{Action: policy.Reject, Code: 550, Enhanced: "5.7.0", Text: "Content refused"}
			}
		case policy.StageEOM:
			switch f.Header("Subject") {
			case "discard me":
				return policy.Verdict{Action: policy.Discard}
			case "quarantine me":
				return policy.Verdict{Action: policy.Quarantine, Reason: "looks odd"}
			}
			return policy.Verdict{Headers: []policy.HeaderEdit{{Name: "X-Mailward-Test", Value: "client=" + f.IP.String() +
				" helo=" + f.Helo + " rcpts=" + strings.Join(f.Rcpts, ",") + " tls=" + f.TLSVersion + " login=" + f.AuthUser}}}
		}
		return policy.Verdict{}
	})
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startProxy serves cfg on 127.0.0.1 with the test rules and returns its address.
func startProxy(t testing.TB, cfg Config) (*Server, string) {
	t.Helper()
	return startProxyLog(t, cfg, testLogger(t))
}

func startProxyLog(t testing.TB, cfg Config, log *slog.Logger) (*Server, string) {
	t.Helper()
	if cfg.Hostname == "" {
		cfg.Hostname = "proxy.test.example"
	}
	eng := policy.NewEngine(policy.Settings{Hostname: authservID}, nil, testRules(), log)
	srv, err := New(eng, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv, ln.Addr().String()
}

// dialFrom connects from a chosen loopback address, so that the proxy
// sees a client other than 127.0.0.1.
func dialFrom(t testing.TB, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("connecting from %s to %s: %v", from, addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawClient speaks SMTP line by line, for what library clients do not
// do: pipelining, malformed input, PROXY headers, XCLIENT.
type rawClient struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func newRawClient(t testing.TB, c net.Conn) *rawClient {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &rawClient{t: t, c: c, r: bufio.NewReader(c)}
}

func (rc *rawClient) send(s string) {
	rc.t.Helper()
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.t.Fatalf("sending %q: %v", s, err)
	}
}

func (rc *rawClient) read() (reply, error) { return readReply(rc.r) }

// expect reads one reply and fails unless it has the code.
func (rc *rawClient) expect(code int) reply {
	rc.t.Helper()
	r, err := readReply(rc.r)
	if err != nil {
		rc.t.Fatalf("want %d, got error %v", code, err)
	}
	if r.code != code {
		rc.t.Fatalf("want %d, got %s", code, r)
	}
	return r
}

// closed reports whether the server closed the connection.
func (rc *rawClient) closed() bool {
	rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := rc.r.ReadByte()
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err)
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func message(subject string, extra ...string) string {
	h := "From: Alice <alice@sender.example>\r\nTo: bob@rcpt.example\r\nSubject: " + subject + "\r\n" +
		"Message-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@sender.example>\r\n"
	for _, e := range extra {
		h += e + "\r\n"
	}
	return h + "\r\nHello Bob.\r\n"
}

// cable is a TCP relay between the proxy and its upstream that a test can
// cut, as a network failure would.
type cable struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
}

func startCable(t testing.TB, target string) *cable {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cable{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); c.cut() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, in, out)
			c.mu.Unlock()
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
	return c
}

func (c *cable) addr() string { return c.ln.Addr().String() }

// cut closes every connection through the cable.
func (c *cable) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, x := range c.conns {
		x.Close()
	}
	c.conns = nil
}

// memConn is a client connection made of bytes: the fuzz targets feed
// input and read what the proxy answered, with no network in between.
type memConn struct {
	in     *bytes.Reader
	mu     sync.Mutex
	out    bytes.Buffer
	once   sync.Once
	closed chan struct{} // closed by Close when not nil
}

func (c *memConn) Read(p []byte) (int, error) { return c.in.Read(p) }
func (c *memConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}
func (c *memConn) Close() error {
	if c.closed != nil {
		c.once.Do(func() { close(c.closed) })
	}
	return nil
}
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 25} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }
