package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// smtpOpts say how the smtp driver talks and what it can check.
type smtpOpts struct {
	XClient bool
	// Sink, when set, is where the server under test relays; quarantine
	// and header removal are read from what arrives there.
	Sink *sink
	// SinkWait bounds the wait for an accepted message at the sink.
	SinkWait time.Duration
	// QuarantineHeader marks a message relayed as quarantined.
	QuarantineHeader string
	// Warn receives one-off warnings, such as XCLIENT not being offered.
	Warn io.Writer
}

// smtpSender drives an SMTP server the way a sending MTA does: one
// session per message.
func smtpSender(addr string, o smtpOpts) sender {
	var warnOnce sync.Once
	return func(ctx context.Context, m *Message) (out outcome) {
		out.Stages = map[string]time.Duration{}
		start := time.Now()
		id := headerValue(m.Header, "Message-ID")
		before := 0
		if o.Sink != nil {
			before = o.Sink.arrivals(id)
		}
		accepted := func() bool {
			defer func() { out.Total = time.Since(start) }()
			return smtpTransaction(ctx, addr, m, o, &out, func() {
				warnOnce.Do(func() {
					if o.Warn != nil {
						fmt.Fprintf(o.Warn, "warning: %s does not offer XCLIENT to this host; the server sees the bench's own address as the client\n", addr)
					}
				})
			})
		}()
		if !accepted || o.Sink == nil {
			return
		}
		// After a 250 the sink tells what was relayed.
		if id == "" {
			out.Err = errors.New("message has no Message-ID to find it at the sink")
			return
		}
		got, err := o.Sink.wait(ctx, id, before, o.SinkWait)
		if err != nil {
			out.Err = err
			return
		}
		if headerValue(got, o.QuarantineHeader) != "" {
			out.Action = "quarantine"
		}
		out.Removed = removedFields(m.Header, got)
		return
	}
}

// smtpTransaction runs one session and reports whether the message was
// accepted at the end of DATA.
func smtpTransaction(ctx context.Context, addr string, m *Message, o smtpOpts, out *outcome, noXClient func()) bool {
	step := func(stage string, fn func() error) error {
		t := time.Now()
		err := fn()
		out.Stages[stage] += time.Since(t)
		return err
	}
	// refused sets the action from an SMTP reply; anything else is an error.
	refused := func(stage string, err error) {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			out.Code = se.Code
		}
		switch {
		case errors.As(err, &se) && se.Code/100 == 5:
			out.Action = "reject"
		case errors.As(err, &se) && se.Code/100 == 4:
			out.Action = "tempfail"
		default:
			out.Err = fmt.Errorf("%s: %w", stage, err)
		}
	}
	var conn net.Conn
	var c *smtp.Client
	err := step("connect", func() error {
		d := net.Dialer{Timeout: 10 * time.Second}
		var err error
		if conn, err = d.DialContext(ctx, "tcp", addr); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		out.Err = fmt.Errorf("connecting to %s: %w", addr, err)
		return false
	}
	defer conn.Close()
	// A stuck server must not hold a worker for ever.
	stopCtx := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stopCtx()
	if o.XClient {
		var ok bool
		err = step("helo", func() error {
			var err error
			conn, ok, err = xclient(conn, m)
			return err
		})
		if err != nil {
			out.Err = fmt.Errorf("xclient: %w", err)
			return false
		}
		if !ok {
			noXClient()
		}
	}
	c = smtp.NewClient(conn)
	c.CommandTimeout = time.Minute
	c.SubmissionTimeout = 5 * time.Minute
	defer c.Close()
	// go-smtp reads the greeting with the first EHLO, so helo includes it.
	if err := step("helo", func() error { return c.Hello(m.Helo) }); err != nil {
		refused("helo", err)
		return false
	}
	if err := step("mail", func() error { return c.Mail(m.From, nil) }); err != nil {
		refused("mail", err)
		return false
	}
	accepted := 0
	for _, rc := range m.Rcpts {
		err := step("rcpt", func() error { return c.Rcpt(rc, nil) })
		var se *smtp.SMTPError
		switch {
		case err == nil:
			accepted++
		case errors.As(err, &se) && se.Code/100 == 5:
			out.RejectedRcpt = append(out.RejectedRcpt, rc)
			out.Code = se.Code
		default:
			refused("rcpt", err)
			return false
		}
	}
	if accepted == 0 {
		out.Action = "reject"
		c.Quit()
		return false
	}
	var w *smtp.DataCommand
	err = step("data", func() error {
		var err error
		if w, err = c.Data(); err != nil {
			return err
		}
		bw := bufio.NewWriterSize(w, 32<<10)
		for _, h := range m.Header {
			bw.WriteString(h[0] + ":" + h[1] + "\r\n")
		}
		bw.WriteString("\r\n")
		bw.Write(m.Body)
		return bw.Flush()
	})
	if err != nil {
		refused("data", err)
		return false
	}
	if err := step("eom", w.Close); err != nil {
		refused("end of data", err)
		return false
	}
	out.Action, out.Code = "accept", 250
	c.Quit()
	return true
}

// xclient reads the greeting, says EHLO and, if the server offers
// XCLIENT, sends it. The returned connection replays the greeting of the
// session the SMTP client is to continue: XCLIENT's 220, or without
// XCLIENT the first one.
func xclient(conn net.Conn, m *Message) (net.Conn, bool, error) {
	conn.SetDeadline(time.Now().Add(time.Minute))
	defer conn.SetDeadline(time.Time{})
	// Buffering is safe: commands are not pipelined, so nothing follows
	// a reply until the next command.
	tp := textproto.NewReader(bufio.NewReader(conn))
	greeting, err := readReply(tp, 220)
	if err != nil {
		return nil, false, err
	}
	if _, err := fmt.Fprintf(conn, "EHLO %s\r\n", m.Helo); err != nil {
		return nil, false, fmt.Errorf("sending EHLO: %w", err)
	}
	ehlo, err := readReply(tp, 250)
	if err != nil {
		return nil, false, err
	}
	if !offers(ehlo.text, "XCLIENT") {
		return &replayConn{Conn: conn, r: strings.NewReader(greeting.raw)}, false, nil
	}
	if _, err := fmt.Fprintf(conn, "XCLIENT ADDR=%s NAME=%s HELO=%s PROTO=ESMTP\r\n", m.IP, clientName, m.Helo); err != nil {
		return nil, false, fmt.Errorf("sending XCLIENT: %w", err)
	}
	// A refusal here is the bench's set-up, not a verdict: an error.
	fresh, err := readReply(tp, 220)
	if err != nil {
		return nil, false, fmt.Errorf("XCLIENT refused (is this host in smtp.trusted_networks?): %w", err)
	}
	return &replayConn{Conn: conn, r: strings.NewReader(fresh.raw)}, true, nil
}

type reply struct {
	text string // lines joined by \n, codes stripped
	raw  string // as received
}

// readReply reads one (multi-line) reply; a code other than want is an
// *smtp.SMTPError.
func readReply(tp *textproto.Reader, want int) (reply, error) {
	var r reply
	var lines []string
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return r, fmt.Errorf("reading reply: %w", err)
		}
		r.raw += line + "\r\n"
		if len(line) < 3 {
			return r, fmt.Errorf("malformed reply %q", line)
		}
		code := 0
		if _, err := fmt.Sscanf(line[:3], "%d", &code); err != nil {
			return r, fmt.Errorf("malformed reply %q", line)
		}
		if len(line) > 4 {
			lines = append(lines, line[4:])
		}
		if len(line) == 3 || line[3] == ' ' {
			r.text = strings.Join(lines, "\n")
			if code != want {
				return r, &smtp.SMTPError{Code: code, Message: r.text}
			}
			return r, nil
		}
	}
}

func offers(ehlo, ext string) bool {
	for _, l := range strings.Split(ehlo, "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.EqualFold(f[0], ext) {
			return true
		}
	}
	return false
}

// replayConn yields r before the connection's own bytes.
type replayConn struct {
	net.Conn
	r *strings.Reader
}

func (c *replayConn) Read(p []byte) (int, error) {
	if c.r.Len() > 0 {
		return c.r.Read(p)
	}
	return c.Conn.Read(p)
}

// startNoopSMTP is the baseline: a server that accepts everything and,
// when relayTo is set, relays each message to it unchanged (as the proxy
// does), else drops it.
func startNoopSMTP(relayTo string) (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &noopSession{relayTo: relayTo}, nil
	}))
	srv.Domain = "baseline.bench.test"
	srv.MaxMessageBytes = 256 << 20
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	go srv.Serve(ln)
	return ln.Addr().String(), func() { srv.Close() }, nil
}

type noopSession struct {
	relayTo string
	from    string
	to      []string
}

func (s *noopSession) Reset()        { s.from, s.to = "", nil }
func (s *noopSession) Logout() error { return nil }
func (s *noopSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}
func (s *noopSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}
func (s *noopSession) Data(r io.Reader) error {
	if s.relayTo == "" {
		_, err := io.Copy(io.Discard, r)
		return err
	}
	if err := smtp.SendMail(s.relayTo, nil, s.from, s.to, r); err != nil {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "relaying: " + err.Error()}
	}
	return nil
}
