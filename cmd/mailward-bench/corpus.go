package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/mailward/mailward/policy"
)

// Item is one message of a corpus with the verdict mailward must give it
// under the config that gen writes beside it.
type Item struct {
	File  string   `json:"file"`
	Class string   `json:"class"`
	IP    string   `json:"ip"`
	Helo  string   `json:"helo"`
	From  string   `json:"from"`
	Rcpts []string `json:"rcpts"`
	// Expect is the final action: accept, reject or quarantine.
	Expect string `json:"expect"`
	// RejectRcpts are the recipients that must be refused at RCPT.
	RejectRcpts []string `json:"reject_rcpts,omitempty"`
	// RemoveHeader names a header that must be deleted (a forged one).
	RemoveHeader string `json:"remove_header,omitempty"`
}

// Manifest describes a corpus directory.
type Manifest struct {
	Zone     string `json:"zone"`
	Origin   string `json:"origin"`
	AuthServ string `json:"authserv_id"`
	Items    []Item `json:"items"`
}

// Message is an item with its bytes loaded.
type Message struct {
	Item
	Header [][2]string
	Body   []byte
}

func loadCorpus(dir string) (*Manifest, []Message, error) {
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, nil, fmt.Errorf("reading corpus: %w (make one with mailward-bench gen)", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", filepath.Join(dir, "manifest.json"), err)
	}
	msgs := make([]Message, 0, len(m.Items))
	for _, it := range m.Items {
		raw, err := os.ReadFile(filepath.Join(dir, it.File))
		if err != nil {
			return nil, nil, fmt.Errorf("reading corpus message: %w", err)
		}
		h, body, err := splitMessage(raw)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", it.File, err)
		}
		msgs = append(msgs, Message{Item: it, Header: h, Body: body})
	}
	if len(msgs) == 0 {
		return nil, nil, fmt.Errorf("corpus %s has no messages", dir)
	}
	return &m, msgs, nil
}

// splitMessage parses the header fields and the body with the reader
// check and rule tests use. A field's value is all that follows the
// colon, leading space and folding kept.
func splitMessage(raw []byte) ([][2]string, []byte, error) {
	br := bufio.NewReader(bytes.NewReader(raw))
	hs, err := policy.ReadHeader(br)
	if err != nil {
		return nil, nil, err
	}
	fields := make([][2]string, len(hs))
	for i, h := range hs {
		fields[i] = [2]string{h.Name, h.Value}
	}
	body, err := io.ReadAll(br)
	return fields, body, err
}
