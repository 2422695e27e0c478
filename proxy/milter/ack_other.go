//go:build !linux

package milter

import "net"

// quickAcker: outside Linux there is no per-socket way to send an ACK at
// once (delayed ACK is a system-wide setting on the BSDs and macOS), so a
// TCP connection is not safe for the no-reply options and the session
// asks the MTA to wait for a reply to every packet instead. A unix socket
// has neither Nagle nor delayed ACK.
func quickAcker(c net.Conn) (ack func(), ok bool) {
	_, isTCP := c.(*net.TCPConn)
	return nil, !isTCP
}
