package policy

import (
	"bytes"

	"github.com/emersion/go-message"

	"github.com/mailward/mailward/internal/mimewalk"
)

// Default bounds of the MIME structure scanned for attachments. Real
// mail nests multiparts a handful deep (mixed, related, alternative) and
// has tens of parts; a message past either bound cannot be checked and
// gets the on_error verdict, since an attachment could hide beyond it.
const (
	DefaultMIMEDepth = 20
	DefaultMIMEParts = 1000
)

// attachmentList is the walk's reader that lists attachments: the parts
// with a file name or a non-inline disposition, with their decoded size.
type attachmentList struct {
	result []Attachment
}

// Part implements mimewalk.Handler.
func (l *attachmentList) Part(p *mimewalk.Part) mimewalk.Body {
	if p.Multipart {
		return nil
	}
	// go-message reads the names: RFC 2231 parameters and RFC 2047 words.
	var h message.Header
	if p.ContentType != "" {
		h.Set("Content-Type", p.ContentType)
	}
	if p.Disposition != "" {
		h.Set("Content-Disposition", p.Disposition)
	}
	ct, ctParams, _ := h.ContentType()
	disp, dParams, _ := h.ContentDisposition()
	name := dParams["filename"]
	if name == "" {
		name = ctParams["name"]
	}
	if name == "" && disp != "attachment" {
		return nil
	}
	return &leafCount{list: l, a: Attachment{Name: name, ContentType: ct}, enc: p.Encoding}
}

// leafCount counts the decoded size of an attachment as its lines pass.
type leafCount struct {
	list *attachmentList
	a    Attachment
	enc  string
	// pending is the previous line's end: content, unless a boundary follows
	// (RFC 2046: the line end before a boundary belongs to the boundary).
	pending int64
	b64     int64 // base64 alphabet characters seen
}

// Content implements mimewalk.Body.
func (l *leafCount) Content(b []byte, eol int) {
	switch {
	case l.enc == "base64":
		for _, c := range b {
			if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' {
				l.b64++
			}
		}
	case eol == 0:
		// A piece of a long line: counted as it is.
		l.a.Size += l.pending + int64(len(b))
		l.pending = 0
	case l.enc == "quoted-printable":
		b = bytes.TrimRight(b, " \t")
		if bytes.HasSuffix(b, []byte("=")) {
			// A soft line break: the line continues, no line end.
			l.a.Size += l.pending + qpLen(b[:len(b)-1])
			l.pending = 0
			return
		}
		l.a.Size += l.pending + qpLen(b)
		l.pending = int64(eol)
	default:
		l.a.Size += l.pending + int64(len(b))
		l.pending = int64(eol)
	}
}

// End implements mimewalk.Body.
func (l *leafCount) End() {
	if l.enc == "base64" {
		l.a.Size = l.b64 * 3 / 4
	}
	l.list.result = append(l.list.result, l.a)
}

// qpLen is the decoded length of quoted-printable text: "=XX" is one byte.
func qpLen(b []byte) int64 {
	n := int64(len(b))
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '=' && isHex(b[i+1]) && isHex(b[i+2]) {
			n -= 2
			i += 2
		}
	}
	return n
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
