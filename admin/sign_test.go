package admin

import (
	"strings"
	"testing"
	"time"

	"github.com/mailward/mailward/policy"
)

// Messages to sign are counted by how signing ended; others are not.
func TestSigningMetric(t *testing.T) {
	m := NewMetrics()
	for _, outcome := range []string{policy.SignSigned, policy.SignSigned, policy.SignMissingKey, ""} {
		m.Transaction("milter", policy.Verdict{Action: policy.Accept}, &policy.Facts{Signing: outcome}, nil, time.Millisecond)
	}
	base := startAdmin(t, Config{}, m, Hooks{})
	_, body := do(t, "GET", base+"/metrics")
	for _, want := range []string{`mailward_dkim_sign_total{outcome="signed"} 2`, `mailward_dkim_sign_total{outcome="missing_key"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(body, `mailward_dkim_sign_total{outcome=""}`) {
		t.Error("a message not to sign was counted")
	}
}
