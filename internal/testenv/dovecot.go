package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Dovecot is a private Dovecot instance that serves only authentication:
// its own config, runtime directories and passwd-file in a temporary
// directory, no network listener, its auth socket in that directory.
type Dovecot struct {
	dir    string
	socket string
	cmd    *exec.Cmd
	out    *syncBuffer
}

// StartDovecot starts Dovecot with users (name → password) in a
// passwd-file and PLAIN, LOGIN and CRAM-MD5 on; it stops when the test
// ends. A password may go on with the passwd-file's other fields, as
// "pw::::::nologin" gives the user the extra field nologin. Dovecot's master starts as root, as Postfix's does.
func StartDovecot(t testing.TB, users map[string]string) *Dovecot {
	t.Helper()
	bin := Require(t, "dovecot")
	if os.Geteuid() != 0 {
		if E2E() {
			t.Fatal("a private Dovecot instance needs root here")
		}
		t.Skip("a private Dovecot instance needs root: skipping")
	}
	// Postfix (as user postfix) and Dovecot's auth processes must reach
	// the socket and files, so t.TempDir (mode 0700 parents) will not do.
	dir, err := os.MkdirTemp("", "mailward-dovecot-")
	if err != nil {
		t.Fatalf("creating Dovecot directory: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	d := &Dovecot{dir: dir, socket: filepath.Join(dir, "auth-client"), out: &syncBuffer{}}
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			t.Logf("Dovecot log:\n%s", d.Log())
		}
		os.RemoveAll(dir)
	})
	names := make([]string, 0, len(users))
	for n := range users {
		names = append(names, n)
	}
	sort.Strings(names)
	var pw strings.Builder
	for _, n := range names {
		fmt.Fprintf(&pw, "%s:{PLAIN}%s\n", n, users[n])
	}
	for _, sub := range []string{"run", "state"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := strings.NewReplacer("DIR", dir).Replace(`base_dir = DIR/run
state_dir = DIR/state
log_path = DIR/dovecot.log
protocols =
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain login cram-md5
disable_plaintext_auth = no
auth_verbose = yes
auth_failure_delay = 0
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u DIR/passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}
service auth {
  unix_listener DIR/auth-client {
    mode = 0666
  }
}
`)
	for name, content := range map[string]string{"passwd": pw.String(), "dovecot.conf": conf} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d.cmd = exec.Command(bin, "-F", "-c", filepath.Join(dir, "dovecot.conf"))
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting Dovecot: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", d.socket)
		if err == nil {
			c.Close()
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("Dovecot's auth socket did not answer: %v\n%s", err, d.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Socket is the path of the auth socket (Dovecot's auth-client).
func (d *Dovecot) Socket() string { return d.socket }

// Log returns what Dovecot logged so far.
func (d *Dovecot) Log() string {
	b, _ := os.ReadFile(filepath.Join(d.dir, "dovecot.log"))
	return d.out.String() + string(b)
}

func (d *Dovecot) stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-done
	}
}

// DovecotSASL is the main.cf settings that make Postfix's smtpd ask d
// for SMTP AUTH, only over TLS.
func DovecotSASL(d *Dovecot) map[string]string {
	return map[string]string{
		"smtpd_sasl_auth_enable": "yes",
		"smtpd_sasl_type":        "dovecot",
		"smtpd_sasl_path":        d.Socket(),
		"smtpd_tls_auth_only":    "yes",
	}
}
