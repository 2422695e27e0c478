package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PostfixConfig describes a private Postfix instance for a test.
type PostfixConfig struct {
	// RelayTo is the next hop for all mail (host:port), usually a Sink.
	RelayTo string
	// Main holds main.cf settings, e.g. smtpd_milters; they override the defaults.
	Main map[string]string
	// Master holds extra master.cf lines.
	Master []string
}

// ReadMainCf reads the settings of a main.cf snippet, such as the ones in
// examples/postfix, so tests use them as written.
func ReadMainCf(t testing.TB, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	out := map[string]string{}
	var last string
	for i, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if last == "" {
				t.Fatalf("%s:%d: continuation line without a setting", path, i+1)
			}
			out[last] += " " + strings.TrimSpace(line)
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s:%d: not a main.cf setting: %q", path, i+1, line)
		}
		last = strings.TrimSpace(k)
		out[last] = strings.TrimSpace(v)
	}
	return out
}

// ReadMasterCf reads the service lines of a master.cf snippet, such as
// the ones in examples/postfix, so tests use them as written. A service
// line and its "-o" continuation lines become one entry.
func ReadMasterCf(t testing.TB, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#"):
		case line[0] == ' ' || line[0] == '\t':
			if len(out) == 0 {
				t.Fatalf("%s: continuation line before any service", path)
			}
			out[len(out)-1] += "\n  " + strings.TrimSpace(line)
		default:
			out = append(out, line)
		}
	}
	return out
}

// Postfix is a private Postfix instance: its own config, queue and data
// directories in a temporary directory, its own port on 127.0.0.1.
type Postfix struct {
	dir      string
	smtpAddr string
	postfix  string
}

// StartPostfix starts a Postfix instance and stops it when the test ends.
// It needs root, as Postfix's master does.
func StartPostfix(t testing.TB, cfg PostfixConfig) *Postfix {
	t.Helper()
	bin := Require(t, "postfix")
	if os.Geteuid() != 0 {
		if E2E() {
			t.Fatal("a private Postfix instance needs root")
		}
		t.Skip("a private Postfix instance needs root: skipping")
	}
	if _, err := user.Lookup("postfix"); err != nil {
		t.Fatalf("the postfix user is missing (is the postfix package installed?): %v", err)
	}
	// Postfix's unprivileged processes must reach the directories, so
	// t.TempDir (mode 0700 parents) will not do.
	dir, err := os.MkdirTemp("", "mailward-postfix-")
	if err != nil {
		t.Fatalf("creating Postfix directory: %v", err)
	}
	p := &Postfix{dir: dir, postfix: bin}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("Postfix log:\n%s", p.Log())
		}
		os.RemoveAll(dir)
	})
	for _, d := range []string{"etc", "queue", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatalf("creating Postfix directory: %v", err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chown", "postfix", filepath.Join(dir, "data")).CombinedOutput(); err != nil {
		t.Fatalf("chown data directory: %v: %s", err, out)
	}
	p.smtpAddr = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	main := map[string]string{
		"compatibility_level":    "3.6",
		"queue_directory":        filepath.Join(dir, "queue"),
		"data_directory":         filepath.Join(dir, "data"),
		"mail_owner":             "postfix",
		"setgid_group":           "postdrop",
		"myhostname":             "mx.test.example",
		"mydomain":               "test.example",
		"myorigin":               "test.example",
		"inet_interfaces":        "127.0.0.1",
		"inet_protocols":         "ipv4",
		"mydestination":          "",
		"mynetworks":             "127.0.0.0/8",
		"relayhost":              "[" + hostOf(cfg.RelayTo) + "]:" + portOf(cfg.RelayTo),
		"maillog_file":           filepath.Join(dir, "maillog"),
		"maillog_file_prefixes":  dir,
		"smtputf8_enable":        "no",
		"biff":                   "no",
		"queue_run_delay":        "1s",
		"minimal_backoff_time":   "1s",
		"maximal_backoff_time":   "2s",
		"smtp_host_lookup":       "native",
		"smtp_dns_support_level": "disabled",
		"alias_maps":             "",
		"alias_database":         "",
		"local_recipient_maps":   "",
	}
	for k, v := range cfg.Main {
		main[k] = v
	}
	var mainCf strings.Builder
	keys := make([]string, 0, len(main))
	for k := range main {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&mainCf, "%s = %s\n", k, main[k])
	}
	master := []string{
		p.smtpAddr + " inet n - n - - smtpd",
		"pickup    unix  n       -       n       60      1       pickup",
		"cleanup   unix  n       -       n       -       0       cleanup",
		"qmgr      unix  n       -       n       300     1       qmgr",
		"tlsmgr    unix  -       -       n       1000?   1       tlsmgr",
		"rewrite   unix  -       -       n       -       -       trivial-rewrite",
		"bounce    unix  -       -       n       -       0       bounce",
		"defer     unix  -       -       n       -       0       bounce",
		"trace     unix  -       -       n       -       0       bounce",
		"verify    unix  -       -       n       -       1       verify",
		"flush     unix  n       -       n       1000?   0       flush",
		"proxymap  unix  -       -       n       -       -       proxymap",
		"smtp      unix  -       -       n       -       -       smtp",
		"relay     unix  -       -       n       -       -       smtp",
		"showq     unix  n       -       n       -       -       showq",
		"error     unix  -       -       n       -       -       error",
		"retry     unix  -       -       n       -       -       error",
		"discard   unix  -       -       n       -       -       discard",
		"local     unix  -       n       n       -       -       local",
		"anvil     unix  -       -       n       -       1       anvil",
		"scache    unix  -       -       n       -       1       scache",
		"postlog   unix-dgram n  -       n       -       1       postlogd",
	}
	master = append(master, cfg.Master...)
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, "etc", name), []byte(content), 0o644); err != nil {
			t.Fatalf("writing %s: %v", name, err)
		}
	}
	write("main.cf", mainCf.String())
	write("master.cf", strings.Join(master, "\n")+"\n")
	if out, err := p.run("start"); err != nil {
		t.Fatalf("starting Postfix: %v\n%s\n%s", err, out, p.Log())
	}
	if err := waitListening(p.smtpAddr, 10*time.Second); err != nil {
		t.Fatalf("Postfix did not listen: %v\n%s", err, p.Log())
	}
	return p
}

// SMTPAddr is where Postfix's smtpd listens.
func (p *Postfix) SMTPAddr() string { return p.smtpAddr }

// Dir is the instance's top directory (config in etc/).
func (p *Postfix) Dir() string { return p.dir }

// Log returns Postfix's log so far.
func (p *Postfix) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "maillog"))
	return string(b)
}

// WaitLog waits until the log contains s.
func (p *Postfix) WaitLog(s string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if strings.Contains(p.Log(), s) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("Postfix log has no %q after %s", s, d)
}

// Held returns the queue files of the messages on hold, by queue ID: what
// a milter quarantined. Header lines appear in them as sent.
func (p *Postfix) Held() (map[string][]byte, error) {
	dir := filepath.Join(p.dir, "queue", "hold")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading the hold queue: %w", err)
	}
	out := map[string][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("reading the hold queue: %w", err)
		}
		out[e.Name()] = b
	}
	return out, nil
}

// Stop stops the instance; it is safe to call twice.
func (p *Postfix) Stop() {
	if _, err := os.Stat(filepath.Join(p.dir, "queue", "pid", "master.pid")); err == nil {
		p.run("stop")
	}
}

func (p *Postfix) run(cmd string) ([]byte, error) {
	c := exec.Command(p.postfix, "-c", filepath.Join(p.dir, "etc"), cmd)
	c.Env = append(os.Environ(), "MAIL_CONFIG="+filepath.Join(p.dir, "etc"))
	return c.CombinedOutput()
}

func waitListening(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func hostOf(hostport string) string {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	return h
}

func portOf(hostport string) string {
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return "25"
	}
	if _, err := strconv.Atoi(p); err != nil {
		return "25"
	}
	return p
}

// Sendmail submits msg through the instance's sendmail command, as a
// local program would: Postfix's pickup and non_smtpd_milters path.
func (p *Postfix) Sendmail(t testing.TB, from string, to []string, msg string) {
	t.Helper()
	bin := Require(t, "sendmail")
	args := append([]string{"-C", filepath.Join(p.dir, "etc"), "-f", from, "--"}, to...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "MAIL_CONFIG="+filepath.Join(p.dir, "etc"))
	cmd.Stdin = strings.NewReader(msg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sendmail: %v\n%s", err, out)
	}
}
