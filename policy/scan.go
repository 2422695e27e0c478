package policy

import (
	"context"
	"hash"
	"mime"
	"strings"

	"github.com/mailward/mailward/checks/content"
	"github.com/mailward/mailward/checks/uribl"
	"github.com/mailward/mailward/internal/mimewalk"
)

// messageScan is what reads the message as it streams: one walk of its
// MIME structure for the attachment list and the content scan, the
// digest for the verdict cache and the DKIM and DMARC verifier. Each is
// nil when not wanted.
type messageScan struct {
	walk *mimewalk.Walker
	// started: the walk was set up, at the end of the header.
	started bool
	// mimeDepth and mimeParts bound the walk (Settings.MIMEDepth, MIMEParts).
	mimeDepth, mimeParts int
	// attach lists the attachments, when the header says there may be
	// any; wantAttach says it is to start with the walk.
	attach     *attachmentList
	wantAttach bool
	// content reads the text parts and their links (checks/content);
	// wantContent says it is to start with the walk.
	content     *content.Scanner
	wantContent bool
	contentOpts content.Options
	digest      hash.Hash
	verifier    MessageVerifier
}

// newScan sets up the readers a new message needs.
func (c *Conn) newScan() messageScan {
	var m messageScan
	if c.snap.checker != nil {
		m.verifier = c.snap.checker.Message()
	}
	// A replay has no content to scan: its attachments are recorded.
	m.wantAttach = !c.info.Replay
	m.mimeDepth, m.mimeParts = c.snap.settings.MIMEDepth, c.snap.settings.MIMEParts
	m.digest = c.newDigest()
	m.wantContent = !c.info.Replay && !c.snap.settings.ContentOff
	m.contentOpts = c.snap.settings.Content
	return m
}

// startMIME starts the walk for the readers the message needs: the
// content scan, and the attachment list unless the header says there is
// nothing to find (a message that is neither multipart nor has a
// Content-Disposition or a named part is one part and no attachment, and
// most mail is such). With neither, there is no walk.
func (m *messageScan) startMIME(hs []Header) {
	if m.started {
		return
	}
	m.started = true
	var readers []mimewalk.Handler
	if m.wantAttach && mayHaveAttachments(hs) {
		m.attach = &attachmentList{}
		readers = append(readers, m.attach)
	}
	if m.wantContent {
		m.content = content.NewReader(m.contentOpts)
		readers = append(readers, m.content)
	}
	if len(readers) > 0 {
		m.walk = mimewalk.New(mimewalk.Options{MaxDepth: m.mimeDepth, MaxParts: m.mimeParts}, readers...)
	}
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
	if m.walk != nil {
		m.walk.Write(b)
	}
	if m.digest != nil {
		m.digest.Write(b)
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
	if m.attach == nil {
		return nil
	}
	err := m.finishWalk()
	f.Attachments = m.attach.result
	m.attach = nil
	return err
}

// finishWalk ends the walk, once; the error says which bound stopped it.
func (m *messageScan) finishWalk() error {
	if m.walk == nil {
		return nil
	}
	return m.walk.Finish()
}

// dropWalk forgets the walk once no one reads it.
func (m *messageScan) dropWalk() {
	if m.attach == nil && m.content == nil {
		m.walk = nil
	}
}

// contentFacts ends the content scan and records what it found. A bound
// met is no error: what was found up to it is checked (Content.Limit
// says which bound). With no scan running f is left as it is.
func (m *messageScan) contentFacts(f *Facts) {
	if m.content == nil {
		return
	}
	m.finishWalk()
	r := m.content.End(m.walk)
	m.content = nil
	f.BodyText, f.URLs, f.Content = r.Text, r.URLs, &r.Summary
}

// closeContentScan ends the content scan unread; a walk begun goes on
// for the attachments, feeding it still, its findings dropped.
func (m *messageScan) closeContentScan() {
	m.wantContent = false
	if m.content != nil {
		m.content.Close()
		m.content = nil
		m.dropWalk()
	}
}

// closeMIME ends the attachment list, and the walk unless the content
// scan reads it.
func (m *messageScan) closeMIME() {
	m.wantAttach = false
	m.attach = nil
	m.dropWalk()
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
