package testenv

import (
	"net"
	"strconv"
	"testing"
)

// FreePort's ports are bindable and, where Linux says its ephemeral
// range, below it, so no outgoing connection's source port takes one.
func TestFreePort(t *testing.T) {
	lo := ephemeralLow()
	for range 20 {
		port := FreePort(t)
		if lo > 11000 && port >= lo {
			t.Fatalf("port %d is in the ephemeral range from %d", port, lo)
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Fatalf("port %d: %v", port, err)
		}
		l.Close()
	}
}
