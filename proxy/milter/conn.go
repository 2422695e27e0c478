package milter

import (
	"bufio"
	"net"
	"sync"
	"time"
)

// timeoutConn bounds every wait for the MTA (go-milter sets no
// deadlines) and buffers reads: go-milter reads each packet's length and
// body separately, which would cost two system calls a packet.
type timeoutConn struct {
	net.Conn
	timeout time.Duration
	onClose func()
	br      *bufio.Reader
}

func newTimeoutConn(c net.Conn, timeout time.Duration, onClose func()) *timeoutConn {
	tc := &timeoutConn{Conn: c, timeout: timeout, onClose: onClose}
	// Small on purpose: a thousand idle MTA connections must stay cheap,
	// and body chunks larger than the buffer bypass it.
	tc.br = bufio.NewReaderSize(deadlineReader{tc}, 4096)
	return tc
}

func (c *timeoutConn) Read(p []byte) (int, error) { return c.br.Read(p) }

// deadlineReader sets the read deadline before each read from the network.
type deadlineReader struct{ c *timeoutConn }

func (d deadlineReader) Read(p []byte) (int, error) {
	if err := d.c.Conn.SetReadDeadline(time.Now().Add(d.c.timeout)); err != nil {
		return 0, err
	}
	return d.c.Conn.Read(p)
}

func (c *timeoutConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *timeoutConn) Close() error {
	err := c.Conn.Close()
	c.onClose()
	return err
}

// oneConnListener yields one connection, then blocks until it is closed:
// it lets a go-milter Server serve exactly one MTA connection.
type oneConnListener struct {
	conn net.Conn
	done chan struct{}
	once sync.Once
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.conn })
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }
