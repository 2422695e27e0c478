package deliver

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"
)

// replyError is a reply of the relay that was not the one wanted.
type replyError struct {
	cmd  string
	code int
	msg  string
}

func (e *replyError) Error() string {
	return fmt.Sprintf("relay answered %s with %d %s", e.cmd, e.code, e.msg)
}

// temporary: a 4xx reply is worth trying again, a 5xx one is not.
func (e *replyError) temporary() bool { return e.code >= 400 && e.code < 500 }

// permanentError marks a failure that retrying cannot mend (TLS refused
// under starttls: require, a message over the relay's SIZE).
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// isTemporary reports whether a delivery error is worth a retry: 4xx
// replies and connection trouble are, 5xx replies and policy refusals
// are not.
func isTemporary(err error) bool {
	var re *replyError
	if errors.As(err, &re) {
		return re.temporary()
	}
	var pe permanentError
	return !errors.As(err, &pe)
}

// relay is one SMTP session with the relay: EHLO, STARTTLS per policy,
// one transaction, QUIT. Written for this job rather than a general
// client because the EHLO name must be ours before STARTTLS.
type relay struct {
	conn net.Conn
	text *textproto.Conn
	ext  map[string]string
	tls  bool
}

// sendOne delivers msg from from to to through the relay at addr.
func (s *Sender) sendOne(ctx context.Context, from, to string, msg []byte) (err error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(s.cfg.Timeout))
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.cfg.Relay)
	if err != nil {
		return fmt.Errorf("connecting to relay %s: %w", s.cfg.Relay, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// Cancelling the context breaks off whatever the session is doing.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	c := &relay{conn: conn, text: textproto.NewConn(conn)}
	defer func() {
		if ctx.Err() != nil && err != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
	}()
	if _, _, err := c.read("greeting", 220); err != nil {
		return err
	}
	if err := c.hello(s.helo); err != nil {
		return err
	}
	if s.cfg.StartTLS != StartTLSOff {
		_, offered := c.ext["STARTTLS"]
		switch {
		case offered:
			if err := c.startTLS(s.tlsConfig()); err != nil {
				return err
			}
			if err := c.hello(s.helo); err != nil {
				return err
			}
		case s.cfg.StartTLS == StartTLSRequire:
			c.cmd("QUIT", 221, "QUIT")
			return permanentError{fmt.Errorf("relay %s does not offer STARTTLS, which starttls: require demands", s.cfg.Relay)}
		}
	}
	if s.cfg.Username != "" {
		if err := c.auth(s.cfg.Username, s.pass); err != nil {
			c.cmd("QUIT", 221, "QUIT")
			return err
		}
	}
	mailCmd := "MAIL FROM:<" + from + ">"
	if v, ok := c.ext["SIZE"]; ok {
		if limit, err := strconv.ParseInt(v, 10, 64); err == nil && limit > 0 && int64(len(msg)) > limit {
			c.cmd("QUIT", 221, "QUIT")
			return permanentError{fmt.Errorf("the report message (%d bytes) is over the relay's SIZE limit of %d bytes", len(msg), limit)}
		}
		mailCmd += " SIZE=" + strconv.Itoa(len(msg))
	}
	if err := c.cmd("MAIL", 250, "%s", mailCmd); err != nil {
		return err
	}
	if err := c.cmd("RCPT", 25, "RCPT TO:<%s>", to); err != nil { // 250 or 251
		return err
	}
	if err := c.cmd("DATA", 354, "DATA"); err != nil {
		return err
	}
	w := c.text.DotWriter()
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("sending the report to relay %s: %w", s.cfg.Relay, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("sending the report to relay %s: %w", s.cfg.Relay, err)
	}
	if _, _, err := c.read("end of data", 250); err != nil {
		return err
	}
	// The relay has the message; a failed QUIT changes nothing.
	c.cmd("QUIT", 221, "QUIT")
	return nil
}

// read reads one reply, which must have code want.
func (c *relay) read(cmd string, want int) (int, string, error) {
	code, msg, err := c.text.ReadResponse(want)
	if err != nil {
		var pe *textproto.Error
		if errors.As(err, &pe) {
			return code, msg, &replyError{cmd: cmd, code: pe.Code, msg: pe.Msg}
		}
		return code, msg, fmt.Errorf("reading the relay's reply to %s: %w", cmd, err)
	}
	return code, msg, nil
}

// cmd sends a command and reads its reply.
func (c *relay) cmd(name string, want int, format string, args ...any) error {
	if err := c.text.PrintfLine(format, args...); err != nil {
		return fmt.Errorf("sending %s to the relay: %w", name, err)
	}
	_, _, err := c.read(name, want)
	return err
}

// hello sends EHLO, falling back to HELO, and records the extensions.
func (c *relay) hello(name string) error {
	if err := c.text.PrintfLine("EHLO %s", name); err != nil {
		return fmt.Errorf("sending EHLO to the relay: %w", err)
	}
	_, msg, err := c.read("EHLO", 250)
	var re *replyError
	if errors.As(err, &re) && (re.code == 500 || re.code == 502) {
		c.ext = map[string]string{}
		return c.cmd("HELO", 250, "HELO %s", name)
	}
	if err != nil {
		return err
	}
	c.ext = map[string]string{}
	lines := strings.Split(msg, "\n")
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(l), " ")
		c.ext[strings.ToUpper(k)] = v
	}
	return nil
}

// auth logs in with AUTH PLAIN (RFC 4616), never in clear.
func (c *relay) auth(user, pass string) error {
	if !c.tls {
		return permanentError{errors.New("not sending the relay password in clear: the relay offered no STARTTLS")}
	}
	if !slices.Contains(strings.Fields(strings.ToUpper(c.ext["AUTH"])), "PLAIN") {
		return permanentError{fmt.Errorf("the relay does not offer AUTH PLAIN (it offers %q)", c.ext["AUTH"])}
	}
	resp := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	if err := c.text.PrintfLine("AUTH PLAIN %s", resp); err != nil {
		return fmt.Errorf("sending AUTH to the relay: %w", err)
	}
	_, _, err := c.read("AUTH", 235)
	return err
}

// startTLS upgrades the session. A failed handshake is not retried under
// opportunistic TLS either: the relay said it could, so something is wrong.
func (c *relay) startTLS(cfg *tls.Config) error {
	if err := c.cmd("STARTTLS", 220, "STARTTLS"); err != nil {
		return err
	}
	tc := tls.Client(c.conn, cfg)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("TLS handshake with the relay: %w", err)
	}
	c.conn = tc
	c.text = textproto.NewConn(tc)
	c.tls = true
	return nil
}

// tlsConfig verifies the relay's certificate only when TLS is required:
// opportunistic TLS, like an MTA's, takes any certificate, since the
// alternative is sending in clear.
func (s *Sender) tlsConfig() *tls.Config {
	host, _, _ := net.SplitHostPort(s.cfg.Relay)
	cfg := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12, RootCAs: s.roots}
	if s.cfg.StartTLS != StartTLSRequire {
		cfg.InsecureSkipVerify = true
	}
	return cfg
}
