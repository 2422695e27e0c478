package dkim_test

import (
	"bufio"
	"context"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/checks/dkim"
)

func FuzzParseSignature(f *testing.F) {
	f.Add("v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=sel; h=from:to; bh=AAAA; b=AAAA")
	f.Add("v=1; a=ed25519-sha256; d=Example.COM.; s=x; i=joe@mail.example.com; h=From; bh=AA==;\r\n b=A A\r\n\tAA; t=1; x=2; l=0")
	f.Add("v=1;;a=;b")
	f.Add("=;;=")
	f.Fuzz(func(t *testing.T, s string) {
		sig, err := dkim.ParseSignature(s)
		if sig == nil {
			t.Fatal("nil signature")
		}
		if err == nil {
			if sig.Domain == "" || sig.Selector == "" || sig.B == "" || sig.BodyHash == "" || sig.Version != "1" {
				t.Fatalf("accepted an incomplete signature: %+v", sig)
			}
			if strings.ContainsAny(sig.B+sig.BodyHash+sig.Domain, " \t\r\n") {
				t.Fatalf("white space kept: %+v", sig)
			}
		}
	})
}

func FuzzParseKey(f *testing.F) {
	testKeys(f)
	for _, rr := range strings.Split(zone(f), "\n") {
		if i := strings.Index(rr, `"v=DKIM1`); i >= 0 {
			f.Add(strings.ReplaceAll(strings.ReplaceAll(rr[i:], `" "`, ""), `"`, ""))
		}
	}
	f.Add("v=DKIM1; p=")
	f.Add("k=ed25519; p=AAAA")
	f.Add("v=DKIM2; p=AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := dkim.ParseKey(s)
		if err != nil {
			if k != nil {
				t.Fatal("key returned with an error")
			}
			return
		}
		if !k.Revoked && k.Bits <= 0 {
			t.Fatalf("unrevoked key without a size: %+v", k)
		}
		if k.Type != "rsa" && k.Type != "ed25519" {
			t.Fatalf("type %q accepted", k.Type)
		}
	})
}

// FuzzVerifier feeds mutated signed messages, in chunks of a fuzzed size,
// through the verifier against the fixture DNS server: no panic, no hang,
// and one result per DKIM-Signature field.
func FuzzVerifier(f *testing.F) {
	r, _ := start(f, zone(f))
	c := dkim.New(r, dkim.Options{MaxSignatures: 3})
	signed := sign(f, message, signOpts{domain: "example.com", selector: "rsa2048", key: keys.rsa2048})
	f.Add(signed, uint16(7))
	f.Add(sign(f, signed, signOpts{domain: "example.com", selector: "ed", key: keys.ed}), uint16(0))
	f.Add(signSHA1(f, message, keys.rsa2048, "example.com", "rsa2048"), uint16(1))
	f.Add("DKIM-Signature: v=1\r\n\r\n", uint16(3))
	f.Add("DKIM-Signature: x\r\n", uint16(2))
	// Shapes that once cost minutes or let a forgery through.
	f.Add(signRaw(f, message, keys.rsa2048, rawHead, " xb=c29tZXRoaW5n;"), uint16(5))
	f.Add("DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=rsa2048; h=from"+strings.Repeat(":a", 150)+"; bh=AAAA; b=AAAA\r\n"+
		strings.Repeat("a:\r\n", 50)+message, uint16(64))
	f.Add("X-Long: a\r\n"+strings.Repeat(" x\r\n", 500)+signed, uint16(9))
	f.Fuzz(func(t *testing.T, msg string, chunk uint16) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		v := c.NewVerifier(ctx)
		defer v.Close()
		data := []byte(msg)
		n := max(int(chunk), 1)
		for len(data) > 0 {
			k := min(n, len(data))
			if _, err := v.Write(data[:k]); err != nil {
				t.Fatal(err)
			}
			data = data[k:]
		}
		res := v.Finish(ctx)
		want := min(countSignatures(msg), 2*3)
		if len(res) != want {
			t.Fatalf("%d results for %d signature fields", len(res), want)
		}
		for i, r := range res {
			switch r.Result {
			case "pass", "fail", "neutral", "policy", "temperror", "permerror":
			case "none":
				if i < 3 {
					t.Fatalf("signature %d unchecked under the limit", i)
				}
			default:
				t.Fatalf("result %q", r.Result)
			}
		}
	})
}

// countSignatures counts DKIM-Signature fields as a textproto reader
// reads the header block (continuation lines joined): an independent
// reading to check the verifier's against.
func countSignatures(msg string) int {
	tr := textproto.NewReader(bufio.NewReader(strings.NewReader(msg)))
	var fields []string
	for {
		l, err := tr.ReadLine()
		if l == "" {
			break // the blank line that ends the header block, or the end
		}
		if len(fields) > 0 && (l[0] == ' ' || l[0] == '\t') {
			fields[len(fields)-1] += "\r\n" + l
		} else {
			fields = append(fields, l)
		}
		if err != nil {
			break
		}
	}
	n := 0
	for _, f := range fields {
		name, _, _ := strings.Cut(f, ":")
		if strings.EqualFold(strings.TrimSpace(name), "DKIM-Signature") {
			n++
		}
	}
	return n
}
