package testenv

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// DKIMZone renders DKIM key records (by owner name, e.g.
// "sel._domainkey.example.com") as zone text, in 255-byte strings.
func DKIMZone(records map[string]string) string {
	names := make([]string, 0, len(records))
	for n := range records {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		rec := records[n]
		var parts []string
		for len(rec) > 255 {
			parts = append(parts, `"`+rec[:255]+`"`)
			rec = rec[255:]
		}
		parts = append(parts, `"`+rec+`"`)
		fmt.Fprintf(&b, "%s. 300 IN TXT %s\n", strings.TrimSuffix(n, "."), strings.Join(parts, " "))
	}
	return b.String()
}

// VerifyIndependent verifies msg with dkimpy and with opendkim-testmsg,
// two implementations that share no code with mailward's: want
// signatures must verify.
func VerifyIndependent(t testing.TB, msg []byte, records map[string]string, want int) {
	t.Helper()
	if n := VerifyDKIMPy(t, msg, records); n != want {
		t.Errorf("dkimpy verified %d signatures, want %d:\n%s", n, want, msg)
	}
	if err := VerifyOpenDKIM(t, msg, records); err != nil {
		t.Error(err)
	}
}

// VerifyDKIMPy verifies every DKIM-Signature of msg with dkimpy (Debian
// python3-dkim; python3-nacl for Ed25519), records serving as DNS, and
// returns how many verified.
func VerifyDKIMPy(t testing.TB, msg []byte, records map[string]string) int {
	t.Helper()
	py := debianPython(t)
	dir := t.TempDir()
	var zone strings.Builder
	for name, rec := range records {
		fmt.Fprintf(&zone, "%s\t%s\n", strings.TrimSuffix(name, "."), rec)
	}
	zf, mf := filepath.Join(dir, "records"), filepath.Join(dir, "message")
	if err := os.WriteFile(zf, []byte(zone.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mf, msg, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, "-c", dkimpyScript, zf, mf).CombinedOutput()
	if err != nil {
		t.Fatalf("dkimpy: %v\n%s", err, out)
	}
	var n int
	if _, err := fmt.Sscan(string(bytes.TrimSpace(out)), &n); err != nil {
		t.Fatalf("dkimpy printed %q", out)
	}
	return n
}

// debianPython finds the python3 with Debian's python3-dkim and
// python3-nacl: the system one, which another python3 on PATH may hide.
func debianPython(t testing.TB) string {
	t.Helper()
	var tried []string
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		p, err := exec.LookPath(py)
		if err != nil {
			continue
		}
		out, err := exec.Command(p, "-c", "import dkim, nacl").CombinedOutput()
		if err == nil {
			return p
		}
		tried = append(tried, fmt.Sprintf("%s: %s", p, bytes.TrimSpace(out)))
	}
	if E2E() {
		t.Fatalf("python3-dkim and python3-nacl are needed: %s", strings.Join(tried, "; "))
	}
	t.Skip("python3-dkim or python3-nacl is not installed: skipping")
	return ""
}

const dkimpyScript = `
import sys, dkim
recs = {}
for line in open(sys.argv[1]):
    k, v = line.rstrip("\n").split("\t", 1)
    recs[k] = v
def dns(name, timeout=5):
    v = recs.get(name.decode().rstrip("."))
    return v.encode() if v else None
msg = open(sys.argv[2], "rb").read()
count = sum(1 for h in dkim.DKIM(msg).headers if h[0].lower() == b"dkim-signature")
ok = 0
for i in range(count):
    if dkim.DKIM(msg).verify(idx=i, dnsfunc=dns):
        ok += 1
print(ok)
`

// VerifyOpenDKIM verifies msg with libopendkim's opendkim-testmsg
// (Debian opendkim-tools) against records. That tool asks the system
// resolver, which only speaks to port 53: the fixture server listens on
// a loopback address of its own and a private mount namespace points
// /etc/resolv.conf at it. It needs root (as Postfix does).
func VerifyOpenDKIM(t testing.TB, msg []byte, records map[string]string) error {
	t.Helper()
	bin := Require(t, "opendkim-testmsg")
	unshare := Require(t, "unshare")
	if os.Geteuid() != 0 {
		if E2E() {
			t.Fatal("pointing opendkim-testmsg at the fixture DNS server needs root")
		}
		t.Skip("pointing opendkim-testmsg at the fixture DNS server needs root: skipping")
	}
	var dns *DNSServer
	var err error
	for range 5 {
		addr := fmt.Sprintf("127.53.%d.%d", 1+rand.IntN(250), 1+rand.IntN(250))
		if dns, err = NewDNSServer(addr+":53", DKIMZone(records)); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("starting DNS on port 53: %v", err)
	}
	defer dns.Close()
	dir := t.TempDir()
	resolv := filepath.Join(dir, "resolv.conf")
	host := dns.Addr()[:strings.LastIndexByte(dns.Addr(), ':')]
	if err := os.WriteFile(resolv, []byte("nameserver "+host+"\noptions attempts:1 timeout:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(unshare, "--mount", "sh", "-c", `mount --bind "$1" /etc/resolv.conf && exec "$2"`, "sh", resolv, bin)
	cmd.Stdin = bytes.NewReader(bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n")))
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		return fmt.Errorf("opendkim-testmsg: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}
