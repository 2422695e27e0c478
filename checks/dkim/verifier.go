package dkim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

var errTooBig = errors.New("message over max_size")

// Verifier verifies the DKIM signatures of one message. Write the message
// to it (header block, blank line, body; CRLF line ends), then call Finish
// once. The body is hashed as it arrives and never kept. A Verifier is for
// one goroutine.
//
// When the header block is complete its signed fields are hashed at once
// and the keys looked up in the background, while the body streams in;
// the look-ups are bounded by the context given to NewVerifier and, once
// Finish runs, by Finish's context too. No goroutine hashes anything, so
// a verification that is given up costs no more CPU.
type Verifier struct {
	c      *Checker
	ctx    context.Context
	cancel context.CancelFunc

	size      int64
	inBody    bool
	hdr       []byte // the header block, until its end is seen
	lineStart int    // start of the header line being scanned
	scanned   int    // bytes of hdr scanned for line ends

	sigs     []*sigState
	from     []string
	partial  bool // the header block was parsed before its end was seen
	over     bool // the message passed MaxSize
	hdrOver  bool // the header block passed maxHeader
	manyHdrs int  // the number of header fields, when over MaxHeaderFields

	bodies  map[string]*bodyHasher // by body canonicalization
	stopped error                  // the context ended while the body was hashed
	done    chan struct{}          // closed when every key look-up has returned

	finished bool
	closed   bool
	results  []Result
}

// sigState is one DKIM-Signature field on its way to a result.
type sigState struct {
	sig   *Signature
	err   error // the field does not parse
	field int   // index among the header fields

	// Decided before any key is needed, or empty.
	result, reason string

	headerHash []byte
	body       *bodyHasher
	looked     bool // a key look-up was started
	// Set by the look-up goroutine before done is closed.
	txts   []string
	keyErr error
}

// NewVerifier starts verifying one message. ctx bounds the key look-ups
// made while the message streams in. Every Verifier must end with Finish
// or Close, which stop any look-up still running.
func (c *Checker) NewVerifier(ctx context.Context) *Verifier {
	ctx, cancel := context.WithCancel(ctx)
	return &Verifier{c: c, ctx: ctx, cancel: cancel}
}

// Write takes the next part of the message. It never fails on message
// content; it fails only when called after Finish or Close.
func (v *Verifier) Write(p []byte) (int, error) {
	if v.finished || v.closed {
		return 0, errors.New("dkim: write after Finish or Close")
	}
	n := len(p)
	v.size += int64(n)
	if v.over {
		return n, nil
	}
	if v.size > v.c.opts.MaxSize {
		v.over = true
		if !v.inBody {
			// Still report the signatures the header block shows.
			v.hdr = append(v.hdr, p[:min(len(p), max(0, maxHeader-len(v.hdr)))]...)
			v.partial = v.headerEnd() < 0
			v.parseHeader(v.hdr)
			v.hdr = nil
		}
		v.bodies = nil
		return n, nil
	}
	if v.inBody {
		v.feed(p)
		return n, nil
	}
	// Take no more than the header block may hold, so that one huge write
	// is not copied.
	take := min(len(p), maxHeader-len(v.hdr))
	v.hdr = append(v.hdr, p[:take]...)
	end := v.headerEnd()
	if end < 0 {
		if take < len(p) || len(v.hdr) >= maxHeader {
			v.over, v.hdrOver, v.partial = true, true, true
			v.parseHeader(v.hdr)
			v.hdr = nil
		}
		return n, nil
	}
	v.inBody = true
	v.start(v.parseHeader(v.hdr[:end]))
	v.feed(v.hdr[end:])
	v.feed(p[take:])
	v.hdr = nil
	return n, nil
}

// headerEnd returns the offset just past the blank line that ends the
// header block, or -1 if it has not arrived yet.
func (v *Verifier) headerEnd() int {
	for {
		i := bytes.IndexByte(v.hdr[v.scanned:], '\n')
		if i < 0 {
			v.scanned = len(v.hdr)
			return -1
		}
		nl := v.scanned + i
		line := v.hdr[v.lineStart:nl]
		if len(line) == 0 || len(line) == 1 && line[0] == '\r' {
			return nl + 1
		}
		v.lineStart, v.scanned = nl+1, nl+1
	}
}

// parseHeader splits the header block into fields and finds the
// DKIM-Signature and From fields.
func (v *Verifier) parseHeader(block []byte) []field {
	fields := splitFields(block)
	for i, f := range fields {
		switch f.name {
		case "dkim-signature":
			if len(v.sigs) >= 2*v.c.opts.MaxSignatures {
				// Reported as "none" up to here; past it, not at all:
				// every result ends up in Authentication-Results.
				continue
			}
			_, value, _ := strings.Cut(f.text, ":")
			sig, err := ParseSignature(value)
			v.sigs = append(v.sigs, &sigState{sig: sig, err: err, field: i})
		case "from":
			_, value, _ := strings.Cut(f.text, ":")
			v.from = append(v.from, strings.TrimSpace(value))
		}
	}
	return fields
}

// start hashes the signed header fields of each signature that is to be
// verified, sets up the body hashes and starts the key look-ups.
func (v *Verifier) start(fields []field) {
	if len(v.sigs) == 0 {
		return
	}
	if len(fields) > MaxHeaderFields {
		v.manyHdrs = len(fields)
		return
	}
	idx := indexFields(fields)
	now := time.Now()
	var lookups sync.WaitGroup
	for _, st := range v.sigs[:min(len(v.sigs), v.c.opts.MaxSignatures)] {
		if v.ctx.Err() != nil {
			break
		}
		if st.err != nil || v.decide(st, now) {
			continue
		}
		st.headerHash = headerHash(st.sig, fields, idx, st.field)
		if v.bodies == nil {
			v.bodies = map[string]*bodyHasher{}
		}
		st.body = v.bodies[st.sig.bodyCanon]
		if st.body == nil {
			st.body = &bodyHasher{relaxed: st.sig.bodyCanon == "relaxed", h: sha256.New()}
			st.body.out = st.body.buf[:0]
			v.bodies[st.sig.bodyCanon] = st.body
		}
		st.looked = true
		lookups.Add(1)
		go func() {
			defer lookups.Done()
			st.txts, st.keyErr = v.c.r.LookupTXT(v.ctx, st.sig.Selector+"._domainkey."+st.sig.Domain)
		}()
	}
	v.done = make(chan struct{})
	go func() {
		lookups.Wait()
		close(v.done)
	}()
}

// decide gives the result of a signature that local policy or its own
// tags settle without a key; it reports whether it did.
func (v *Verifier) decide(st *sigState, now time.Time) bool {
	sig := st.sig
	switch {
	case sig.Algorithm == "rsa-sha1":
		st.result, st.reason = "policy", "rsa-sha1 is not accepted (RFC 8301)"
	case sig.HasLength:
		st.result, st.reason = "policy", "l= (body length) is not accepted: part of the body may be unsigned"
	case sig.Algorithm != "rsa-sha256" && sig.Algorithm != "ed25519-sha256":
		st.result, st.reason = "permerror", fmt.Sprintf("algorithm a=%s is not supported", clip(sig.Algorithm))
	case !sig.Expiration.IsZero() && now.After(sig.Expiration):
		st.result, st.reason = "permerror", "signature has expired (x=)"
	case !sig.Expiration.IsZero() && !sig.Timestamp.IsZero() && !sig.Expiration.After(sig.Timestamp):
		st.result, st.reason = "permerror", "signature x= is not after t="
	case sig.Timestamp.After(now.Add(v.c.opts.ClockSkew)):
		st.result, st.reason = "permerror", fmt.Sprintf("signature time stamp t= is %s in the future, more than the clock skew allowed (%s)",
			sig.Timestamp.Sub(now).Round(time.Second), v.c.opts.ClockSkew)
	default:
		return false
	}
	return true
}

// headerHash is the SHA-256 of the signed header fields and the signature
// field itself (RFC 6376 section 3.7). h= has at most MaxSignedHeaders
// names and each is found through the index, so this is linear in the
// size of the fields hashed.
func headerHash(sig *Signature, fields []field, idx headerIndex, self int) []byte {
	var b strings.Builder
	p := picker{idx: idx}
	for _, name := range sig.Headers {
		if i, ok := p.pick(trimFWS(name)); ok {
			canonHeader(&b, sig.headerCanon, fields[i].text)
		}
	}
	canonHeader(&b, sig.headerCanon, withoutB(fields[self].text))
	h := sha256.New()
	io.WriteString(h, strings.TrimSuffix(b.String(), "\r\n"))
	return h.Sum(nil)
}

// feed hashes body bytes, unless the context has ended: then hashing
// stops and the signatures come out temperror.
func (v *Verifier) feed(p []byte) {
	if len(v.bodies) == 0 || len(p) == 0 {
		return
	}
	if err := v.ctx.Err(); err != nil {
		v.stopped, v.bodies = err, nil
		return
	}
	for _, b := range v.bodies {
		b.Write(p)
	}
}

// From returns the raw values of the message's From fields, as found in
// the header block (folding kept). It is complete once the header block
// has been written, unless FromComplete says otherwise.
func (v *Verifier) From() []string { return v.from }

// FromComplete is false when the header block was too big to read to its
// end (over 1 MiB, or over max_size): a From field may lie beyond what
// From returns, so no DMARC verdict can rest on it.
func (v *Verifier) FromComplete() bool { return !v.partial }

// Finish waits for the key look-ups to end and returns one result per
// DKIM-Signature field, in header order, for up to twice MaxSignatures
// fields; nil when there is none. ctx ends
// the wait (unfinished signatures are then temperror). Later calls return
// the same results.
func (v *Verifier) Finish(ctx context.Context) []Result {
	if v.finished {
		return v.results
	}
	v.finished = true
	defer v.cancel()
	if !v.inBody && !v.over {
		// The message ended inside its header: it has no body.
		v.inBody = true
		v.start(v.parseHeader(v.hdr))
		v.hdr = nil
	}
	var waitErr error
	if v.done != nil && !v.over {
		select {
		case <-v.done:
		case <-ctx.Done():
			waitErr = ctx.Err()
		case <-v.ctx.Done():
			waitErr = v.ctx.Err()
		}
	}
	v.results = v.report(waitErr)
	v.bodies = nil
	return v.results
}

// Close abandons the message and stops any look-up in flight. It is safe
// to call after Finish and more than once.
func (v *Verifier) Close() {
	if v.closed {
		return
	}
	v.closed = true
	v.cancel()
	v.hdr, v.bodies = nil, nil
}
