package milter

import (
	"net"
	"syscall"
)

// quickAcker returns what re-arms TCP_QUICKACK on a TCP connection, so
// that whatever the MTA sent and mailward has read is acknowledged at
// once instead of after Linux's delayed-ACK timer (40 ms or more). An MTA
// that leaves Nagle's algorithm on (Postfix does) holds its next small
// write until that ACK arrives; see deadlineReader. The flag is not
// sticky: the kernel drops it again once mailward replies, so it is set
// again each time mailward waits for more after a read it did not
// answer. Setting it sends an ACK that is due at once.
//
// ok says whether the connection is safe for the no-reply options: a
// unix socket has no Nagle and no delayed ACK, and a TCP socket is safe
// once the option is set. ack is nil when there is nothing to re-arm.
func quickAcker(c net.Conn) (ack func(), ok bool) {
	tc, isTCP := c.(*net.TCPConn)
	if !isTCP {
		return nil, true
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, false
	}
	var serr error
	set := func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	}
	if err := rc.Control(set); err != nil || serr != nil {
		return nil, false
	}
	return func() { rc.Control(set) }, true
}
