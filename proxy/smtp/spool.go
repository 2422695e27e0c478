package smtp

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
)

// spoolMemory is how much of a message body stays in memory; the rest
// goes to a temporary file, so that memory per connection stays small
// whatever the message size.
const spoolMemory = 128 << 10

// spool holds a message body from the moment it is received until the
// verdict lets it go upstream.
type spool struct {
	dir  string
	mem  []byte
	f    *os.File
	w    *bufio.Writer
	size int64
}

func (s *spool) Write(p []byte) (int, error) {
	n := len(p)
	if s.f == nil && len(s.mem)+len(p) <= spoolMemory {
		s.mem = append(s.mem, p...)
		s.size += int64(n)
		return n, nil
	}
	if s.f == nil {
		f, err := os.CreateTemp(s.dir, "mailward-spool-")
		if err != nil {
			return 0, fmt.Errorf("creating spool file: %w", err)
		}
		// Unlinked at once: the file cannot outlive the process.
		os.Remove(f.Name())
		s.f = f
		s.w = bufio.NewWriterSize(f, 64<<10)
	}
	if _, err := s.w.Write(p); err != nil {
		return 0, fmt.Errorf("writing spool file: %w", err)
	}
	s.size += int64(n)
	return n, nil
}

// reader returns the body from its start.
func (s *spool) reader() (io.Reader, error) {
	if s.f == nil {
		return bytes.NewReader(s.mem), nil
	}
	if err := s.w.Flush(); err != nil {
		return nil, fmt.Errorf("writing spool file: %w", err)
	}
	fileSize := s.size - int64(len(s.mem))
	return io.MultiReader(bytes.NewReader(s.mem), io.NewSectionReader(s.f, 0, fileSize)), nil
}

func (s *spool) close() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
	s.mem = nil
}
