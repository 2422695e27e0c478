package smtp

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/mailward/mailward/policy"
)

// receiver reads one message's content, feeding the engine and the
// spool as it comes.
type receiver struct {
	s       *session
	tx      *transaction
	data    *dataReader
	headers *headerParser
	spool   *spool
	size    int64
	batch   []byte          // body not yet given to the engine and the spool
	refusal *reply          // answered once the data has ended
	early   *policy.Verdict // a reject or tempfail at end of headers
	bodyErr bool            // the engine could not check the body
}

// receive reads the message, then answers according to the verdict and
// upstream.
func (s *session) receive(tx *transaction) bool {
	s.deadline = time.Now().Add(s.settings.cfg.DataTimeout)
	r := &receiver{
		s:       s,
		tx:      tx,
		data:    newDataReader(s.br),
		headers: &headerParser{},
		spool:   &spool{dir: s.settings.spoolDir},
		batch:   make([]byte, 0, bodyBatch),
	}
	defer r.spool.close()
	stopKeepAlive := func() error { return nil }
	if s.up != nil && tx.upMail && !tx.discard {
		stopKeepAlive = s.up.keepAlive(keepAliveEvery)
	}
	if err := r.read(); err != nil {
		// finish aborts the transaction and closes both sides.
		stopKeepAlive()
		s.readFailed(err)
		return false
	}
	upErr := stopKeepAlive()
	s.tx = nil
	switch {
	case r.refusal != nil:
		s.conn.Abort()
		s.rsetUpstream(tx)
		s.reply(*r.refusal)
		return true
	case r.early != nil:
		s.rsetUpstream(tx)
		s.reply(verdictReply(*r.early))
		return true
	}
	return s.endOfMessage(r, upErr)
}

// read takes the content up to the terminating dot. Once the message is
// refused the rest is read and dropped.
func (r *receiver) read() error {
	for {
		frag, err := r.data.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		r.size += int64(len(frag))
		if r.refusal == nil && r.early == nil {
			r.take(frag)
		}
	}
	if r.refusal == nil && r.early == nil {
		r.flushBody()
	}
	if r.refusal == nil && r.early == nil && !r.headers.done {
		r.headers.finish()
		r.headers.done = true
		r.endHeaders()
	}
	return nil
}

// take handles one fragment of content: header bytes until the header
// block ends, body bytes after.
func (r *receiver) take(frag []byte) {
	s, tx := r.s, r.tx
	if s.maxSize > 0 && r.size > s.maxSize {
		s.log.Info("smtp: message refused: over the size limit", "queue_id", tx.id, "limit", s.maxSize)
		r.refuse(newReply(552, "5.3.4", "Message size exceeds fixed limit"))
		return
	}
	if !r.headers.done {
		body, err := r.headers.feed(frag)
		if err != nil {
			s.log.Info("smtp: message refused: header block too large", "queue_id", tx.id, "limit", maxHeaderBytes)
			r.refuse(newReply(552, "5.3.4", "Message header size exceeds limit"))
			return
		}
		if !r.headers.done {
			return
		}
		if r.endHeaders(); r.early != nil {
			return
		}
		if frag = body; len(frag) == 0 {
			return
		}
	}
	r.batch = append(r.batch, frag...)
	if len(r.batch) >= bodyBatch {
		r.flushBody()
	}
}

// flushBody gives the gathered body to the engine and the spool: in
// batches, not line by line.
func (r *receiver) flushBody() {
	if len(r.batch) == 0 {
		return
	}
	s, tx := r.s, r.tx
	if err := s.conn.Body(r.batch); err != nil && !r.bodyErr {
		r.bodyErr = true
		s.log.Warn("smtp: message body not checked", "queue_id", tx.id, "err", err)
	}
	if !tx.discard {
		if _, err := r.spool.Write(r.batch); err != nil && r.refusal == nil {
			s.log.Error("smtp: cannot spool message", "queue_id", tx.id, "err", err)
			r.refuse(newReply(452, "4.3.1", "Insufficient system storage"))
		}
	}
	r.batch = r.batch[:0]
}

func (r *receiver) refuse(rep reply) {
	if r.refusal == nil {
		r.refusal = &rep
	}
}

func (r *receiver) endHeaders() {
	s := r.s
	for _, h := range r.headers.headers {
		s.conn.HeaderField(h.split())
	}
	v := s.conn.EndOfHeaders(s.ctx)
	switch v.Action {
	case policy.Reject, policy.Tempfail:
		r.early = &v
	case policy.Discard:
		r.tx.discard = true
	}
}

// endOfMessage runs the end-of-message stage on a message read in full
// and answers as the verdict says, relaying the message if it is accepted.
func (s *session) endOfMessage(r *receiver, upErr error) bool {
	tx := r.tx
	v := s.conn.EndOfMessage(s.ctx)
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
		switch s.settings.cfg.Quarantine {
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
		extra = append(extra, policy.HeaderEdit{Name: s.settings.cfg.QuarantineHeader, Value: reason})
	}
	return s.relay(r, v, extra, upErr)
}

// relay sends an accepted message upstream and passes on upstream's reply.
func (s *session) relay(r *receiver, v policy.Verdict, extra []policy.HeaderEdit, upErr error) bool {
	tx, headers := r.tx, r.headers
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
	edits := planEdits(headers.headers, v, append(top, extra...))
	body, err := r.spool.reader()
	if err != nil {
		s.log.Error("smtp: cannot read spooled message", "queue_id", tx.id, "err", err)
		s.rsetUpstream(tx)
		s.reply(newReply(451, "4.3.0", "Local error; try again later"))
		return true
	}
	answer, err := s.up.data(func(w io.Writer) error { return edits.write(w, headers.headers, headers.blank, body) })
	if err != nil {
		return s.upstreamLost(err, nil)
	}
	s.reply(answer)
	msg := "smtp: message relayed"
	if !answer.positive() {
		msg = "smtp: upstream refused the message"
	}
	s.log.Info(msg, "queue_id", tx.id, "from", tx.from, "rcpts", len(tx.rcpts), "size", r.size,
		"verdict", v.Action.String(), "upstream_reply", answer.String())
	return answer.code != 421
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
	v := fmt.Sprintf("from %s (%s [%s])\r\n\tby %s (mailward) with %s id %s", ci.helo, name, ci.ip, s.settings.cfg.Hostname, with, tx.id)
	if len(tx.rcpts) == 1 {
		v += "\r\n\tfor <" + tx.rcpts[0] + ">"
	}
	v += "; " + time.Now().Format(time.RFC1123Z)
	return policy.HeaderEdit{Name: "Received", Value: v}
}
