package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// postfixOptions are the protocol options Postfix 3 offers a milter
// (SMFIP_* up to SMFIP_HDR_LEADSPC).
const postfixOptions gomilter.OptProtocol = 0x1fffff

// milterSender drives a milter the way Postfix does: one milter
// connection per SMTP session, each stage sent in order.
func milterSender(addr string) sender {
	client := func(opts gomilter.OptProtocol) *gomilter.Client {
		return gomilter.NewClientWithOptions("tcp", addr, gomilter.ClientOptions{
			Dialer:       &net.Dialer{Timeout: 10 * time.Second},
			ReadTimeout:  60 * time.Second,
			WriteTimeout: 60 * time.Second,
			ActionMask:   gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptQuarantine,
			ProtocolMask: opts,
		})
	}
	// What Postfix 3 offers: a milter may skip any stage or its reply.
	// go-milter's client cannot step down to a protocol 2 milter with
	// those options on offer, so for such a milter it offers none, as
	// Postfix in effect does.
	v6, v2 := client(postfixOptions), client(0)
	var oldMilter atomic.Bool
	return func(ctx context.Context, m *Message) (out outcome) {
		out.Stages = map[string]time.Duration{}
		start := time.Now()
		defer func() { out.Total = time.Since(start) }()
		var s *gomilter.ClientSession
		var err error
		if !oldMilter.Load() {
			s, err = v6.Session()
			if errors.Is(err, gomilter.ErrUnsupportedMilterVersion) {
				oldMilter.Store(true)
			}
		}
		if oldMilter.Load() {
			s, err = v2.Session()
		}
		if err != nil {
			out.Err = fmt.Errorf("milter session: %w", err)
			return
		}
		defer s.Close()
		step := func(stage string, fn func() (*gomilter.Action, error)) (*gomilter.Action, bool) {
			t := time.Now()
			a, err := fn()
			out.Stages[stage] += time.Since(t)
			if err != nil {
				out.Err = fmt.Errorf("%s: %w", stage, err)
				return nil, false
			}
			return a, true
		}
		final := func(a *gomilter.Action) bool {
			switch a.Code {
			case gomilter.ActContinue:
				return false
			case gomilter.ActAccept:
				out.Action = "accept"
			case gomilter.ActDiscard:
				out.Action = "discard"
			case gomilter.ActReject:
				out.Action = "reject"
			case gomilter.ActTempFail:
				out.Action = "tempfail"
			case gomilter.ActReplyCode:
				out.Action = "reject"
				if a.SMTPCode/100 == 4 {
					out.Action = "tempfail"
				}
			}
			return true
		}
		a, ok := step("connect", func() (*gomilter.Action, error) { return s.Conn(clientName, gomilter.FamilyInet, 25, m.IP) })
		if !ok || final(a) {
			return
		}
		if a, ok = step("helo", func() (*gomilter.Action, error) { return s.Helo(m.Helo) }); !ok || final(a) {
			return
		}
		if a, ok = step("mail", func() (*gomilter.Action, error) { return s.Mail("<"+m.From+">", nil) }); !ok || final(a) {
			return
		}
		accepted := 0
		for _, rc := range m.Rcpts {
			a, ok = step("rcpt", func() (*gomilter.Action, error) { return s.Rcpt("<"+rc+">", nil) })
			if !ok {
				return
			}
			if a.Code == gomilter.ActReplyCode || a.Code == gomilter.ActReject || a.Code == gomilter.ActTempFail {
				out.RejectedRcpt = append(out.RejectedRcpt, rc)
				continue
			}
			if final(a) {
				return
			}
			accepted++
		}
		if accepted == 0 {
			out.Action = "reject"
			return
		}
		leadSpace := s.ProtocolOption(gomilter.OptHeaderLeadingSpace)
		for _, h := range m.Header {
			v := h[1]
			if !leadSpace {
				// As an MTA does unless asked: drop the space after the colon.
				v = strings.TrimPrefix(v, " ")
			}
			if a, ok = step("data", func() (*gomilter.Action, error) { return s.HeaderField(h[0], v) }); !ok || final(a) {
				return
			}
		}
		if a, ok = step("data", s.HeaderEnd); !ok || final(a) {
			return
		}
		t := time.Now()
		for off := 0; off < len(m.Body); off += 65535 {
			end := min(off+65535, len(m.Body))
			a, err := s.BodyChunk(m.Body[off:end])
			if err != nil {
				out.Err = fmt.Errorf("body: %w", err)
				return
			}
			if final(a) {
				return
			}
		}
		mods, a, err := s.End()
		out.Stages["eom"] += time.Since(t)
		if err != nil {
			out.Err = fmt.Errorf("end of message: %w", err)
			return
		}
		final(a)
		for _, md := range mods {
			switch md.Code {
			case gomilter.ActQuarantine:
				if out.Action == "accept" {
					out.Action = "quarantine"
				}
			case gomilter.ActChangeHeader:
				if md.HeaderValue == "" {
					out.Removed = append(out.Removed, md.HeaderName)
				}
			}
		}
		return
	}
}

// noopMilter answers continue to everything: the baseline.
func startNoopMilter() (addr string, stop func(), err error) {
	return listenNoopMilter("127.0.0.1:0")
}

// listenNoopMilter serves the no-op milter on addr, for an MTA to attach
// as the baseline of a whole-MTA comparison.
func listenNoopMilter(addr string) (string, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	srv := &gomilter.Server{NewMilter: func() gomilter.Milter { return gomilter.NoOpMilter{} }}
	go srv.Serve(ln)
	return ln.Addr().String(), func() { srv.Close() }, nil
}
