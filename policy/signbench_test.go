package policy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailward/mailward/policy"
	"github.com/mailward/mailward/signing"
)

// BenchmarkOutbound sends outbound messages (an internal client, a From
// of ours) through the engine with every check and the test rules,
// unsigned and signed with each kind of key, and reports the CPU time
// per message of each and the share of it signing takes. The body is
// 8 KiB of text, a typical message.
//
//	go test -run '^$' -bench Outbound -benchtime 200x ./policy
func BenchmarkOutbound(b *testing.B) {
	w := newWorld(b)
	var body strings.Builder
	for body.Len() < 8<<10 {
		body.WriteString("A line of an ordinary outbound message, with some words in it.\r\n")
	}
	dir := b.TempDir()
	keyFile := func(name string, ed bool) string {
		k, err := signing.GenerateKey(ed, 0)
		if err != nil {
			b.Fatal(err)
		}
		pemData, _ := signing.MarshalKey(k)
		f := filepath.Join(dir, name)
		os.WriteFile(f, pemData, 0o600)
		return f
	}
	rsaKey, edKey := keyFile("rsa", false), keyFile("ed", true)
	entry := func(sel, file string) signing.KeyConfig {
		return signing.KeyConfig{Domain: "example.test", Selector: sel, KeyFile: file}
	}
	message := func(n int) string {
		return fmt.Sprintf("From: Alice <alice@example.test>\r\nTo: bob@example.net\r\nSubject: report %d\r\n"+
			"Date: %s\r\nMessage-ID: <%d@example.test>\r\n\r\n%s", n, time.Now().Format(time.RFC1123Z), n, body.String())
	}
	engineWith := func(keys []signing.KeyConfig) *policy.Engine {
		cfg := signing.DefaultConfig()
		cfg.Keys = keys
		cfg.InternalNetworks = []string{"192.0.2.0/24"}
		tab, err := signing.Load(cfg, dir, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		w.signing = tab
		return w.engine(b, nil)
	}
	unsigned := engineWith(nil)
	for _, bc := range []struct {
		name string
		keys []signing.KeyConfig
	}{
		{"ed25519", []signing.KeyConfig{entry("ed", edKey)}},
		{"rsa2048", []signing.KeyConfig{entry("rsa", rsaKey)}},
		{"rsa2048+ed25519", []signing.KeyConfig{entry("rsa", rsaKey), entry("ed", edKey)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			signed := engineWith(bc.keys)
			// Unsigned and signed messages alternate in blocks, so that
			// the machine's load weighs on both alike; CPU time is the
			// process's, from getrusage, not the wall clock.
			var cpu [2]time.Duration
			var msgs [2]int
			n := 0
			for b.Loop() {
				for i, e := range []*policy.Engine{unsigned, signed} {
					start := cpuTime()
					for range 10 {
						n++
						v := send(b, e, "192.0.2.1", "alice@example.test", []string{"bob@example.net"}, message(n)).eom
						want := 0
						if i == 1 {
							want = len(bc.keys)
						}
						if v.Action != policy.Accept || countSignatures(v) != want {
							b.Fatalf("verdict %+v, want %d signatures", v, want)
						}
					}
					cpu[i] += cpuTime() - start
					msgs[i] += 10
				}
			}
			u := float64(cpu[0].Microseconds()) / float64(msgs[0])
			sg := float64(cpu[1].Microseconds()) / float64(msgs[1])
			b.ReportMetric(u, "unsigned-cpu-µs/msg")
			b.ReportMetric(sg, "signed-cpu-µs/msg")
			b.ReportMetric(100*(sg-u)/sg, "signing-%-of-cpu")
		})
	}
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func countSignatures(v policy.Verdict) int {
	n := 0
	for _, h := range v.Headers {
		if h.Name == "DKIM-Signature" {
			n++
		}
	}
	return n
}
