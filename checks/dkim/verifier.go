package dkim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/mailward/mailward/checks/resolver"
)

var (
	errVerified = errors.New("verification finished")
	errTooBig   = errors.New("message over max_size")
	errClosed   = errors.New("verifier closed")
)

// Verifier verifies the DKIM signatures of one message. Write the message
// to it (header block, blank line, body; CRLF line ends), then call Finish
// once. The body is hashed as it arrives and never kept. A Verifier is for
// one goroutine.
//
// Key look-ups happen while the body streams in (the library needs the key
// before it reads the body), bounded by the context given to NewVerifier
// and, once Finish runs, by Finish's context too.
type Verifier struct {
	c      *Checker
	ctx    context.Context
	cancel context.CancelFunc

	size      int64
	inBody    bool
	hdr       []byte // the header block, until its end is seen
	lineStart int    // start of the header line being scanned
	scanned   int    // bytes of hdr scanned for line ends

	sigs    []sigField
	from    []string
	over    bool // the message passed MaxSize
	hdrOver bool // the header block passed maxHeader

	pw   *io.PipeWriter
	done chan struct{} // closed when the library has returned
	// Set by the verifying goroutine before done is closed.
	verifs []*msgdkim.Verification
	verr   error

	mu   sync.Mutex
	keys map[string]int // key name → RSA bits, for keys refused as too small

	finished bool
	closed   bool
	results  []Result
}

type sigField struct {
	sig *Signature
	err error
}

// NewVerifier starts verifying one message. ctx bounds the key look-ups
// made while the message streams in. Every Verifier must end with Finish
// or Close, which release the goroutine verifying it.
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
			v.parseHeader(v.hdr)
			v.hdr = nil
		}
		if v.pw != nil {
			v.pw.CloseWithError(errTooBig)
			v.pw = nil
		}
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
			v.over, v.hdrOver = true, true
			v.parseHeader(v.hdr)
			v.hdr = nil
		}
		return n, nil
	}
	v.inBody = true
	v.parseHeader(v.hdr[:end])
	v.start()
	v.feed(v.hdr)
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

// parseHeader finds the DKIM-Signature and From fields, splitting fields
// exactly as the verifying library does so that signatures line up.
func (v *Verifier) parseHeader(block []byte) {
	for _, f := range splitFields(block) {
		name, value, _ := strings.Cut(f, ":")
		name = strings.TrimSpace(name)
		switch {
		case strings.EqualFold(name, "DKIM-Signature"):
			sig, err := ParseSignature(value)
			v.sigs = append(v.sigs, sigField{sig, err})
		case strings.EqualFold(name, "From"):
			v.from = append(v.from, strings.TrimSpace(value))
		}
	}
}

// splitFields splits a header block into fields, continuation lines
// joined with CRLF, up to the first empty line.
func splitFields(block []byte) []string {
	var fields []string
	for len(block) > 0 {
		line := block
		if i := bytes.IndexByte(block, '\n'); i >= 0 {
			line, block = block[:i], block[i+1:]
		} else {
			block = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break
		}
		if len(fields) > 0 && (line[0] == ' ' || line[0] == '\t') {
			fields[len(fields)-1] += "\r\n" + string(line)
			continue
		}
		fields = append(fields, string(line))
	}
	return fields
}

// start runs the library over a pipe when there is something to verify.
func (v *Verifier) start() {
	if len(v.sigs) == 0 {
		return
	}
	pr, pw := io.Pipe()
	v.pw = pw
	v.done = make(chan struct{})
	opts := &msgdkim.VerifyOptions{LookupTXT: v.lookup, MaxVerifications: v.c.opts.MaxSignatures}
	go func() {
		defer close(v.done)
		verifs, err := msgdkim.VerifyWithOptions(pr, opts)
		// The library may stop reading early; release the writer.
		pr.CloseWithError(errVerified)
		if errors.Is(err, msgdkim.ErrTooManySignatures) {
			err = nil
		}
		v.verifs, v.verr = verifs, err
	}()
}

func (v *Verifier) feed(p []byte) {
	if v.pw == nil || len(p) == 0 { // an empty pipe write would wait for a reader
		return
	}
	if _, err := v.pw.Write(p); err != nil {
		// The library has finished or failed; the rest is not needed.
		v.pw = nil
	}
}

// lookup fetches a key for the library. It refuses RSA keys under the
// minimum here, so the library never accepts them.
func (v *Verifier) lookup(name string) ([]string, error) {
	txts, err := v.c.r.LookupTXT(v.ctx, name)
	if err != nil {
		if resolver.IsNotFound(err) {
			return nil, err
		}
		return nil, tempError{err}
	}
	if len(txts) == 1 {
		if k, err := ParseKey(txts[0]); err == nil && k.Type == "rsa" && !k.Revoked && k.Bits < v.c.opts.MinRSABits {
			v.mu.Lock()
			if v.keys == nil {
				v.keys = map[string]int{}
			}
			v.keys[strings.ToLower(name)] = k.Bits
			v.mu.Unlock()
			return nil, fmt.Errorf("RSA key of %d bits is under the minimum of %d", k.Bits, v.c.opts.MinRSABits)
		}
	}
	return txts, nil
}

// tempError marks a look-up failure as temporary in the way the library
// tests for it (a net.Error whose Temporary is true).
type tempError struct{ err error }

func (e tempError) Error() string   { return e.err.Error() }
func (e tempError) Unwrap() error   { return e.err }
func (e tempError) Timeout() bool   { return errors.Is(e.err, resolver.ErrTimeout) }
func (e tempError) Temporary() bool { return true }

// From returns the raw values of the message's From fields, as found in
// the header block (folding kept). It is complete once the header block
// has been written.
func (v *Verifier) From() []string { return v.from }

// Finish waits for verification to end and returns one result per
// DKIM-Signature field, in header order; nil when there is none. ctx ends
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
		v.parseHeader(v.hdr)
		v.start()
		v.feed(v.hdr)
		if len(v.hdr) > 0 && v.hdr[len(v.hdr)-1] != '\n' {
			v.feed([]byte("\r\n"))
		}
		v.feed([]byte("\r\n"))
		v.hdr = nil
	}
	if v.pw != nil {
		v.pw.Close()
		v.pw = nil
	}
	var waitErr error
	if v.done != nil {
		stop := context.AfterFunc(ctx, v.cancel)
		select {
		case <-v.done:
		case <-ctx.Done():
			waitErr = ctx.Err()
		}
		stop()
	}
	v.results = v.report(waitErr)
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
	if v.pw != nil {
		v.pw.CloseWithError(errClosed)
		v.pw = nil
	}
	v.hdr = nil
}

// report turns the library's verdicts into results.
func (v *Verifier) report(waitErr error) []Result {
	if len(v.sigs) == 0 {
		return nil
	}
	out := make([]Result, len(v.sigs))
	tags := shortSignatures(v.sigs)
	for i, sf := range v.sigs {
		r := &out[i]
		r.Domain, r.Selector, r.Algorithm = sf.sig.Domain, sf.sig.Selector, sf.sig.Algorithm
		r.Identifier, r.Signature = sf.sig.Identifier, tags[i]
		r.Result, r.Reason = v.judge(i, sf, waitErr)
	}
	return out
}

func (v *Verifier) judge(i int, sf sigField, waitErr error) (result, reason string) {
	limit := v.c.opts.MaxSignatures
	switch {
	case i >= limit:
		return "none", fmt.Sprintf("not checked: over the limit of %d signatures", limit)
	case v.hdrOver:
		return "neutral", fmt.Sprintf("not verified: header block over %d bytes", maxHeader)
	case v.over:
		return "neutral", fmt.Sprintf("not verified: message over max_size (%d bytes)", v.c.opts.MaxSize)
	case sf.err != nil:
		return "permerror", sf.err.Error()
	case sf.sig.Algorithm == "rsa-sha1":
		return "policy", "rsa-sha1 is not accepted (RFC 8301)"
	case sf.sig.HasLength:
		return "policy", "l= (body length) is not accepted: part of the body may be unsigned"
	case waitErr != nil:
		return "temperror", "verification did not finish: " + waitErr.Error()
	case v.verr != nil:
		return "neutral", "not verified: " + trimPrefix(v.verr)
	case i >= len(v.verifs):
		return "neutral", "not verified"
	}
	err := v.verifs[i].Err
	if err == nil {
		return "pass", ""
	}
	v.mu.Lock()
	bits, small := v.keys[strings.ToLower(sf.sig.Selector+"._domainkey."+sf.sig.Domain)]
	v.mu.Unlock()
	switch {
	case small:
		return "fail", fmt.Sprintf("RSA key of %d bits is under the minimum of %d (RFC 8301)", bits, v.c.opts.MinRSABits)
	case msgdkim.IsTempFail(err):
		return "temperror", trimPrefix(err)
	case msgdkim.IsPermFail(err):
		return "permerror", trimPrefix(err)
	}
	return "fail", trimPrefix(err)
}

func trimPrefix(err error) string { return strings.TrimPrefix(err.Error(), "dkim: ") }

// shortSignatures returns, for header.b (RFC 6008), the shortest prefix of
// each b= value, at least 8 characters, that tells it from the others.
func shortSignatures(sigs []sigField) []string {
	out := make([]string, len(sigs))
	for i, sf := range sigs {
		b := sf.sig.B
		n := min(8, len(b))
		for ; n < len(b); n++ {
			unique := true
			for j, other := range sigs {
				if j != i && strings.HasPrefix(other.sig.B, b[:n]) {
					unique = false
					break
				}
			}
			if unique {
				break
			}
		}
		out[i] = b[:n]
	}
	return out
}
