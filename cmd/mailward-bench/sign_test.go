package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/internal/testenv"
	"github.com/mailward/mailward/signing"
)

// BenchmarkSigningCPU measures what DKIM signing costs mailward on
// outbound mail: three `mailward serve` processes (milter front, every
// check on, the default rules) take the same outbound messages (an
// internal client, From a signed domain, 8 KiB bodies) in turns of 100,
// one unsigned, one signing with Ed25519, one with RSA-2048. Each
// process's CPU time comes from /proc/PID/stat, so the driver's own work
// is not counted; the turns interleave so the machine's load weighs on
// all alike.
//
//	go test -run '^$' -bench SigningCPU -benchtime 10x ./cmd/mailward-bench
func BenchmarkSigningCPU(b *testing.B) {
	testenv.Require(b, "go")
	dir := b.TempDir()
	bin := filepath.Join(dir, "mailward")
	if out, err := exec.Command("go", "build", "-o", bin, "../mailward").CombinedOutput(); err != nil {
		b.Fatalf("building mailward: %v\n%s", err, out)
	}
	dns := testenv.StartDNS(b, `$ORIGIN sender.example.
@ 300 IN SOA ns hostmaster 1 3600 600 86400 60
@ 300 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
_dmarc 300 IN TXT "v=DMARC1; p=reject"
`)
	key := func(name string, ed bool) string {
		k, err := signing.GenerateKey(ed, 0)
		if err != nil {
			b.Fatal(err)
		}
		pemData, _ := signing.MarshalKey(k)
		f := filepath.Join(dir, name+".key")
		if err := os.WriteFile(f, pemData, 0o600); err != nil {
			b.Fatal(err)
		}
		return f
	}
	type proc struct {
		name string
		pid  int
		send sender
		cpu  time.Duration
		n    int
	}
	start := func(name, signingSection string) *proc {
		addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(b))
		cfg := filepath.Join(dir, name+".yaml")
		text := testenv.BaseConfig(dns.Addr()) + "log: {level: warn}\nadmin: {listen: \"\"}\nmilter: {listen: \"inet:" + addr + "\"}\n" +
			signingSection
		if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(bin, "serve", "--config", cfg)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		for deadline := time.Now().Add(10 * time.Second); ; {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s did not listen", name)
			}
			time.Sleep(50 * time.Millisecond)
		}
		return &proc{name: name, pid: cmd.Process.Pid, send: milterSender(addr)}
	}
	procs := []*proc{
		start("unsigned", ""),
		start("ed25519", "signing:\n  keys: [{domain: sender.example, selector: ed, key_file: "+key("ed", true)+"}]\n"),
		start("rsa2048", "signing:\n  keys: [{domain: sender.example, selector: rsa, key_file: "+key("rsa", false)+"}]\n"),
	}
	body := strings.Repeat("A line of an ordinary outbound message, with some words in it.\r\n", 8<<10/66)
	seq := 0
	ctx := context.Background()
	turn := func(p *proc, count bool) {
		before := procCPU(b, p.pid)
		for range 100 {
			seq++
			m := &Message{
				Item: Item{IP: "127.0.0.1", Helo: "app.sender.example", From: "alice@sender.example", Rcpts: []string{"bob@rcpt.example"}},
				Header: [][2]string{{"From", " Alice <alice@sender.example>"}, {"To", " bob@rcpt.example"},
					{"Subject", " report " + strconv.Itoa(seq)}, {"Date", " " + time.Now().Format(time.RFC1123Z)},
					{"Message-ID", " <" + strconv.Itoa(seq) + "@sender.example>"}},
				Body: []byte(body),
			}
			if out := p.send(ctx, m); out.Err != nil || out.Action != "accept" {
				b.Fatalf("%s: %+v", p.name, out)
			}
		}
		if count {
			p.cpu += procCPU(b, p.pid) - before
			p.n += 100
		}
	}
	for _, p := range procs {
		turn(p, false) // warm up: DNS cache, connections
	}
	for b.Loop() {
		for _, p := range procs {
			turn(p, true)
		}
	}
	per := func(p *proc) float64 { return float64(p.cpu.Microseconds()) / float64(p.n) }
	u := per(procs[0])
	b.ReportMetric(u, "unsigned-cpu-µs/msg")
	for _, p := range procs[1:] {
		s := per(p)
		b.ReportMetric(s, p.name+"-cpu-µs/msg")
		b.ReportMetric(100*(s-u)/s, p.name+"-signing-%")
	}
}

// procCPU is a process's user and system CPU time from /proc/PID/stat.
func procCPU(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name may hold spaces: count fields after its ')'.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}
