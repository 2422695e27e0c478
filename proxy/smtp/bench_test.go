package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/mailward/mailward/internal/testenv"
)

// BenchmarkDataReader measures reading DATA off the wire: unstuffing,
// line-end checks and the end-of-data search.
func BenchmarkDataReader(b *testing.B) {
	var msg bytes.Buffer
	for msg.Len() < 1<<20 {
		msg.WriteString(strings.Repeat("a", 76) + "\r\n")
		msg.WriteString(".leading dot" + "\r\n")
	}
	msg.WriteString(".\r\n")
	data := msg.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		dr := newDataReader(bufio.NewReaderSize(bytes.NewReader(data), 64<<10))
		for {
			if _, err := dr.next(); err != nil {
				if !errors.Is(err, io.EOF) {
					b.Fatal(err)
				}
				break
			}
		}
	}
}

// BenchmarkRelay measures a 64 KiB message from a client through the
// proxy and the engine to an SMTP server, one connection, many messages.
func BenchmarkRelay(b *testing.B) {
	sink := testenv.StartSink(b)
	_, addr := startProxyLog(b, Config{Upstream: sink.Addr()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	c, err := gosmtp.Dial(addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("bench.test.example"); err != nil {
		b.Fatal(err)
	}
	body := message("bench") + strings.Repeat(strings.Repeat("b", 76)+"\r\n", 64<<10/78)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := c.SendMail("alice@sender.example", []string{"bob@rcpt.example"}, strings.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
}
