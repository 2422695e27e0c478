package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// sink is the SMTP server the server under test relays to. It keeps the
// header block of the latest arrival of each Message-ID (or, in
// --account mode, of each send's sequence number), so that the
// driver can see what was relayed: a quarantine header, a removed header.
// Bodies are read and dropped.
type sink struct {
	srv  *smtp.Server
	ln   net.Listener
	mu   sync.Mutex
	cond *sync.Cond
	got  map[string]*arrival
}

type arrival struct {
	count  int
	header [][2]string
}

func startSink(addr string) (*sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("starting the sink: %w", err)
	}
	s := &sink{ln: ln, got: map[string]*arrival{}}
	s.cond = sync.NewCond(&s.mu)
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &sinkSession{sink: s}, nil
	}))
	s.srv.Domain = "sink.bench.test"
	s.srv.MaxMessageBytes = 256 << 20
	s.srv.ReadTimeout = time.Minute
	s.srv.WriteTimeout = time.Minute
	go s.srv.Serve(ln)
	return s, nil
}

func (s *sink) Addr() string { return s.ln.Addr().String() }

func (s *sink) Close() { s.srv.Close() }

// arrivals is how often id has arrived so far.
func (s *sink) arrivals(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.got[id]; a != nil {
		return a.count
	}
	return 0
}

// arrival is how often id arrived and the header of its latest arrival.
func (s *sink) arrival(id string) (int, [][2]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.got[id]; a != nil {
		return a.count, a.header
	}
	return 0, nil
}

// total counts every arrival so far.
func (s *sink) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, a := range s.got {
		n += a.count
	}
	return n
}

// ids lists what arrived.
func (s *sink) ids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.got))
	for id := range s.got {
		out = append(out, id)
	}
	return out
}

// wait returns the header of the arrival of id after the first `after`,
// or an error when none comes within d. A server that queues mail relays
// it a little later than it answers; mailward's proxy relays before it
// answers.
func (s *sink) wait(ctx context.Context, id string, after int, d time.Duration) ([][2]string, error) {
	deadline := time.Now().Add(d)
	stop := context.AfterFunc(ctx, func() { s.mu.Lock(); s.cond.Broadcast(); s.mu.Unlock() })
	defer stop()
	t := time.AfterFunc(d, func() { s.mu.Lock(); s.cond.Broadcast(); s.mu.Unlock() })
	defer t.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if a := s.got[id]; a != nil && a.count > after {
			return a.header, nil
		}
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			return nil, fmt.Errorf("message %s accepted but not relayed to the sink within %s", id, d)
		}
		s.cond.Wait()
	}
}

type sinkSession struct{ sink *sink }

func (*sinkSession) Reset()                               {}
func (*sinkSession) Logout() error                        { return nil }
func (*sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (*sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *sinkSession) Data(r io.Reader) error {
	br := bufio.NewReader(r)
	var head bytes.Buffer
	for {
		line, err := br.ReadString('\n')
		head.WriteString(line)
		if line == "\r\n" || line == "\n" || err != nil {
			break
		}
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return err
	}
	fields, _, err := splitMessage(head.Bytes())
	if err != nil {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "sink: " + err.Error()}
	}
	id := headerValue(fields, seqHeader)
	if id == "" {
		id = headerValue(fields, "Message-ID")
	}
	if id == "" {
		return nil
	}
	s.sink.mu.Lock()
	a := s.sink.got[id]
	if a == nil {
		a = &arrival{}
		s.sink.got[id] = a
	}
	a.count++
	a.header = fields
	s.sink.cond.Broadcast()
	s.sink.mu.Unlock()
	return nil
}

// headerValue is the first value of the named field, trimmed.
func headerValue(fields [][2]string, name string) string {
	for _, f := range fields {
		if strings.EqualFold(f[0], name) {
			return strings.TrimSpace(f[1])
		}
	}
	return ""
}

// removedFields names the fields of sent that did not arrive unchanged.
func removedFields(sent, arrived [][2]string) []string {
	have := map[string]int{}
	for _, f := range arrived {
		have[strings.ToLower(f[0])+":"+strings.TrimSpace(f[1])]++
	}
	var out []string
	for _, f := range sent {
		k := strings.ToLower(f[0]) + ":" + strings.TrimSpace(f[1])
		if have[k] > 0 {
			have[k]--
			continue
		}
		out = append(out, f[0])
	}
	return out
}
