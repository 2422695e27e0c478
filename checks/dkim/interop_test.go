package dkim_test

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailward/mailward/checks/dkim"
	"github.com/mailward/mailward/internal/testenv"
)

// dkimpy, an independent implementation (python3-dkim), signs and
// verifies here; its interpreter is the one its dkimverify script names.
const dkimpyScript = `
import sys, json, dkim
mode, arg = sys.argv[1], sys.argv[2]
jobs = json.load(sys.stdin)
out = []
for j in jobs:
    msg = j["msg"].encode("latin-1")
    if mode == "sign":
        key = open(j["key"], "rb").read()
        sig = dkim.sign(msg, j["sel"].encode(), b"example.com", key,
                        canonicalize=tuple(j["canon"].encode().split(b"/")),
                        signature_algorithm=j["alg"].encode(),
                        include_headers=[b"from", b"to", b"subject"])
        out.append((sig + msg).decode("latin-1"))
    else:
        rec = open(arg, "rb").read()
        out.append("pass" if dkim.verify(msg, dnsfunc=lambda name, timeout=5: rec) else "fail")
json.dump(out, sys.stdout)
`

type dkimpyJob struct {
	Msg   string `json:"msg"`
	Key   string `json:"key,omitempty"`
	Sel   string `json:"sel,omitempty"`
	Canon string `json:"canon,omitempty"`
	Alg   string `json:"alg,omitempty"`
}

// dkimpy runs jobs in one process: mode "sign", or "verify" against the
// key record in the file rec.
func dkimpy(t *testing.T, mode, rec string, jobs []dkimpyJob) []string {
	t.Helper()
	script := testenv.Require(t, "dkimverify")
	f, err := os.Open(script)
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(f).ReadString('\n')
	f.Close()
	python := strings.TrimSpace(strings.TrimPrefix(line, "#!"))
	in, _ := json.Marshal(jobs)
	cmd := exec.Command(python, "-c", dkimpyScript, mode, rec)
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dkimpy %s: %v", mode, err)
	}
	var res []string
	if err := json.Unmarshal(out, &res); err != nil || len(res) != len(jobs) {
		t.Fatalf("dkimpy %s: %d answers for %d jobs (%v)", mode, len(res), len(jobs), err)
	}
	return res
}

// tricky messages: folding, white space runs and trailing blanks, empty
// lines at the end, an empty body, repeated fields.
var trickyMessages = map[string]string{
	"plain":        message,
	"folded":       "From: Joe\r\n  SixPack   <joe@example.com>\r\nTo:\tsuzie@example.net \r\nSubject:  a\r\n\tfolded   subject  \r\n\r\nline  with \t spaces \r\n\r\n\r\n",
	"empty body":   "From: joe@example.com\r\nTo: x@example.net\r\nSubject: nothing\r\n\r\n",
	"blank lines":  "From: joe@example.com\r\nSubject: s\r\n\r\n\r\n \r\nbody\r\n\t\r\n\r\n",
	"two subjects": "From: joe@example.com\r\nSubject: first\r\nTo: a@example.net\r\nSubject: second\r\n\r\nx\r\n",
}

func TestAgainstDkimpy(t *testing.T) {
	testKeys(t)
	dir := t.TempDir()
	rsaPEM := filepath.Join(dir, "rsa.pem")
	os.WriteFile(rsaPEM, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(keys.rsa2048)}), 0o600)
	edKey := filepath.Join(dir, "ed.key")
	os.WriteFile(edKey, []byte(base64.StdEncoding.EncodeToString(keys.ed.Seed())), 0o600)
	r, _ := start(t, zone(t))
	c := dkim.New(r, dkim.Options{})

	t.Run("dkimpy signs, we verify", func(t *testing.T) {
		var jobs []dkimpyJob
		for _, msg := range trickyMessages {
			for _, canon := range []string{"relaxed/relaxed", "simple/simple", "relaxed/simple", "simple/relaxed"} {
				jobs = append(jobs, dkimpyJob{Msg: msg, Key: rsaPEM, Sel: "rsa2048", Canon: canon, Alg: "rsa-sha256"},
					dkimpyJob{Msg: msg, Key: edKey, Sel: "ed", Canon: canon, Alg: "ed25519-sha256"})
			}
		}
		for i, signed := range dkimpy(t, "sign", "", jobs) {
			if res := one(t, mustVerify(t, c, signed)); res.Result != "pass" {
				t.Errorf("%q, %s, %s: %s (%s)", jobs[i].Msg, jobs[i].Canon, jobs[i].Alg, res.Result, res.Reason)
			}
		}
	})

	t.Run("our test signatures verify in dkimpy", func(t *testing.T) {
		der, _ := x509.MarshalPKIXPublicKey(keys.rsa2048.Public())
		rec := filepath.Join(dir, "rec")
		os.WriteFile(rec, []byte("v=DKIM1; k=rsa; p="+base64.StdEncoding.EncodeToString(der)), 0o644)
		var jobs []dkimpyJob
		for _, tail := range []string{"", " xb=c29tZXRoaW5n;", " zz=1;", " xb=1; b \r\n\t="} {
			msg := signRaw(t, message, keys.rsa2048, rawHead, tail)
			want(t, one(t, mustVerify(t, c, msg)), "pass", "")
			jobs = append(jobs, dkimpyJob{Msg: msg})
		}
		for i, got := range dkimpy(t, "verify", rec, jobs) {
			if got != "pass" {
				t.Errorf("%q: dkimpy says %s", jobs[i].Msg, got)
			}
		}
	})
}
