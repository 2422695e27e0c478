package deliver

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/mailward/mailward/internal/testenv"
)

func TestStartTLSWhenOffered(t *testing.T) {
	cert := testenv.SelfSignedCert(t, "127.0.0.1")
	f := newFixture(t, cert, nil)
	if err := f.sender.Send(context.Background(), testReport("mailto:dmarc@example.com")); err != nil {
		t.Fatal(err)
	}
	msgs := f.relay.messages()
	if len(msgs) != 1 || !msgs[0].TLS {
		t.Fatalf("relayed %+v, want one message over TLS", msgs)
	}
	// EHLO is ours on both sides of STARTTLS.
	if msgs[0].HELO != "mx.example.net" {
		t.Errorf("EHLO after STARTTLS %q", msgs[0].HELO)
	}
}

func TestStartTLSOffSendsInClear(t *testing.T) {
	cert := testenv.SelfSignedCert(t, "127.0.0.1")
	f := newFixture(t, cert, func(c *Config) { c.StartTLS = StartTLSOff })
	if err := f.sender.Send(context.Background(), testReport("mailto:dmarc@example.com")); err != nil {
		t.Fatal(err)
	}
	if msgs := f.relay.messages(); len(msgs) != 1 || msgs[0].TLS {
		t.Fatalf("relayed %+v, want one message in clear", msgs)
	}
}

func TestStartTLSRequired(t *testing.T) {
	cert := testenv.SelfSignedCert(t, "127.0.0.1")
	t.Run("not offered", func(t *testing.T) {
		f := newFixture(t, nil, func(c *Config) { c.StartTLS = StartTLSRequire })
		err := f.sender.Send(context.Background(), testReport("mailto:dmarc@example.com"))
		var se *SendError
		if !errors.As(err, &se) || se.Temporary() || !strings.Contains(err.Error(), "STARTTLS") {
			t.Fatalf("Send: %v, want a permanent failure naming STARTTLS", err)
		}
		if f.relay.attempts() != 0 || len(f.waits) != 0 {
			t.Errorf("%d DATA commands, waits %v: the report went out or was retried", f.relay.attempts(), f.waits)
		}
	})
	t.Run("certificate not trusted", func(t *testing.T) {
		f := newFixture(t, cert, func(c *Config) { c.StartTLS = StartTLSRequire })
		err := f.sender.Send(context.Background(), testReport("mailto:dmarc@example.com"))
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("Send: %v, want a certificate error", err)
		}
		if f.relay.attempts() != 0 {
			t.Error("the report went out over an unverified connection")
		}
	})
	t.Run("certificate trusted", func(t *testing.T) {
		f := newFixture(t, cert, func(c *Config) { c.StartTLS = StartTLSRequire; c.TLSCAFile = cert.CertFile })
		if err := f.sender.Send(context.Background(), testReport("mailto:dmarc@example.com")); err != nil {
			t.Fatal(err)
		}
		if msgs := f.relay.messages(); len(msgs) != 1 || !msgs[0].TLS {
			t.Fatalf("relayed %+v, want one message over TLS", msgs)
		}
	})
}

func TestRelayLogin(t *testing.T) {
	cert := testenv.SelfSignedCert(t, "127.0.0.1")
	pwfile := testenv.WriteFiles(t, map[string]string{"pw": "s3cret\n"}) + "/pw"
	login := func(c *Config) { c.Username, c.PasswordFile = "reports", pwfile }
	t.Run("over TLS", func(t *testing.T) {
		f := newFixture(t, cert, login)
		f.relay.password = "s3cret"
		if err := f.sender.Send(context.Background(), testReport("mailto:dmarc@example.com")); err != nil {
			t.Fatal(err)
		}
		if msgs := f.relay.messages(); len(msgs) != 1 || !msgs[0].TLS {
			t.Fatalf("relayed %+v", msgs)
		}
	})
	t.Run("wrong password is final", func(t *testing.T) {
		f := newFixture(t, cert, login)
		f.relay.password = "other"
		err := f.sender.Send(context.Background(), testReport("mailto:dmarc@example.com"))
		var se *SendError
		if !errors.As(err, &se) || se.Temporary() || !strings.Contains(err.Error(), "535") {
			t.Fatalf("Send: %v, want a permanent 535 failure", err)
		}
	})
	t.Run("never in clear", func(t *testing.T) {
		f := newFixture(t, nil, login)
		f.relay.password = "s3cret"
		err := f.sender.Send(context.Background(), testReport("mailto:dmarc@example.com"))
		if err == nil || !strings.Contains(err.Error(), "in clear") {
			t.Fatalf("Send: %v, want a refusal to log in without TLS", err)
		}
		if len(f.relay.logins) != 0 {
			t.Errorf("the password crossed in clear: %v", f.relay.logins)
		}
	})
}
