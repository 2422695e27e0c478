package dkim

import (
	"bytes"
	"strings"
)

// MaxHeaderFields is the most header fields a message may have for its
// signatures to be verified; past it they are reported neutral. Real
// messages have a few dozen; the limit keeps the cost of a signature
// bounded whatever the sender writes.
const MaxHeaderFields = 1000

// field is one header field: name, colon and value, continuation lines
// joined with CRLF, without the final CRLF.
type field struct {
	name string // lower-cased, white space trimmed
	text string
}

// splitFields splits a header block into fields, up to the first empty
// line. Each field is built once from its lines, so the cost is linear
// however many continuation lines it has.
func splitFields(block []byte) (fields []field) {
	var cur strings.Builder
	started := false
	end := func() {
		if started {
			text := cur.String()
			name, _, _ := strings.Cut(text, ":")
			fields = append(fields, field{name: strings.ToLower(strings.TrimSpace(name)), text: text})
			cur.Reset()
		}
	}
	for len(block) > 0 {
		line := block
		if i := bytes.IndexByte(block, '\n'); i >= 0 {
			line, block = block[:i], block[i+1:]
		} else {
			block = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break
		}
		if started && (line[0] == ' ' || line[0] == '\t') {
			cur.WriteString("\r\n")
			cur.Write(line)
			continue
		}
		end()
		started = true
		cur.Write(line)
	}
	end()
	return fields
}

// headerIndex finds fields by name in one pass: for each name, the
// indexes of its fields in header order.
type headerIndex map[string][]int

func indexFields(fields []field) headerIndex {
	idx := headerIndex{}
	for i, f := range fields {
		idx[f.name] = append(idx[f.name], i)
	}
	return idx
}

// picker hands out, for each name in h=, the next field of that name
// from the bottom up (RFC 6376 section 5.4.2).
type picker struct {
	idx  headerIndex
	used map[string]int
}

func (p *picker) pick(name string) (int, bool) {
	name = strings.ToLower(name)
	list := p.idx[name]
	n := p.used[name]
	if n >= len(list) {
		return 0, false // a name listed more often than present adds nothing
	}
	if p.used == nil {
		p.used = map[string]int{}
	}
	p.used[name] = n + 1
	return list[len(list)-1-n], true
}

// withoutB returns a DKIM-Signature field with the value of its b= tag
// removed, and nothing else changed (RFC 6376 section 3.7). Tags are
// found by name, so another tag ending in "b" (xb=, bb=) is left alone.
func withoutB(text string) string {
	_, value, ok := strings.Cut(text, ":")
	if !ok {
		return text
	}
	off := len(text) - len(value)
	for pos := off; pos <= len(text); {
		end := strings.IndexByte(text[pos:], ';')
		if end < 0 {
			end = len(text)
		} else {
			end += pos
		}
		spec := text[pos:end]
		if eq := strings.IndexByte(spec, '='); eq >= 0 && trimFWS(spec[:eq]) == "b" {
			return text[:pos+eq+1] + text[end:]
		}
		pos = end + 1
	}
	return text
}
