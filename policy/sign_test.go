package policy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailward/mailward/signing"
)

type signRig struct {
	engine *Engine
	record string
	logs   *bytes.Buffer
}

// newSignRig is an engine signing for sender.example with one Ed25519
// key; rules may be nil. keyFile "" writes a key, "missing" names none.
func newSignRig(t *testing.T, cfg signing.Config, rules Rules, keyFile string) *signRig {
	t.Helper()
	dir := t.TempDir()
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	if keyFile == "" {
		pemData, _ := signing.MarshalKey(k)
		keyFile = filepath.Join(dir, "k.pem")
		os.WriteFile(keyFile, pemData, 0o600)
	}
	cfg.Keys = []signing.KeyConfig{{Domain: "sender.example", Selector: "s1", KeyFile: keyFile}}
	if cfg.InternalNetworks == nil {
		cfg.InternalNetworks = []string{"10.0.0.0/8"}
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tab, err := signing.Load(cfg, dir, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(Settings{Hostname: "mw.test.example", Signing: tab}, nil, rules, log)
	return &signRig{engine: e, record: signing.Record(k), logs: &logs}
}

const signedHeader = "From: Alice <alice@sender.example>\r\nTo: bob@rcpt.example\r\nSubject: a\r\n  folded subject\r\n" +
	"Authentication-Results: mw.test.example; dkim=pass header.d=forged.example\r\nMessage-ID: <1@sender.example>\r\n\r\n"

func (r *signRig) send(t *testing.T, ip string, auth string, local bool) *Outcome {
	t.Helper()
	h, err := ReadHeader(bufioReader(signedHeader))
	if err != nil {
		t.Fatal(err)
	}
	out, err := r.engine.Drive(context.Background(), Transaction{
		Conn: ConnInfo{IP: netip.MustParseAddr(ip), Front: "test", Local: local},
		Helo: "client.example", From: "alice@sender.example", Mail: MailInfo{AuthUser: auth},
		Rcpts: []string{"bob@rcpt.example"}, Header: h, Body: strings.NewReader("Grüße.\n\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// delivered assembles the message as a front delivers it for these
// verdicts: prepended fields on top, the forged Authentication-Results
// removed, appended fields after the received ones.
func delivered(v Verdict) string {
	var top, bottom strings.Builder
	for _, h := range v.Headers {
		line := h.Name + ": " + h.Value + "\r\n"
		if h.Prepend {
			top.WriteString(line)
		} else {
			bottom.WriteString(line)
		}
	}
	rest := strings.Replace(signedHeader, "Authentication-Results: mw.test.example; dkim=pass header.d=forged.example\r\n", "", 1)
	return top.String() + strings.TrimSuffix(rest, "\r\n") + bottom.String() + "\r\nGrüße.\r\n\r\n"
}

func (r *signRig) verify(t *testing.T, msg string) bool {
	t.Helper()
	res, err := dkim.VerifyWithOptions(strings.NewReader(msg), &dkim.VerifyOptions{
		LookupTXT: func(string) ([]string, error) { return []string{r.record}, nil },
	})
	if err != nil || len(res) != 1 {
		t.Fatalf("verifying: %v, %d results", err, len(res))
	}
	if res[0].Err != nil {
		t.Logf("signature: %v", res[0].Err)
	}
	return res[0].Err == nil
}

func signatures(v Verdict) int {
	n := 0
	for _, h := range v.Headers {
		if h.Name == "DKIM-Signature" {
			n++
		}
	}
	return n
}

func TestSignWhom(t *testing.T) {
	addHeader := RulesFunc(func(_ context.Context, st Stage, f *Facts, _ *[]Match) Verdict {
		if st == StageEOM {
			return Verdict{Headers: []HeaderEdit{{Name: "X-Added", Value: "by a rule"}}}
		}
		return Verdict{}
	})
	r := newSignRig(t, signing.Config{Oversign: []string{"X-Added"}}, addHeader, "")
	for _, tc := range []struct {
		name, ip, auth string
		local, signed  bool
	}{
		{"authenticated", "192.0.2.1", "alice", false, true},
		{"internal network", "10.1.2.3", "", false, true},
		{"local submission", "127.0.0.1", "", true, true},
		{"outside, From ours", "192.0.2.1", "", false, false},
		{"loopback not listed", "127.0.0.1", "", false, false},
	} {
		out := r.send(t, tc.ip, tc.auth, tc.local)
		if out.Verdict.Action != Accept {
			t.Fatalf("%s: %+v", tc.name, out.Verdict)
		}
		if got := signatures(out.Verdict) == 1; got != tc.signed {
			t.Errorf("%s: signed %v, want %v", tc.name, got, tc.signed)
			continue
		}
		if !tc.signed {
			if out.Facts.Signing != "" {
				t.Errorf("%s: outcome %q for mail not to sign", tc.name, out.Facts.Signing)
			}
			continue
		}
		if out.Facts.Signing != SignSigned {
			t.Errorf("%s: outcome %q", tc.name, out.Facts.Signing)
		}
		last := out.Verdict.Headers[len(out.Verdict.Headers)-1]
		if last.Name != "DKIM-Signature" || !last.Prepend {
			t.Errorf("%s: the signature is not the last edit, on top: %+v", tc.name, out.Verdict.Headers)
		}
		// It covers the rule's header (over-signed here) and not the
		// removed forged Authentication-Results.
		msg := delivered(out.Verdict)
		if !r.verify(t, msg) {
			t.Errorf("%s: the signature does not verify over the delivered message:\n%s", tc.name, msg)
		}
		if r.verify(t, strings.Replace(msg, "X-Added: by a rule", "X-Added: changed", 1)) {
			t.Errorf("%s: the rule's header is not covered", tc.name)
		}
	}
}

func TestSignRules(t *testing.T) {
	choice := RulesFunc(func(_ context.Context, st Stage, f *Facts, _ *[]Match) Verdict {
		switch {
		case st == StageConnect && f.IP == netip.MustParseAddr("192.0.2.50"):
			return Verdict{Sign: SignYes}
		case st == StageMail && f.AuthUser == "nosign":
			return Verdict{Sign: SignNo}
		case st == StageEOM && f.IP == netip.MustParseAddr("192.0.2.60"):
			return Verdict{Sign: SignYes}
		}
		return Verdict{}
	})
	r := newSignRig(t, signing.Config{}, choice, "")
	if out := r.send(t, "192.0.2.50", "", false); signatures(out.Verdict) != 1 || !r.verify(t, delivered(out.Verdict)) {
		t.Errorf("sign at connect: %+v", out.Verdict)
	}
	if out := r.send(t, "192.0.2.60", "", false); signatures(out.Verdict) != 1 {
		t.Errorf("sign at end of message: %+v", out.Verdict)
	}
	if out := r.send(t, "10.0.0.1", "nosign", false); signatures(out.Verdict) != 0 {
		t.Errorf("no_sign for an authenticated, internal client: %+v", out.Verdict)
	}
}

func TestSignMissingKey(t *testing.T) {
	r := newSignRig(t, signing.Config{}, nil, "/nonexistent/key.pem")
	out := r.send(t, "10.0.0.1", "", false)
	if out.Verdict.Action != Accept || signatures(out.Verdict) != 0 || out.Facts.Signing != SignMissingKey {
		t.Fatalf("missing key, unsigned: %+v, outcome %q", out.Verdict, out.Facts.Signing)
	}
	if !strings.Contains(r.logs.String(), "key is missing") {
		t.Errorf("not logged:\n%s", r.logs.String())
	}
	r = newSignRig(t, signing.Config{OnMissingKey: signing.MissingTempfail}, nil, "/nonexistent/key.pem")
	out = r.send(t, "10.0.0.1", "", false)
	if out.Verdict.Action != Tempfail || out.Verdict.Code != 451 || len(out.Verdict.Headers) != 0 {
		t.Fatalf("missing key with on_missing_key tempfail: %+v", out.Verdict)
	}
	// Mail not to sign goes on whatever the key.
	if out := r.send(t, "192.0.2.1", "", false); out.Verdict.Action != Accept {
		t.Fatalf("outside mail with a missing key: %+v", out.Verdict)
	}
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }

// A message accepted early (an allowlist rule at connect or RCPT) is
// still signed, over its header as delivered.
func TestSignAfterEarlyAccept(t *testing.T) {
	for _, st := range []Stage{StageConnect, StageRcpt, StageData} {
		accept := RulesFunc(func(_ context.Context, s Stage, f *Facts, _ *[]Match) Verdict {
			if s == st {
				return Verdict{Action: Accept, Rule: "allow-internal"}
			}
			return Verdict{}
		})
		r := newSignRig(t, signing.Config{}, accept, "")
		// As the milter and SMTP proxy fronts do: the message still comes.
		ctx := context.Background()
		c, _ := r.engine.Connect(ctx, ConnInfo{IP: netip.MustParseAddr("10.0.0.1"), Front: "test"})
		c.Helo(ctx, "client.example")
		c.Mail(ctx, "alice@sender.example", MailInfo{})
		c.Rcpt(ctx, "bob@rcpt.example")
		h, _ := ReadHeader(bufioReader(signedHeader))
		for _, f := range h {
			c.HeaderField(f.Name, f.Value)
		}
		c.EndOfHeaders(ctx)
		c.Body([]byte("Grüße.\r\n\r\n"))
		v := c.EndOfMessage(ctx)
		c.Close()
		if v.Action != Accept || signatures(v) != 1 {
			t.Errorf("accepted at %s: %+v", st, v)
			continue
		}
		if !r.verify(t, delivered(v)) {
			t.Errorf("accepted at %s: the signature does not verify", st)
		}
	}
}

// Engine.Drive (check, rules test) signs an early-accepted message as the
// fronts do.
func TestDriveSignsAfterEarlyAccept(t *testing.T) {
	for _, st := range []Stage{StageRcpt, StageData} {
		accept := RulesFunc(func(_ context.Context, s Stage, f *Facts, _ *[]Match) Verdict {
			if s == st {
				return Verdict{Action: Accept, Rule: "allow-internal"}
			}
			return Verdict{}
		})
		r := newSignRig(t, signing.Config{}, accept, "")
		out := r.send(t, "10.0.0.1", "", false)
		if out.Verdict.Action != Accept || signatures(out.Verdict) != 1 || len(out.Facts.Headers) != 5 {
			t.Errorf("accepted at %s: %+v, %d header fields", st, out.Verdict, len(out.Facts.Headers))
			continue
		}
		if !r.verify(t, delivered(out.Verdict)) {
			t.Errorf("accepted at %s: the signature does not verify", st)
		}
	}
}

// A front that never sees the message (the policy service) gets no
// signing and no warning about a missing From.
func TestNoSigningWithoutContent(t *testing.T) {
	r := newSignRig(t, signing.Config{}, nil, "")
	ctx := context.Background()
	c, _ := r.engine.Connect(ctx, ConnInfo{IP: netip.MustParseAddr("10.0.0.1"), Front: "policy"})
	defer c.Close()
	c.Mail(ctx, "alice@sender.example", MailInfo{AuthUser: "alice"})
	c.SkipContent()
	c.Rcpt(ctx, "bob@rcpt.example")
	c.EndOfHeaders(ctx)
	v := c.EndOfMessage(ctx)
	if signatures(v) != 0 || c.Facts().Signing != "" || strings.Contains(r.logs.String(), "not signed") {
		t.Fatalf("signing without content: %+v, outcome %q\n%s", v, c.Facts().Signing, r.logs.String())
	}
}
