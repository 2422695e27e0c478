package policy

import (
	"errors"
	"io"
	"strings"

	"github.com/emersion/go-message"
)

// maxParts bounds the MIME parts listed for one message: a message of
// thousands of tiny parts must not cost more than a few.
const maxParts = 256

// mimeScanner lists a message's attachments as the message streams
// through it, without keeping the message.
type mimeScanner struct {
	pw     *io.PipeWriter
	done   chan struct{}
	result []Attachment
	broken bool
}

func newMIMEScanner() *mimeScanner {
	pr, pw := io.Pipe()
	s := &mimeScanner{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.result = scanParts(pr)
		// Keep reading so the writer never blocks on a message we gave up on.
		io.Copy(io.Discard, pr)
	}()
	return s
}

func (s *mimeScanner) Write(p []byte) (int, error) {
	if s.broken {
		return len(p), nil
	}
	if _, err := s.pw.Write(p); err != nil {
		s.broken = true
	}
	return len(p), nil
}

// Finish ends the message and returns its attachments.
func (s *mimeScanner) Finish() []Attachment {
	s.pw.Close()
	<-s.done
	return s.result
}

// Close abandons the message.
func (s *mimeScanner) Close() {
	s.pw.CloseWithError(errors.New("message abandoned"))
	<-s.done
}

func scanParts(r io.Reader) []Attachment {
	e, err := message.Read(r)
	if e == nil {
		return nil
	}
	_ = err // unknown charsets and encodings still give a readable entity
	var out []Attachment
	e.Walk(func(path []int, part *message.Entity, err error) error {
		if part == nil || len(out) >= maxParts {
			return nil
		}
		ct, ctParams, _ := part.Header.ContentType()
		if strings.HasPrefix(ct, "multipart/") {
			return nil
		}
		disp, dParams, _ := part.Header.ContentDisposition()
		name := dParams["filename"]
		if name == "" {
			name = ctParams["name"]
		}
		if name == "" && disp != "attachment" {
			return nil
		}
		n, _ := io.Copy(io.Discard, part.Body)
		out = append(out, Attachment{Name: name, ContentType: ct, Size: n})
		return nil
	})
	return out
}
