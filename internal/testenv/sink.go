package testenv

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// SinkMessage is one message the sink accepted.
type SinkMessage struct {
	From string
	To   []string
	Data []byte
}

// Header returns the raw header block of the message.
func (m SinkMessage) Header() string {
	if i := bytes.Index(m.Data, []byte("\r\n\r\n")); i >= 0 {
		return string(m.Data[:i+2])
	}
	return string(m.Data)
}

// Sink is an SMTP server that records every message it receives: the
// next hop of a test MTA.
type Sink struct {
	srv  *smtp.Server
	addr string

	mu   sync.Mutex
	msgs []SinkMessage
	cond *sync.Cond
}

// StartSink starts a recording SMTP server on 127.0.0.1.
func StartSink(t testing.TB) *Sink {
	t.Helper()
	s := &Sink{}
	s.cond = sync.NewCond(&s.mu)
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &sinkSession{sink: s}, nil
	}))
	s.srv.Domain = "sink.test"
	s.srv.AllowInsecureAuth = true
	s.srv.MaxMessageBytes = 256 << 20
	s.srv.ReadTimeout = time.Minute
	s.srv.WriteTimeout = time.Minute
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("starting SMTP sink: %v", err)
	}
	s.addr = l.Addr().String()
	go s.srv.Serve(l)
	t.Cleanup(func() { s.srv.Close() })
	return s
}

// Addr is the sink's host:port.
func (s *Sink) Addr() string { return s.addr }

// Messages returns what the sink has received so far.
func (s *Sink) Messages() []SinkMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SinkMessage(nil), s.msgs...)
}

// Wait blocks until the sink holds at least n messages or d passes.
func (s *Sink) Wait(n int, d time.Duration) ([]SinkMessage, error) {
	deadline := time.Now().Add(d)
	timer := time.AfterFunc(d, func() { s.mu.Lock(); s.cond.Broadcast(); s.mu.Unlock() })
	defer timer.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.msgs) < n {
		if time.Now().After(deadline) {
			return append([]SinkMessage(nil), s.msgs...), fmt.Errorf("sink has %d messages after %s, want %d", len(s.msgs), d, n)
		}
		s.cond.Wait()
	}
	return append([]SinkMessage(nil), s.msgs...), nil
}

type sinkSession struct {
	sink *Sink
	from string
	to   []string
}

func (s *sinkSession) Reset()        { s.from, s.to = "", nil }
func (s *sinkSession) Logout() error { return nil }
func (s *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}
func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}
func (s *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.sink.mu.Lock()
	s.sink.msgs = append(s.sink.msgs, SinkMessage{From: s.from, To: s.to, Data: b})
	s.sink.cond.Broadcast()
	s.sink.mu.Unlock()
	return nil
}
