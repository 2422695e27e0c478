package main

import "testing"

// The DNS cache's size, budget and evictions are exported, and a reload
// keeps them readable (the new resolver's).
func TestDNSCacheMetrics(t *testing.T) {
	e := startDrill(t, "dns:\n  cache_bytes: 1048576\n", nil)
	if o := send(e.addr, message{n: 1, from: "a@drill.example"}); o.err != nil {
		t.Fatal(o.err)
	}
	if b := e.metric(t, "mailward_dns_cache_budget_bytes"); b != 1<<20 {
		t.Errorf("budget %v, want 1048576", b)
	}
	if n := e.metric(t, "mailward_dns_cache_entries"); n <= 0 {
		t.Errorf("%v entries after a message", n)
	}
	if b := e.metric(t, "mailward_dns_cache_bytes"); b <= 0 || b > 1<<20 {
		t.Errorf("%v bytes cached", b)
	}
	if code, body := httpDo(t, "POST", e.admin+"/reload"); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	if b := e.metric(t, "mailward_dns_cache_budget_bytes"); b != 1<<20 {
		t.Errorf("after a reload: budget %v", b)
	}
	for _, name := range []string{"mailward_dns_cache_evictions_total", "mailward_dns_cache_oversized_total"} {
		if v := e.metric(t, name); v < 0 {
			t.Errorf("%s missing", name)
		}
	}
}
