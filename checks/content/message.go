package content

import (
	"mime"
	"strings"

	"github.com/mailward/mailward/internal/mimewalk"
)

// An attached message (message/rfc822, message/global) is read as the
// message is: its body goes, transfer encoding undone, to a walk of its
// own whose parts the scan reads. Its parts and nesting count toward the
// message's MaxParts and MaxDepth, its text toward MaxTextBytes: an
// attachment cannot hide text or links, nor buy more bounds.

// maxMessageNesting bounds attached messages inside attached messages:
// each byte of one is read by the walk of every message around it.
const maxMessageNesting = 4

// inner is the scan as the reader of an attached message's walk; depth
// is the nesting of that message's own header in the whole message,
// nest the attached messages it is in.
type inner struct {
	s           *Scanner
	depth, nest int
}

func (h inner) Part(p *mimewalk.Part) mimewalk.Body { return h.s.part(p, h.depth+p.Depth, h.nest) }

// Part implements mimewalk.Handler: the text parts that are not
// attachments are read, and attached messages.
func (s *Scanner) Part(p *mimewalk.Part) mimewalk.Body { return s.part(p, p.Depth, 0) }

// part decides what reads a part at depth in the whole message, inside
// nest attached messages.
func (s *Scanner) part(p *mimewalk.Part, depth, nest int) mimewalk.Body {
	if s.stopped {
		return nil
	}
	s.parts++
	switch {
	case s.parts > s.o.MaxParts:
		s.stop("more than %d MIME parts", s.o.MaxParts)
		return nil
	case depth > s.o.MaxDepth:
		s.stop("MIME parts nested more than %d deep", s.o.MaxDepth)
		return nil
	case p.Multipart:
		return nil
	case p.MediaType == "message/rfc822" || p.MediaType == "message/global":
		if depth+1 > s.o.MaxDepth {
			s.stop("MIME parts nested more than %d deep", s.o.MaxDepth)
			return nil
		}
		if nest >= maxMessageNesting {
			s.setLimit("attached messages nested more than %d deep", maxMessageNesting)
			return nil
		}
		// The inner walk's own bounds are the message's: whatever it
		// reaches past them the scan refuses above.
		w := mimewalk.New(mimewalk.Options{MaxDepth: s.o.MaxDepth, MaxParts: s.o.MaxParts}, inner{s, depth + 1, nest + 1})
		return &partDecoder{s: s, enc: p.Encoding, msg: w}
	case !strings.HasPrefix(p.MediaType, "text/"):
		return nil
	}
	if disp, _, _ := mime.ParseMediaType(p.Disposition); disp == "attachment" {
		return nil
	}
	s.res.TextParts++
	isHTML := p.MediaType == "text/html"
	if isHTML {
		s.res.HTML = true
	}
	return newPartDecoder(s, p.Encoding, p.Params["charset"], isHTML)
}

// stop ends the reading of parts at a bound, as a walk stops at one.
func (s *Scanner) stop(format string, args ...any) {
	s.stopped = true
	s.setLimit(format, args...)
}
