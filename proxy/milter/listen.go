package milter

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
)

// Listen opens a listener from Postfix's milter notation:
// inet:HOST:PORT, inet6:HOST:PORT, unix:/path or local:/path. A stale
// unix socket left by a crashed process is removed first.
func Listen(addr string, mode fs.FileMode) (net.Listener, error) {
	kind, rest, ok := strings.Cut(addr, ":")
	if !ok {
		return nil, fmt.Errorf("milter address %q: want inet:HOST:PORT or unix:/path", addr)
	}
	switch kind {
	case "inet", "inet6", "tcp":
		host, port, err := net.SplitHostPort(rest)
		if err != nil {
			// Postfix also accepts inet:PORT@HOST.
			if p, h, ok := strings.Cut(rest, "@"); ok {
				host, port, err = h, p, nil
			} else {
				return nil, fmt.Errorf("milter address %q: %w", addr, err)
			}
		}
		l, err := net.Listen("tcp", net.JoinHostPort(host, port))
		if err != nil {
			return nil, fmt.Errorf("listening on %s: %w", addr, err)
		}
		return l, nil
	case "unix", "local":
		if rest == "" {
			return nil, fmt.Errorf("milter address %q: empty socket path", addr)
		}
		if err := removeStale(rest); err != nil {
			return nil, err
		}
		l, err := net.Listen("unix", rest)
		if err != nil {
			return nil, fmt.Errorf("listening on %s: %w", addr, err)
		}
		if mode != 0 {
			if err := os.Chmod(rest, mode); err != nil {
				l.Close()
				return nil, fmt.Errorf("setting mode of %s: %w", rest, err)
			}
		}
		return l, nil
	}
	return nil, fmt.Errorf("milter address %q: unknown kind %q (want inet or unix)", addr, kind)
}

// removeStale deletes a socket file nobody listens on; a live one is an error.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking socket %s: %w", path, err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket; not removing it", path)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("%s is in use by another process", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	return nil
}
