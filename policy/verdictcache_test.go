package policy_test

import (
	"strings"
	"testing"

	"github.com/mailward/mailward/policy"
)

// BenchmarkWholeMessage runs a signed message through every stage with
// the real checks against the fixture DNS server: without a cache, and
// with a memory cache holding the check results and the verdict of an
// earlier copy of the message.
func BenchmarkWholeMessage(b *testing.B) {
	w := newWorld(b)
	msg := w.sign(b, plainMessage)
	rc := []string{"bob@example.net"}
	for _, bc := range []struct {
		name   string
		engine *policy.Engine
	}{
		{"uncached", w.engine(b, nil)},
		{"cached", w.engine(b, memoryCache(b))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				v := send(b, bc.engine, "192.0.2.1", "alice@example.test", rc, msg).eom
				if v.Action != policy.Accept || !strings.Contains(authResults(v), "dkim=pass") {
					b.Fatalf("verdict %+v", v)
				}
			}
		})
	}
}

func TestVerdictCacheOff(t *testing.T) {
	w := newWorld(t)
	e := w.engine(t, memoryCache(t))
	s := e.Settings()
	s.VerdictTTL = 0
	e.Update(s, nil, nil)
	msg := w.sign(t, plainMessage)
	for i := range 2 {
		v := send(t, e, "192.0.2.1", "alice@example.test", []string{"bob@example.net"}, msg).eom
		if v.Action != policy.Accept || strings.Contains(v.Reason, "cached") {
			t.Fatalf("message %d with VerdictTTL 0: %+v", i, v)
		}
	}
}
