package testenv

import (
	"bytes"
	"crypto"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"
)

// Swaks sends one message with swaks to addr, as a real SMTP client would,
// and returns its transcript. args come after the defaults (HELO name,
// timeout), so they may override them.
func Swaks(t testing.TB, addr string, args ...string) (string, error) {
	t.Helper()
	bin := Require(t, "swaks")
	out, err := exec.Command(bin, append([]string{"--server", addr, "--helo", "client.test.example", "--timeout", "60"}, args...)...).CombinedOutput()
	return string(out), err
}

// SignDKIM signs msg for domain and selector with relaxed/relaxed
// canonicalization over the usual header fields, as most senders do.
func SignDKIM(t testing.TB, msg, domain, selector string, key crypto.Signer) string {
	t.Helper()
	var out bytes.Buffer
	err := dkim.Sign(&out, strings.NewReader(msg), &dkim.SignOptions{
		Domain: domain, Selector: selector, Signer: key,
		HeaderKeys:             []string{"From", "To", "Subject", "Message-ID"},
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
	})
	if err != nil {
		t.Fatalf("signing test message: %v", err)
	}
	return out.String()
}

// Send8BitMIME sends msg (CRLF line ends) to addr with MAIL FROM's
// BODY=8BITMIME, as a client sending 8-bit text does.
func Send8BitMIME(t testing.TB, addr, from, to, msg string) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test.example"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(from, &smtp.MailOptions{Body: smtp.Body8BitMIME}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(to, nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, msg); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("sending message: %v", err)
	}
	c.Quit()
}

// Message is one message of an SMTP session: its envelope and content
// (CRLF line ends).
type Message struct {
	From  string
	Rcpts []string
	Data  string
}

// SMTPSession sends msgs one after the other on one SMTP connection to
// addr, after EHLO helo, as an MTA relaying a batch does. It returns, for
// each message, what each RCPT got: nil when accepted. A refused MAIL or
// DATA, or a broken connection, fails the test.
func SMTPSession(t testing.TB, addr, helo string, msgs ...Message) [][]error {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello(helo); err != nil {
		t.Fatal(err)
	}
	out := make([][]error, len(msgs))
	for i, m := range msgs {
		if err := c.Mail(m.From, nil); err != nil {
			t.Fatalf("message %d: MAIL: %v", i+1, err)
		}
		for _, rcpt := range m.Rcpts {
			out[i] = append(out[i], c.Rcpt(rcpt, nil))
		}
		w, err := c.Data()
		if err != nil {
			t.Fatalf("message %d: DATA: %v", i+1, err)
		}
		io.WriteString(w, m.Data)
		if err := w.Close(); err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
	}
	c.Quit()
	return out
}
