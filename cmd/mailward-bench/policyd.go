package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// envelopeClasses are the corpus classes whose verdict needs no message
// content: all a policy service can get right. The others depend on DKIM
// (and so DMARC) or on header edits.
var envelopeClasses = map[string]bool{"pass": true, "spf_only": true, "multi_rcpt": true}

// policyClient is one connection to a policy service, as one Postfix
// smtpd process keeps it.
type policyClient struct {
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
}

// policySender drives a Postfix policy service as Postfix does: a pool of
// connections, at most one per worker, each carrying many requests; per
// message one RCPT request per recipient, then END-OF-MESSAGE.
// The returned func closes the idle connections.
func policySender(addr string) (sender, func()) {
	var (
		mu    sync.Mutex
		idle  []*policyClient
		seq   atomic.Int64
		pid   = 4000 + time.Now().Unix()%1000 // stands for the smtpd process id
		start = time.Now().Unix()
	)
	get := func(ctx context.Context) (*policyClient, error) {
		mu.Lock()
		if n := len(idle); n > 0 {
			c := idle[n-1]
			idle = idle[:n-1]
			mu.Unlock()
			return c, nil
		}
		mu.Unlock()
		d := net.Dialer{Timeout: 10 * time.Second}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("connecting to %s: %w", addr, err)
		}
		return &policyClient{conn: conn, r: bufio.NewReader(conn), w: bufio.NewWriter(conn)}, nil
	}
	put := func(c *policyClient) {
		mu.Lock()
		idle = append(idle, c)
		mu.Unlock()
	}
	closeAll := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range idle {
			c.conn.Close()
		}
		idle = nil
	}
	return func(ctx context.Context, m *Message) (out outcome) {
		out.Stages = map[string]time.Duration{}
		t0 := time.Now()
		defer func() { out.Total = time.Since(t0) }()
		c, err := get(ctx)
		if err != nil {
			out.Err = err
			return
		}
		n := seq.Add(1)
		// Each message is its own SMTP session: a new client port and instance.
		base := map[string]string{
			"request":             "smtpd_access_policy",
			"protocol_name":       "ESMTP",
			"client_address":      m.IP,
			"client_name":         clientName,
			"client_port":         strconv.Itoa(int(1024 + n%64000)),
			"reverse_client_name": clientName,
			"server_address":      "127.0.0.1",
			"server_port":         "25",
			"helo_name":           m.Helo,
			"sender":              m.From,
			"instance":            fmt.Sprintf("%x.%x.%x.0", pid, start, n),
			"queue_id":            fmt.Sprintf("BENCH%X", n),
		}
		stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Now()) })
		defer stop()
		ask := func(stage string, attrs map[string]string) (string, bool) {
			t := time.Now()
			a, err := c.ask(base, attrs)
			out.Stages[stage] += time.Since(t)
			if err != nil {
				out.Err = fmt.Errorf("%s request: %w", stage, err)
				c.conn.Close()
				return "", false
			}
			return a, true
		}
		var accepted []string
		held := false
		for _, rc := range m.Rcpts {
			a, ok := ask("rcpt", map[string]string{"protocol_state": "RCPT", "recipient": rc, "recipient_count": "0", "size": "0"})
			if !ok {
				return
			}
			switch act := policyAction(a); act {
			case "reject":
				out.RejectedRcpt = append(out.RejectedRcpt, rc)
			case "accept":
				accepted = append(accepted, rc)
			case "quarantine":
				held = true
				accepted = append(accepted, rc)
			default: // tempfail or discard ends the message here
				out.Action = act
				put(c)
				return
			}
		}
		if len(accepted) == 0 {
			out.Action = "reject"
			put(c)
			return
		}
		size := len(m.Body)
		for _, h := range m.Header {
			size += len(h[0]) + len(h[1]) + 4
		}
		a, ok := ask("eom", map[string]string{"protocol_state": "END-OF-MESSAGE", "recipient": "", "recipient_count": strconv.Itoa(len(accepted)), "size": strconv.Itoa(size)})
		if !ok {
			return
		}
		put(c)
		out.Action = policyAction(a)
		if out.Action == "accept" && held {
			out.Action = "quarantine"
		}
		return
	}, closeAll
}

// ask sends one request and reads its action.
func (c *policyClient) ask(base, attrs map[string]string) (string, error) {
	c.conn.SetDeadline(time.Now().Add(time.Minute))
	for k, v := range base {
		if _, ok := attrs[k]; !ok {
			fmt.Fprintf(c.w, "%s=%s\n", k, v)
		}
	}
	for k, v := range attrs {
		fmt.Fprintf(c.w, "%s=%s\n", k, v)
	}
	c.w.WriteString("\n")
	if err := c.w.Flush(); err != nil {
		return "", err
	}
	var action string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("connection closed by the policy service")
			}
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		if v, ok := strings.CutPrefix(line, "action="); ok {
			action = v
		}
	}
	if strings.TrimSpace(action) == "" {
		return "", errors.New("answer without an action")
	}
	return action, nil
}

// policyAction maps an access(5) action to an outcome action.
func policyAction(a string) string {
	f := strings.Fields(a)
	if len(f) == 0 {
		return "accept"
	}
	word := strings.ToUpper(f[0])
	switch {
	case word == "REJECT" || len(word) == 3 && word[0] == '5':
		return "reject"
	case word == "DEFER" || word == "DEFER_IF_PERMIT" || word == "DEFER_IF_REJECT" || len(word) == 3 && word[0] == '4':
		return "tempfail"
	case word == "HOLD":
		return "quarantine"
	case word == "DISCARD":
		return "discard"
	}
	// DUNNO, OK, PREPEND and the rest let the mail through.
	return "accept"
}

// startNoopPolicy is the baseline: a policy service answering DUNNO to
// every request.
func startNoopPolicy() (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					c.Close()
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
				}()
				r, w := bufio.NewReader(c), bufio.NewWriter(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if strings.TrimRight(line, "\r\n") != "" {
						continue
					}
					w.WriteString("action=DUNNO\n\n")
					if w.Flush() != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}, nil
}
