package milter

import (
	"context"
	"crypto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/checks/resolver"
	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/signing"
)

// signKeys makes signing keys for sender.example and the DNS records
// that publish them.
type signKeys struct {
	dir     string
	records map[string]string
}

func newSignKeys(t *testing.T) *signKeys {
	return &signKeys{dir: t.TempDir(), records: map[string]string{}}
}

// add makes a key, publishes it and returns its key table entry.
func (s *signKeys) add(t *testing.T, selector string, ed bool) signing.KeyConfig {
	t.Helper()
	k, err := signing.GenerateKey(ed, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.publish(selector, k)
	pemData, _ := signing.MarshalKey(k)
	file := filepath.Join(s.dir, selector+".key")
	if err := os.WriteFile(file, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	return signing.KeyConfig{Domain: "sender.example", Selector: selector, KeyFile: file}
}

func (s *signKeys) publish(selector string, k crypto.Signer) {
	s.records[selector+"._domainkey.sender.example"] = signing.Record(k)
}

// verify checks msg's signatures with mailward's verifier, dkimpy and
// opendkim-testmsg; want is how many signatures there are.
func (s *signKeys) verify(t *testing.T, msg []byte, want int) {
	t.Helper()
	dns := testenv.StartDNS(t, "$ORIGIN sender.example.\n@ IN SOA ns hostmaster 1 3600 600 86400 60\n"+testenv.DKIMZone(s.records))
	res, err := resolver.New(resolver.Config{Servers: []string{dns.Addr()}, Timeout: time.Second, Retries: -1})
	if err != nil {
		t.Fatal(err)
	}
	results := dkim.New(res, dkim.Options{}).Verify(context.Background(), msg)
	pass := 0
	for _, r := range results {
		if r.Result == "pass" {
			pass++
		} else {
			t.Logf("mailward's verifier: %s %s: %s", r.Selector, r.Result, r.Reason)
		}
	}
	if len(results) != want || pass != want {
		t.Errorf("mailward's verifier passed %d of %d signatures, want %d:\n%s", pass, len(results), want, msg)
	}
	testenv.VerifyIndependent(t, msg, s.records, want)
}

func signRig(t *testing.T, cfg signing.Config) *rig {
	t.Helper()
	testenv.Require(t, "postfix")
	tab, err := signing.Load(cfg, ".", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return startRigSettings(t, policy.Settings{Hostname: "mw.test.example", Signing: tab}, nil, nil)
}

// An 8-bit body and folded fields, signed with an RSA and an Ed25519 key
// at once, over the header as delivered: the rule's header added, the
// forged Authentication-Results removed.
const eightBitMessage = "From: Alice =?utf-8?q?M=C3=BCller?= <alice@sender.example>\r\n" +
	"To: bob@rcpt.example,\r\n\tcarol@rcpt.example\r\n" +
	"Subject: A long subject that is folded\r\n over two lines\r\n" +
	"Date: Thu, 03 Dec 2026 08:00:00 +0000\r\nMessage-ID: <8bit@sender.example>\r\n" +
	"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n" +
	"Authentication-Results: mw.test.example; dkim=pass header.d=forged.example\r\n" +
	"\r\n" +
	"Grüße aus Köln,  \r\nça va?\t\r\n\r\n日本語\r\n\r\n\r\n"

func TestPostfixSigns8BitRSAAndEd25519(t *testing.T) {
	keys := newSignKeys(t)
	cfg := signing.DefaultConfig()
	cfg.Keys = []signing.KeyConfig{keys.add(t, "rsa", false), keys.add(t, "ed", true)}
	cfg.Oversign = []string{"X-Mailward-Test"}
	r := signRig(t, cfg)

	testenv.Send8BitMIME(t, r.postfix.SMTPAddr(), "alice@sender.example", "bob@rcpt.example", eightBitMessage)
	msgs, err := r.sink.Wait(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	msg := msgs[0].Data
	h := msgs[0].Header()
	for _, want := range []string{"a=rsa-sha256", "a=ed25519-sha256", "X-Mailward-Test: client=127.0.0.1", "Grüße aus Köln"} {
		if !strings.Contains(string(msg), want) {
			t.Errorf("delivered message lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(h, "forged.example") {
		t.Errorf("forged Authentication-Results delivered:\n%s", h)
	}
	if !strings.HasPrefix(h, "Received:") && !strings.HasPrefix(h, "DKIM-Signature:") {
		t.Logf("header starts %q", h[:40])
	}
	keys.verify(t, msg, 2)
	// The over-signed rule header is covered: changing it breaks both.
	tampered := []byte(strings.Replace(string(msg), "X-Mailward-Test: client=", "X-Mailward-Test: klient=", 1))
	dns := testenv.StartDNS(t, testenv.DKIMZone(keys.records))
	res, _ := resolver.New(resolver.Config{Servers: []string{dns.Addr()}, Timeout: time.Second, Retries: -1})
	for _, res := range dkim.New(res, dkim.Options{}).Verify(context.Background(), tampered) {
		if res.Result == "pass" {
			t.Errorf("a changed rule header still verifies (%s)", res.Selector)
		}
	}
}

// Locally submitted mail (sendmail, Postfix's non_smtpd_milters) is
// signed though the loopback client is not internal; SMTP mail from the
// same address with a From of ours is not.
func TestPostfixSignsLocalSubmission(t *testing.T) {
	keys := newSignKeys(t)
	cfg := signing.DefaultConfig()
	cfg.Keys = []signing.KeyConfig{keys.add(t, "ed", true)}
	cfg.InternalNetworks = []string{"10.0.0.0/8"}
	r := signRig(t, cfg)

	if out, err := testenv.Swaks(t, r.postfix.SMTPAddr(), "--from", "alice@sender.example", "--to", "bob@rcpt.example",
		"--data", message("smtp, claims our From")); err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	// No Date and no Message-ID: Postfix adds them for local mail, and
	// the signature must cover them as delivered.
	r.postfix.Sendmail(t, "alice@sender.example", []string{"bob@rcpt.example"},
		"From: Alice <alice@sender.example>\nTo: bob@rcpt.example\nSubject: local\n\tsubmission\n\nHello from cron.\n")
	msgs, err := r.sink.Wait(2, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		signed := strings.Contains(m.Header(), "DKIM-Signature:")
		local := strings.Contains(m.Header(), "Subject: local")
		switch {
		case local && !signed:
			t.Errorf("locally submitted mail not signed:\n%s", m.Data)
		case !local && signed:
			t.Errorf("SMTP mail from an outside client signed for its From alone:\n%s", m.Header())
		case local:
			if !strings.Contains(m.Header(), "Message-Id:") || !strings.Contains(m.Header(), "Date:") {
				t.Errorf("Postfix added no Message-Id and Date:\n%s", m.Header())
			}
			keys.verify(t, m.Data, 1)
		}
	}
}

// A new key replaces the old in a reload: mail after it carries the new
// selector, mail before verifies with the old key still published.
func TestPostfixKeyRollover(t *testing.T) {
	keys := newSignKeys(t)
	cfg := signing.DefaultConfig()
	cfg.Keys = []signing.KeyConfig{keys.add(t, "2026-11", false)}
	r := signRig(t, cfg)
	send := func(subject string) {
		t.Helper()
		if out, err := testenv.Swaks(t, r.postfix.SMTPAddr(), "--from", "alice@sender.example", "--to", "bob@rcpt.example",
			"--data", message(subject)); err != nil {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
	}
	send("before rollover")
	first, err := r.sink.Wait(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	prev := r.engine.Settings().Signing
	cfg.Keys = []signing.KeyConfig{keys.add(t, "2026-12", false)}
	next, err := signing.Load(cfg, ".", prev, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := r.engine.Settings()
	s.Signing = next
	r.engine.Update(s, nil, frontRules(r.seen))
	send("after rollover")
	msgs, err := r.sink.Wait(2, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(first[0].Header(), "s=2026-11;") || !strings.Contains(msgs[1].Header(), "s=2026-12;") {
		t.Fatalf("selectors before and after: %s / %s", first[0].Header(), msgs[1].Header())
	}
	keys.verify(t, msgs[0].Data, 1)
	keys.verify(t, msgs[1].Data, 1)
}

// A key that cannot be loaded: mail goes out unsigned, or is deferred.
func TestPostfixMissingKey(t *testing.T) {
	for _, onMissing := range []string{signing.MissingUnsigned, signing.MissingTempfail} {
		t.Run(onMissing, func(t *testing.T) {
			cfg := signing.DefaultConfig()
			cfg.Keys = []signing.KeyConfig{{Domain: "sender.example", Selector: "gone", KeyFile: filepath.Join(t.TempDir(), "gone.key")}}
			cfg.OnMissingKey = onMissing
			r := signRig(t, cfg)
			out, err := testenv.Swaks(t, r.postfix.SMTPAddr(), "--from", "alice@sender.example", "--to", "bob@rcpt.example",
				"--data", message("missing key"))
			if onMissing == signing.MissingTempfail {
				if err == nil || !strings.Contains(out, "451 4.3.0 Signing key unavailable") {
					t.Fatalf("want 451 4.3.0, got err=%v:\n%s", err, out)
				}
				if n := len(r.sink.Messages()); n != 0 {
					t.Fatalf("%d messages delivered", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("swaks: %v\n%s", err, out)
			}
			msgs, err := r.sink.Wait(1, 20*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(msgs[0].Header(), "DKIM-Signature") {
				t.Fatalf("signed without a key:\n%s", msgs[0].Header())
			}
		})
	}
}
