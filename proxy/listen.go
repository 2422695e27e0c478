package proxy

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"

	"github.com/mailward/mailward/internal/config"
)

// Listen opens a listener from Postfix's milter notation (inet:HOST:PORT,
// inet6:HOST:PORT, inet:PORT@HOST, unix:/path or local:/path). A stale
// unix socket left by a crashed process is removed first; mode, if not 0,
// is given to a unix socket.
func Listen(addr string, mode fs.FileMode) (net.Listener, error) {
	network, address, err := config.SocketAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("listen address %w", err)
	}
	if network == "unix" {
		if err := removeStale(address); err != nil {
			return nil, err
		}
	}
	l, err := net.Listen(network, address)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	if network == "unix" && mode != 0 {
		if err := os.Chmod(address, mode); err != nil {
			l.Close()
			return nil, fmt.Errorf("setting mode of %s: %w", address, err)
		}
	}
	return l, nil
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
