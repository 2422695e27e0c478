package policy

import (
	"context"
	"hash"

	"github.com/mailward/mailward/checks/content"
	"mime"
	"strings"

	"github.com/mailward/mailward/checks/uribl"
)

// messageScan is what reads the message as it streams: the attachment
// scanner, the content scanner, the digest for the verdict cache and the
// DKIM and DMARC verifier. Each is nil when not wanted.
type messageScan struct {
	mime *mimeScanner
	// scanMIME says the attachment scan is still to start, at the end
	// of the header, if the header says the message may have any.
	scanMIME bool
	// mimeDepth and mimeParts bound the scan (Settings.MIMEDepth, MIMEParts).
	mimeDepth, mimeParts int
	digest               hash.Hash
	verifier             MessageVerifier
	// content reads the text parts and their links (checks/content).
	content *content.Scanner
}

// newScan sets up the readers a new message needs.
func (c *Conn) newScan() messageScan {
	var m messageScan
	if c.snap.checker != nil {
		m.verifier = c.snap.checker.Message()
	}
	// A replay has no content to scan: its attachments are recorded.
	m.scanMIME = !c.info.Replay
	m.mimeDepth, m.mimeParts = c.snap.settings.MIMEDepth, c.snap.settings.MIMEParts
	m.digest = c.newDigest()
	if !c.info.Replay && !c.snap.settings.ContentOff {
		m.content = content.NewScanner(c.snap.settings.Content)
	}
	return m
}

// startMIME starts the attachment scan, unless the header says there
// is nothing to find: a message that is neither multipart nor has a
// Content-Disposition or a named part is one part and no attachment,
// and most mail is such. Scanning it cost a goroutine, a pipe and a
// MIME parser per message.
func (m *messageScan) startMIME(hs []Header) {
	if m.scanMIME && mayHaveAttachments(hs) {
		m.mime = newMIMEScanner(m.mimeDepth, m.mimeParts)
	}
	m.scanMIME = false
}

// mayHaveAttachments reads the top-level header as the MIME scanner
// would; whatever it cannot read for sure counts as maybe.
func mayHaveAttachments(hs []Header) bool {
	types := 0
	for _, h := range hs {
		switch {
		case strings.EqualFold(h.Name, "Content-Disposition"):
			return true
		case strings.EqualFold(h.Name, "Content-Type"):
			types++
			t, params, err := mime.ParseMediaType(h.Value)
			if types > 1 || err != nil || strings.HasPrefix(t, "multipart/") || params["name"] != "" {
				return true
			}
		}
	}
	return false
}

// write gives the next bytes of the message, header block then body, to
// every reader. Only the verifier can refuse them.
func (m *messageScan) write(b []byte) error {
	if m.mime != nil {
		m.mime.Write(b)
	}
	if m.digest != nil {
		m.digest.Write(b)
	}
	if m.content != nil {
		m.content.Write(b)
	}
	if m.verifier == nil {
		return nil
	}
	_, err := m.verifier.Write(b)
	return err
}

// attachments ends the attachment scan and records what it found. With
// no scan running (skipped, or attachments given) f is left as it is. The
// error says the message passed a bound of the scan: the list may miss some.
func (m *messageScan) attachments(f *Facts) error {
	if m.mime == nil {
		return nil
	}
	var err error
	f.Attachments, err = m.mime.Finish()
	m.mime = nil
	return err
}

// contentFacts ends the content scan and records what it found. A bound
// met is no error: what was found up to it is checked (Content.Limit
// says which bound). With no scan running f is left as it is.
func (m *messageScan) contentFacts(f *Facts) {
	if m.content == nil {
		return
	}
	r := m.content.Finish()
	m.content = nil
	f.BodyText, f.URLs, f.Content = r.Text, r.URLs, &r.Summary
}

func (m *messageScan) closeContentScan() {
	if m.content != nil {
		m.content.Close()
		m.content = nil
	}
}

func (m *messageScan) closeMIME() {
	m.scanMIME = false
	if m.mime != nil {
		m.mime.Close()
		m.mime = nil
	}
}

func (m *messageScan) closeVerifier() {
	if m.verifier != nil {
		m.verifier.Close()
		m.verifier = nil
	}
}

// closeContent ends the DKIM verification, the attachment scan and the
// content scan. The digest stays: the verdict cache still names the
// message by its envelope.
func (m *messageScan) closeContent() {
	m.closeVerifier()
	m.closeMIME()
	m.closeContentScan()
}

// close ends every reader: the message is decided or abandoned.
func (m *messageScan) close() {
	m.closeContent()
	m.digest = nil
}

// askURILists starts the URI list look-ups of the message's links; the
// channel gives their results once. Without a checker it gives none.
func (c *Conn) askURILists(ctx context.Context) <-chan []uribl.Result {
	out := make(chan []uribl.Result, 1)
	ch := c.snap.checker
	if ch == nil {
		out <- nil
		return out
	}
	urls := c.facts.URLs
	go func() { out <- ch.URLs(ctx, urls) }()
	return out
}
