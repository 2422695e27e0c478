package policy

import "hash"

// messageScan is what reads the message as it streams: the attachment
// scanner, the digest for the verdict cache and the DKIM and DMARC
// verifier. Each is nil when not wanted.
type messageScan struct {
	mime     *mimeScanner
	digest   hash.Hash
	verifier MessageVerifier
}

// newScan sets up the readers a new message needs.
func (c *Conn) newScan() messageScan {
	var m messageScan
	if c.snap.checker != nil {
		m.verifier = c.snap.checker.Message()
	}
	m.mime = newMIMEScanner()
	m.digest = c.newDigest()
	return m
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
	if m.verifier == nil {
		return nil
	}
	_, err := m.verifier.Write(b)
	return err
}

// attachments ends the attachment scan and records what it found. With
// no scan running (skipped, or attachments given) f is left as it is.
func (m *messageScan) attachments(f *Facts) {
	if m.mime != nil {
		f.Attachments = m.mime.Finish()
		m.mime = nil
	}
}

func (m *messageScan) closeMIME() {
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

// closeContent ends the DKIM verification and the attachment scan. The
// digest stays: the verdict cache still names the message by its envelope.
func (m *messageScan) closeContent() {
	m.closeVerifier()
	m.closeMIME()
}

// close ends every reader: the message is decided or abandoned.
func (m *messageScan) close() {
	m.closeContent()
	m.digest = nil
}
