package smtp

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/mailward/mailward/policy"
)

// receive reads the message, feeding the engine and the spool as it
// comes, then answers according to the verdict and upstream.
func (s *session) receive(tx *transaction) bool {
	s.deadline = time.Now().Add(s.st.cfg.DataTimeout)
	dr := newDataReader(s.br)
	hp := &headerParser{}
	sp := &spool{dir: s.st.spoolDir}
	defer sp.close()
	stopKeepAlive := func() error { return nil }
	if s.up != nil && tx.upMail && !tx.discard {
		stopKeepAlive = s.up.keepAlive(keepAliveEvery)
	}
	var (
		size    int64
		refusal *reply          // answered once the data has ended
		early   *policy.Verdict // a reject or tempfail at end of headers
		bodyErr bool
	)
	// Body bytes go to the engine and the spool in batches, not line by line.
	batch := make([]byte, 0, bodyBatch)
	flushBody := func() {
		if len(batch) == 0 {
			return
		}
		if err := s.ec.Body(batch); err != nil && !bodyErr {
			bodyErr = true
			s.log.Warn("smtp: message body not checked", "queue_id", tx.id, "err", err)
		}
		if !tx.discard {
			if _, err := sp.Write(batch); err != nil && refusal == nil {
				s.log.Error("smtp: cannot spool message", "queue_id", tx.id, "err", err)
				r := newReply(452, "4.3.1", "Insufficient system storage")
				refusal = &r
			}
		}
		batch = batch[:0]
	}
	refuse := func(r reply) {
		if refusal == nil {
			refusal = &r
		}
	}
	endHeaders := func() {
		for _, h := range hp.headers {
			s.ec.HeaderField(h.name, h.afterColon())
		}
		v := s.ec.EndOfHeaders(s.ctx)
		switch v.Action {
		case policy.Reject, policy.Tempfail:
			early = &v
		case policy.Discard:
			tx.discard = true
		}
	}
	for {
		frag, err := dr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// finish aborts the transaction and closes both sides.
			stopKeepAlive()
			s.readFailed(err)
			return false
		}
		size += int64(len(frag))
		if refusal != nil || early != nil {
			continue
		}
		if s.maxSize > 0 && size > s.maxSize {
			s.log.Info("smtp: message refused: over the size limit", "queue_id", tx.id, "limit", s.maxSize)
			refuse(newReply(552, "5.3.4", "Message size exceeds fixed limit"))
			continue
		}
		if !hp.done {
			body, err := hp.feed(frag)
			if err != nil {
				s.log.Info("smtp: message refused: header block too large", "queue_id", tx.id, "limit", maxHeaderBytes)
				refuse(newReply(552, "5.3.4", "Message header size exceeds limit"))
				continue
			}
			if !hp.done {
				continue
			}
			if endHeaders(); early != nil {
				continue
			}
			if frag = body; len(frag) == 0 {
				continue
			}
		}
		batch = append(batch, frag...)
		if len(batch) >= bodyBatch {
			flushBody()
		}
	}
	if refusal == nil && early == nil {
		flushBody()
	}
	if refusal == nil && early == nil && !hp.done {
		hp.finish()
		hp.done = true
		endHeaders()
	}
	upErr := stopKeepAlive()
	s.tx = nil
	switch {
	case refusal != nil:
		s.ec.Abort()
		s.rsetUpstream(tx)
		s.reply(*refusal)
		return true
	case early != nil:
		s.rsetUpstream(tx)
		s.reply(verdictReply(*early))
		return true
	}
	v := s.ec.EndOfMessage(s.ctx)
	if tx.discard {
		v.Action = policy.Discard
	}
	var extra []policy.HeaderEdit
	switch v.Action {
	case policy.Reject, policy.Tempfail:
		s.rsetUpstream(tx)
		s.reply(verdictReply(v))
		return true
	case policy.Discard:
		s.rsetUpstream(tx)
		s.log.Info("smtp: message discarded", "queue_id", tx.id, "from", tx.from, "rcpts", len(tx.rcpts))
		s.reply(newReply(250, "2.0.0", "Ok: queued as "+tx.id))
		return true
	case policy.Quarantine:
		reason := oneLine(v.Reason)
		if reason == "" {
			reason = "quarantined by policy"
		}
		switch s.st.cfg.Quarantine {
		case "tempfail":
			s.rsetUpstream(tx)
			s.log.Info("smtp: quarantined message deferred", "queue_id", tx.id, "reason", reason)
			s.reply(newReply(451, "4.7.1", "Message held for review; try again later"))
			return true
		case "reject":
			s.rsetUpstream(tx)
			s.log.Info("smtp: quarantined message rejected", "queue_id", tx.id, "reason", reason)
			s.reply(newReply(550, "5.7.1", "Message rejected by policy"))
			return true
		}
		extra = append(extra, policy.HeaderEdit{Name: s.st.cfg.QuarantineHeader, Value: reason})
	}
	return s.relay(tx, v, extra, hp, sp, size, upErr)
}

// relay sends an accepted message upstream and passes on upstream's reply.
func (s *session) relay(tx *transaction, v policy.Verdict, extra []policy.HeaderEdit, hp *headerParser, sp *spool, size int64, upErr error) bool {
	if upErr != nil || s.up == nil || !tx.upMail {
		if upErr == nil {
			upErr = errors.New("no upstream transaction")
		}
		return s.upstreamLost(upErr, nil)
	}
	var top []policy.HeaderEdit
	if s.up.ident == identReceived {
		top = append(top, s.received(tx))
	}
	edits := planEdits(hp.headers, v, append(top, extra...))
	body, err := sp.reader()
	if err != nil {
		s.log.Error("smtp: cannot read spooled message", "queue_id", tx.id, "err", err)
		s.rsetUpstream(tx)
		s.reply(newReply(451, "4.3.0", "Local error; try again later"))
		return true
	}
	r, err := s.up.data(func(w io.Writer) error { return edits.write(w, hp.headers, hp.blank, body) })
	if err != nil {
		return s.upstreamLost(err, nil)
	}
	s.reply(r)
	msg := "smtp: message relayed"
	if !r.positive() {
		msg = "smtp: upstream refused the message"
	}
	s.log.Info(msg, "queue_id", tx.id, "from", tx.from, "rcpts", len(tx.rcpts), "size", size,
		"verdict", v.Action.String(), "upstream_reply", r.String())
	return r.code != 421
}

// received is the trace header for an upstream that cannot be told the
// client by XCLIENT or XFORWARD.
func (s *session) received(tx *transaction) policy.HeaderEdit {
	ci := s.upstreamClient()
	name := ci.name
	if name == "" {
		name = "unknown"
	}
	with := ci.proto()
	if ci.tls {
		with += "S"
	}
	if ci.login != "" {
		with += "A"
	}
	v := fmt.Sprintf("from %s (%s [%s])\r\n\tby %s (mailward) with %s id %s", ci.helo, name, ci.ip, s.st.cfg.Hostname, with, tx.id)
	if len(tx.rcpts) == 1 {
		v += "\r\n\tfor <" + tx.rcpts[0] + ">"
	}
	v += "; " + time.Now().Format(time.RFC1123Z)
	return policy.HeaderEdit{Name: "Received", Value: v}
}
