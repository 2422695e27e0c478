package config

import (
	"fmt"
	"io/fs"
	"net"
	"strconv"
	"strings"
)

// CheckHostPort checks a HOST:PORT address as a listener (listen) or a
// dialer takes it, short of using it: the port must be a number from 1
// to 65535 or a service name. A listener may leave the host empty (every
// address) and take port 0 (any free port).
func CheckHostPort(addr string, listen bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want HOST:PORT", addr)
	}
	if host == "" && !listen {
		return fmt.Errorf("%q: want HOST:PORT; the host is missing", addr)
	}
	return checkPort(addr, port, listen)
}

func checkPort(addr, port string, listen bool) error {
	if port == "" {
		return fmt.Errorf("%q: the port is missing", addr)
	}
	if n, err := strconv.Atoi(port); err == nil {
		if n == 0 && listen {
			return nil
		}
		if n < 1 || n > 65535 {
			return fmt.Errorf("%q: port %d is not from 1 to 65535", addr, n)
		}
		return nil
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("%q: %q is not a port number or a known service", addr, port)
	}
	return nil
}

// CheckSocketAddr checks an address in Postfix's milter notation:
// inet:HOST:PORT (also inet6:, tcp: and inet:PORT@HOST) or unix:/path
// (also local:), which listeners take.
func CheckSocketAddr(addr string) error {
	_, _, err := SocketAddr(addr)
	return err
}

// SocketAddr reads an address in Postfix's milter notation (see
// CheckSocketAddr) as the network and address net.Listen takes.
func SocketAddr(addr string) (network, address string, err error) {
	kind, rest, ok := strings.Cut(addr, ":")
	if !ok {
		return "", "", fmt.Errorf("%q: want inet:HOST:PORT or unix:/path", addr)
	}
	switch kind {
	case "inet", "inet6", "tcp":
		if port, host, ok := strings.Cut(rest, "@"); ok && !strings.Contains(port, ":") {
			return "tcp", net.JoinHostPort(host, port), checkPort(addr, port, true)
		}
		host, port, err := net.SplitHostPort(rest)
		if err != nil {
			return "", "", fmt.Errorf("%q: want %s:HOST:PORT", addr, kind)
		}
		return "tcp", net.JoinHostPort(host, port), checkPort(addr, port, true)
	case "unix", "local":
		if rest == "" {
			return "", "", fmt.Errorf("%q: empty socket path", addr)
		}
		return "unix", rest, nil
	}
	return "", "", fmt.Errorf("%q: unknown kind %q (want inet or unix)", addr, kind)
}

// SocketMode reads a unix socket's mode, such as "0660"; "" is 0, which
// leaves the mode alone.
func SocketMode(s string) (fs.FileMode, error) {
	if s == "" {
		return 0, nil
	}
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("%q: want an octal mode such as \"0660\"", s)
	}
	return fs.FileMode(m), nil
}
