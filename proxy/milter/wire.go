package milter

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// maxPacket bounds one milter packet before anything is allocated for it.
// The MTA sends body chunks of at most 64 KiB; headers and macros are far
// smaller. A length beyond this is a broken or hostile peer.
const maxPacket = 1 << 20

// wire reads and writes milter packets on one MTA connection: a 4-byte
// big-endian length, a command byte, then the data. Reads go through one
// small buffer and reuse one packet buffer; replies are buffered and sent
// with one system call when the MTA is to read them.
type wire struct {
	conn    net.Conn
	timeout time.Duration
	r       *bufio.Reader
	w       *bufio.Writer
	buf     []byte
	hdr     [5]byte
	// ack, where set, acknowledges at once what has been read.
	ack func()
	// noReplySafe says whether the MTA may send packets that get no
	// reply on this connection without waiting on a delayed ACK.
	noReplySafe bool
	// read and wrote say whether anything was read from the connection,
	// and whether a reply went out since the last read.
	readAny, wrote bool
	// last is the command of the last packet read.
	last byte
	// unanswered, in tests, is called where ack is: see Server.unanswered.
	unanswered func(cmd byte)
}

func newWire(c net.Conn, timeout time.Duration) *wire {
	w := &wire{timeout: timeout}
	// Small on purpose: a thousand idle MTA connections must stay cheap,
	// and body chunks larger than the buffer bypass it.
	w.r = bufio.NewReaderSize(deadlineReader{w}, 4096)
	w.w = bufio.NewWriterSize(c, 512)
	w.reset(c)
	return w
}

// reset makes w, with its buffers, the wire of a new connection c: the
// MTA opens a connection per SMTP session, and buffers made for each
// were a good part of what a message allocated.
func (w *wire) reset(c net.Conn) {
	w.conn = c
	w.ack, w.noReplySafe = quickAcker(c)
	w.r.Reset(deadlineReader{w})
	w.w.Reset(c)
	w.readAny, w.wrote, w.last, w.unanswered = false, false, 0, nil
	w.release()
}

// read returns the next command and its data. The data is only valid
// until the next read: callers copy what they keep.
func (w *wire) read() (byte, []byte, error) {
	if _, err := io.ReadFull(w.r, w.hdr[:4]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(w.hdr[:4])
	if n == 0 {
		return 0, nil, errors.New("milter packet of length 0")
	}
	if n > maxPacket {
		return 0, nil, fmt.Errorf("milter packet of %d bytes is over the %d-byte limit", n, maxPacket)
	}
	if cap(w.buf) < int(n) {
		w.buf = make([]byte, n)
	}
	p := w.buf[:n]
	if _, err := io.ReadFull(w.r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	w.last = p[0]
	return p[0], p[1:], nil
}

// release lets go of a packet buffer grown for body chunks, so that an
// MTA connection idle between messages stays small.
func (w *wire) release() {
	if cap(w.buf) > 4096 {
		w.buf = nil
	}
}

// put queues one reply packet made of parts.
func (w *wire) put(code byte, parts ...string) {
	n := 1
	for _, p := range parts {
		n += len(p)
	}
	binary.BigEndian.PutUint32(w.hdr[:4], uint32(n))
	w.hdr[4] = code
	w.w.Write(w.hdr[:])
	for _, p := range parts {
		w.w.WriteString(p)
	}
}

// flush sends the queued replies.
func (w *wire) flush() error {
	if w.w.Buffered() == 0 {
		return nil
	}
	if err := w.conn.SetWriteDeadline(time.Now().Add(w.timeout)); err != nil {
		return err
	}
	w.wrote = true
	return w.w.Flush()
}

// deadlineReader bounds every wait for the MTA; it is only called when
// the buffer is empty, so the deadline costs nothing per packet.
type deadlineReader struct{ w *wire }

func (d deadlineReader) Read(p []byte) (int, error) {
	w := d.w
	if w.readAny && !w.wrote {
		// What was read since the last wait got no reply (the DATA
		// macros under SMFIP_NODATA, header fields and body chunks under
		// SMFIP_NR_*, an abort, or part of a packet), so no reply carries
		// its ACK back, and Postfix, with Nagle on, holds its next write
		// until one comes. Acknowledge now rather than on the
		// delayed-ACK timer. After a reply there is nothing to do: the
		// reply carried the ACK.
		if w.ack != nil {
			w.ack()
		}
		if w.unanswered != nil {
			w.unanswered(w.last)
		}
	}
	w.readAny, w.wrote = true, false
	if err := w.conn.SetReadDeadline(time.Now().Add(w.timeout)); err != nil {
		return 0, err
	}
	return w.conn.Read(p)
}

// cstrings splits NUL-terminated strings; a last one without its NUL
// still counts.
func cstrings(b []byte) []string {
	var out []string
	for len(b) > 0 {
		i := bytes.IndexByte(b, 0)
		if i < 0 {
			out = append(out, string(b))
			break
		}
		out = append(out, string(b[:i]))
		b = b[i+1:]
	}
	return out
}

// cstring returns the first NUL-terminated string and what follows it.
func cstring(b []byte) (string, []byte) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return string(b), nil
	}
	return string(b[:i]), b[i+1:]
}
