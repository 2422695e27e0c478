package milter

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/mailward/mailward/policy"
)

func packet(code byte, data string) []byte {
	b := make([]byte, 5, 5+len(data))
	binary.BigEndian.PutUint32(b, uint32(len(data)+1))
	b[4] = code
	return append(b, data...)
}

// FuzzMilterConversation sends raw bytes as an MTA would: whatever they
// are, the session must end, and no engine connection may be left open.
func FuzzMilterConversation(f *testing.F) {
	var conv []byte
	conv = append(conv, packet('O', "\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff")...)
	conv = append(conv, packet('C', "client.example\x004\x00\x19192.0.2.1\x00")...)
	conv = append(conv, packet('H', "client.example\x00")...)
	conv = append(conv, packet('M', "<a@x.example>\x00")...)
	conv = append(conv, packet('R', "<b@y.example>\x00")...)
	conv = append(conv, packet('L', "Subject\x00hi\x00")...)
	conv = append(conv, packet('N', "")...)
	conv = append(conv, packet('B', "body\r\n")...)
	conv = append(conv, packet('E', "")...)
	f.Add(conv)
	f.Add(packet('R', "<b@y.example>\x00"))    // a stage before connect
	f.Add([]byte{0x7f, 0xff, 0xff, 0xff, 'C'}) // a length of 2^31
	f.Add(packet('D', "C"))
	f.Fuzz(func(t *testing.T, data []byte) {
		eng := policy.NewEngine(policy.Settings{Hostname: "mx.test"}, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
		srv := New(eng, 2*time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
		client, server := net.Pipe()
		srv.serveConn(server)
		go io.Copy(io.Discard, client) // replies
		client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		client.Write(data)
		client.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Fatalf("session did not end after the MTA hung up: %v", err)
		}
		if n := eng.Open("milter"); n != 0 {
			t.Fatalf("%d engine connections left open", n)
		}
	})
}
