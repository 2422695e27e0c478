package milter

import (
	"net"
	"sync"
	"time"
)

// timeoutConn bounds every wait for the MTA: go-milter sets no deadlines.
type timeoutConn struct {
	net.Conn
	timeout time.Duration
	onClose func()
}

func (c *timeoutConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
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
