package milter

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/policy"
)

// A shutdown that gives up waiting stops the checks in flight rather than
// let them run to the end of their own timeout.
func TestShutdownCancelsChecks(t *testing.T) {
	started := make(chan struct{})
	rules := policy.RulesFunc(func(ctx context.Context, st policy.Stage, _ *policy.Facts, _ *[]policy.Match) policy.Verdict {
		if st == policy.StageConnect {
			close(started)
			<-ctx.Done()
		}
		return policy.Verdict{}
	})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng := policy.NewEngine(policy.Settings{Hostname: "mw.test.example", CheckTimeout: time.Minute}, nil, rules, log)
	srv := New(eng, 5*time.Second, log)
	client, server := net.Pipe()
	defer client.Close()
	srv.serveConn(server)
	m := &mta{t: t, conn: client}
	m.send(cmdOptNeg, optneg(6, 0x1ff, 0x1fffff))
	m.expect(replyOptNeg)
	m.send(cmdConnect, "client.example\x004\x00\x19192.0.2.1\x00")
	<-started

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	begin := time.Now()
	err := srv.Shutdown(ctx)
	if err == nil || !strings.Contains(err.Error(), "closed 1 milter connection") {
		t.Fatalf("Shutdown = %v; want one connection closed", err)
	}
	if d := time.Since(begin); d > 10*time.Second {
		t.Fatalf("Shutdown took %v: the checks ran on", d)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(ln); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Shutdown = %v; want ErrServerClosed", err)
	}
}
