package milter

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/testenv"
)

// Postfix leaves Nagle's algorithm on for its milter connections: after a
// packet that gets no reply (the DATA macros it still sends with
// SMFIP_NODATA, header fields with SMFIP_NR_HDR, an abort) it holds its
// next small write until that packet is acknowledged. Linux delays that
// ACK by 40 ms or more on a connection that has been answering, which
// stalled every message. mailward keeps the no-reply options and re-arms
// TCP_QUICKACK after each read, so each such packet is acknowledged as
// soon as it is read. This test drives real Postfix and requires, for
// every packet that ended what Postfix sent and got no reply, that the
// kernel had the socket in quick-ACK mode when mailward went back to
// reading (getsockopt TCP_QUICKACK reports whether delayed-ACK mode is
// off).
func TestPostfixUnansweredPacketsAreAckedAtOnce(t *testing.T) {
	type seen struct {
		cmd      byte
		proto    uint32
		quickAck int
		err      error
	}
	var mu sync.Mutex
	var got []seen
	r := startRigWith(t, nil, func(s *Server) {
		s.unanswered = func(c net.Conn, cmd byte, proto uint32) {
			v := seen{cmd: cmd, proto: proto, quickAck: -1}
			tc, ok := c.(*net.TCPConn)
			if !ok {
				v.err = fmt.Errorf("Postfix's milter connection is a %T, want TCP", c)
			} else if rc, err := tc.SyscallConn(); err != nil {
				v.err = err
			} else {
				rc.Control(func(fd uintptr) {
					v.quickAck, v.err = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK)
				})
			}
			mu.Lock()
			got = append(got, v)
			mu.Unlock()
		}
	})
	// Header fields past Postfix's 4 KiB stream buffer, so that it also
	// flushes part way through the header block.
	var extra []string
	for i := 0; i < 60; i++ {
		extra = append(extra, fmt.Sprintf("X-Filler-%02d: %s", i, strings.Repeat("x", 80)))
	}
	for i := 1; i <= 2; i++ {
		out, err := swaksTo(t, r, message(fmt.Sprintf("ack %d", i), extra...))
		if err != nil {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
	}
	if _, err := r.sink.Wait(2, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	dataMacros := 0
	for _, v := range got {
		if v.err != nil {
			t.Fatalf("after %q: %v", v.cmd, v.err)
		}
		if want := uint32(optNoData | optNoReplyHeader | optNoReplyBody); v.proto&want != want {
			t.Errorf("negotiated options %#x lack %#x: on Linux the no-reply options are safe and save round trips", v.proto, want)
		}
		if v.quickAck != 1 {
			t.Errorf("after an unanswered %q packet the socket was in delayed-ACK mode: Postfix waits for that ACK before its next write", v.cmd)
		}
		if v.cmd == 'D' {
			dataMacros++
		}
	}
	// Without this the test would prove nothing: Postfix must still send
	// packets that get no reply (the DATA macros, one per message).
	if dataMacros < 2 {
		t.Fatalf("saw %d unanswered macro packets, want one per message at least (got %d unanswered packets in all)", dataMacros, len(got))
	}
}

func swaksTo(t *testing.T, r *rig, data string) (string, error) {
	t.Helper()
	return testenv.Swaks(t, r.postfix.SMTPAddr(), "--from", "alice@sender.example", "--to", "bob@rcpt.example", "--data", data)
}
