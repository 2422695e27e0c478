package milter

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/policy"
)

// mta is the MTA side of a milter conversation over a pipe.
type mta struct {
	t    *testing.T
	conn net.Conn
}

func startSession(t *testing.T, rules policy.Rules) *mta {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng := policy.NewEngine(policy.Settings{Hostname: "mw.test.example"}, nil, rules, log)
	srv := New(eng, 5*time.Second, log)
	client, server := net.Pipe()
	srv.serveConn(server)
	t.Cleanup(func() {
		client.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if n := eng.Open("milter"); n != 0 {
			t.Errorf("%d engine connections left open", n)
		}
	})
	return &mta{t: t, conn: client}
}

func (m *mta) send(code byte, data string) {
	m.t.Helper()
	m.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := m.conn.Write(packet(code, data)); err != nil {
		m.t.Fatalf("sending %q: %v", code, err)
	}
}

// reply reads one packet: its code and data.
func (m *mta) reply() (byte, string) {
	m.t.Helper()
	m.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [4]byte
	if _, err := io.ReadFull(m.conn, hdr[:]); err != nil {
		m.t.Fatalf("reading reply: %v", err)
	}
	p := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(m.conn, p); err != nil {
		m.t.Fatalf("reading reply: %v", err)
	}
	return p[0], string(p[1:])
}

func (m *mta) expect(code byte) string {
	m.t.Helper()
	c, d := m.reply()
	if c != code {
		m.t.Fatalf("reply %q %q; want %q", c, d, code)
	}
	return d
}

func optneg(version, actions, proto uint32) string {
	var b [12]byte
	binary.BigEndian.PutUint32(b[:], version)
	binary.BigEndian.PutUint32(b[4:], actions)
	binary.BigEndian.PutUint32(b[8:], proto)
	return string(b[:])
}

func TestNegotiation(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		offer                  string
		version, actions, opts uint32
	}{
		// What Postfix 3 offers with milter_protocol = 6.
		{"postfix v6", optneg(6, 0x1ff, 0x1fffff), 6, 0x31, 0x80 | 0x100 | 0x200 | 0x80000 | 0x100000},
		// An MTA of protocol 2 knows none of the no-reply options.
		{"v2", optneg(2, 0x3f, 0x7f), 2, 0x31, 0},
		// An MTA newer than mailward gets version 6.
		{"v7", optneg(7, 0x1ff, 0x1fffff), 6, 0x31, 0x80 | 0x100 | 0x200 | 0x80000 | 0x100000},
		// Actions the MTA does not offer are not asked for.
		{"no quarantine", optneg(6, 0x11, 0), 6, 0x11, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := startSession(t, nil)
			m.send('O', tc.offer)
			d := m.expect('O')
			if len(d) != 12 {
				t.Fatalf("negotiation reply of %d bytes", len(d))
			}
			b := []byte(d)
			v, a, o := binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:]), binary.BigEndian.Uint32(b[8:])
			if v != tc.version || a != tc.actions || o != tc.opts {
				t.Fatalf("got version %d actions %#x options %#x; want %d %#x %#x", v, a, o, tc.version, tc.actions, tc.opts)
			}
		})
	}
}

// A whole message as Postfix sends it with protocol 6: no replies to
// header fields and body chunks, macros merged across stages, header
// values with their leading space both ways.
func TestConversationV6(t *testing.T) {
	seen := make(chan *policy.Facts, 1)
	rules := policy.RulesFunc(func(_ context.Context, st policy.Stage, f *policy.Facts, _ *[]policy.Match) policy.Verdict {
		switch st {
		case policy.StageRcpt:
			if f.Rcpt == "nobody@rcpt.example" {
				return policy.Verdict{Action: policy.Reject, Code: 550, Enhanced: "5.1.1", Text: "No such user: 100%"}
			}
		case policy.StageEOM:
			cp := *f
			seen <- &cp
			return policy.Verdict{Action: policy.Quarantine, Reason: "held\nfor review"}
		}
		return policy.Verdict{}
	})
	m := startSession(t, rules)
	m.send('O', optneg(6, 0x1ff, 0x1fffff))
	m.expect('O')
	m.send('D', "Cj\x00mx.test.example\x00{daemon_name}\x00smtpd\x00")
	m.send('C', "client.example\x004\x00\x19192.0.2.1\x00")
	m.expect('c')
	m.send('H', "helo.example\x00")
	m.expect('c')
	m.send('D', "M{auth_authen}\x00alice\x00i\x00ABC123\x00")
	m.send('M', "<a@x.example>\x00SIZE=100\x00")
	m.expect('c')
	m.send('R', "<nobody@rcpt.example>\x00")
	if d := m.expect('y'); d != "550 5.1.1 No such user: 100%%\x00" {
		t.Fatalf("recipient refusal %q", d)
	}
	m.send('R', "<b@rcpt.example>\x00")
	m.expect('c')
	m.send('L', "Subject\x00 hello\x00")
	m.send('L', "X-Tight\x00x\x00")
	m.send('N', "")
	m.expect('c') // the reply to end of headers: none came for the fields
	m.send('B', "Hello.\r\n")
	m.send('E', "")
	var added []string
	for {
		c, d := m.reply()
		if c == 'i' || c == 'h' {
			added = append(added, d)
			continue
		}
		if c != 'q' || d != "held for review\x00" {
			t.Fatalf("want quarantine, got %q %q", c, d)
		}
		break
	}
	m.expect('a')
	if len(added) == 0 || !strings.HasPrefix(added[0][4:], "Authentication-Results\x00 mw.test.example") {
		t.Fatalf("added headers %q; want Authentication-Results with its leading space", added)
	}
	f := <-seen
	if f.IP.String() != "192.0.2.1" || f.Helo != "helo.example" || f.Macros["{daemon_name}"] != "smtpd" ||
		f.Macros["{auth_authen}"] != "alice" || f.QueueID != "ABC123" || f.AuthUser != "alice" {
		t.Errorf("facts at end of message: ip=%v helo=%q macros=%v queue=%q auth=%q", f.IP, f.Helo, f.Macros, f.QueueID, f.AuthUser)
	}
	if f.Header("Subject") != "hello" || f.Header("X-Tight") != "x" {
		t.Errorf("header values %q %q", f.Header("Subject"), f.Header("X-Tight"))
	}
	m.send('Q', "")
}

// With protocol 2 every command gets its reply and header values come
// without their leading space.
func TestConversationV2(t *testing.T) {
	m := startSession(t, nil)
	m.send('O', optneg(2, 0x3f, 0x7f))
	m.expect('O')
	m.send('C', "[192.0.2.7]\x006\x00\x19IPv6:2001:db8::7\x00")
	m.expect('c')
	m.send('M', "<a@x.example>\x00")
	m.expect('c')
	m.send('R', "<b@y.example>\x00")
	m.expect('c')
	m.send('L', "Subject\x00hello\x00")
	m.expect('c')
	m.send('N', "")
	m.expect('c')
	m.send('B', "Hello.\r\n")
	m.expect('c')
	m.send('E', "")
	var d string
	for {
		c, data := m.reply()
		if c == 'i' {
			d = data
			continue
		}
		if c != 'c' && c != 'a' {
			t.Fatalf("end of message reply %q %q", c, data)
		}
		break
	}
	if !strings.HasPrefix(d[4:], "Authentication-Results\x00mw.test.example") {
		t.Fatalf("Authentication-Results %q; want no leading space under protocol 2", d)
	}
	// A second SMTP session on the same milter connection (SMFIC_QUIT_NC).
	m.send('K', "")
	m.send('C', "client.example\x004\x00\x19192.0.2.2\x00")
	m.expect('c')
	m.send('Q', "")
}

func TestPacketTooLarge(t *testing.T) {
	m := startSession(t, nil)
	m.conn.Write([]byte{0x7f, 0xff, 0xff, 0xff, 'C'})
	// Closed at once, not left waiting for 2 GiB that never come.
	m.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := m.conn.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() || err == nil {
		t.Fatalf("after a 2^31-byte packet length: %v; want the connection closed", err)
	}
}

// Where an unanswered packet cannot be acknowledged at once (TCP outside
// Linux), the MTA is asked to wait for a reply to every packet, so that
// each reply carries the ACK its Nagle's algorithm waits for.
func TestNegotiationWithoutQuickAck(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	w := newWire(b, time.Second)
	if !w.noReplySafe || w.ack != nil {
		t.Fatalf("a pipe has no Nagle or delayed ACK: noReplySafe %v, ack set %v", w.noReplySafe, w.ack != nil)
	}
	w.noReplySafe = false
	s := &session{srv: New(policy.NewEngine(policy.Settings{}, nil, nil, nil), time.Second, nil), w: w}
	if err := s.negotiate([]byte(optneg(6, 0x1ff, 0x1fffff))); err != nil {
		t.Fatal(err)
	}
	if s.proto != optLeadingSpace {
		t.Fatalf("options %#x; want only SMFIP_HDR_LEADSPC (%#x)", s.proto, optLeadingSpace)
	}
}

// Over loopback TCP on Linux, TCP_QUICKACK can be set, so the no-reply
// options are asked for.
func TestQuickAckerTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ack, ok := quickAcker(c)
	if runtime.GOOS == "linux" && (ack == nil || !ok) {
		t.Fatalf("on Linux TCP: ack set %v, safe %v; want both", ack != nil, ok)
	}
	if runtime.GOOS != "linux" && (ack != nil || ok) {
		t.Fatalf("outside Linux TCP: ack set %v, safe %v; want neither", ack != nil, ok)
	}
}
