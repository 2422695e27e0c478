package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/mailward/mailward/internal/testenv"
)

const uriblZone = `
$TTL 300
$ORIGIN multi.test.
@ IN SOA ns hostmaster 1 3600 600 86400 60
spam.example IN A 127.0.0.2
10.2.0.192 IN A 127.0.0.4
refused.example IN A 127.255.255.254
`

// The links of a message read from a file reach the URI lists through
// the content scan; check --json shows the answers, a listing rejects,
// and a list that timed out or refused us defers instead of bouncing.
func TestCheckURILists(t *testing.T) {
	srv := testenv.StartDNS(t, uriblZone)
	srv.Drop("slow.example.multi.test")
	dir := t.TempDir()
	writeFile(t, dir, "r.yaml", `rules:
  - name: listed-link
    when: 'any(uribl["multi.test"] ?? [], # in ["black", "grey"])'
    action: reject
    code: "550 5.7.1"
    message: "a link in the message is listed"
`)
	cfg := writeFile(t, dir, "mailward.yaml", "hostname: mw.test\nrules:\n  files: [r.yaml]\ndns:\n  timeout: 300ms\n  retries: -1\n"+
		"uribl:\n  zones:\n    - zone: multi.test\n      bitmask: {2: black, 4: grey}\n      max_queries: 5\n")
	type report struct {
		Action   string `json:"action"`
		SMTPCode int    `json:"smtp_code"`
		URIBL    []struct {
			Zone, Query, Error string
			Codes, Names       []string
		} `json:"uribl"`
		Matches []struct{ Rule, Unknown string } `json:"matches"`
	}
	check := func(body string) report {
		t.Helper()
		eml := writeFile(t, dir, "m.eml", "From: a@shop.example\r\nSubject: offer\r\nContent-Type: text/plain\r\n\r\n"+body+"\r\n")
		var out, errb bytes.Buffer
		if code := run([]string{"check", "--config", cfg, "--dns", srv.Addr(), "--ip", "198.51.100.5", "--helo", "mail.shop.example",
			"--from", "a@shop.example", "--rcpt", "b@rcpt.example", "--json", eml}, &out, &errb); code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		var rep report
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		return rep
	}

	rep := check("Cheap: https://www.spam.example/buy and http://ok.example/")
	if rep.Action != "reject" || rep.SMTPCode != 550 {
		t.Errorf("listed domain: %s %d, want reject 550", rep.Action, rep.SMTPCode)
	}
	if len(rep.URIBL) != 1 || rep.URIBL[0].Query != "spam.example" || strings.Join(rep.URIBL[0].Names, ",") != "black" || rep.URIBL[0].Codes[0] != "127.0.0.2" {
		t.Errorf("uribl: %+v", rep.URIBL)
	}

	rep = check("Server: http://192.0.2.10/x")
	if rep.Action != "reject" || len(rep.URIBL) != 1 || rep.URIBL[0].Query != "192.0.2.10" || rep.URIBL[0].Names[0] != "grey" {
		t.Errorf("listed IP literal: %s %+v", rep.Action, rep.URIBL)
	}

	rep = check("Nothing here: http://ok.example/")
	if rep.Action != "accept" || len(rep.URIBL) != 0 {
		t.Errorf("clean: %s %+v", rep.Action, rep.URIBL)
	}

	// A timed-out zone: the listing of another link can no longer be
	// trusted to be the whole story, and the rule must not bounce.
	for _, body := range []string{"http://slow.example/ http://spam.example/", "http://refused.example/ http://spam.example/"} {
		rep = check(body)
		if rep.Action != "tempfail" || rep.SMTPCode/100 != 4 {
			t.Errorf("%s: %s %d, want a tempfail", body, rep.Action, rep.SMTPCode)
		}
		if len(rep.URIBL) != 2 || rep.URIBL[0].Error == "" || len(rep.URIBL[0].Codes) != 0 {
			t.Errorf("%s: uribl %+v, want the error first", body, rep.URIBL)
		}
		if len(rep.Matches) != 1 || !strings.Contains(rep.Matches[0].Unknown, "URI list multi.test failed") {
			t.Errorf("%s: matches %+v", body, rep.Matches)
		}
	}
}
