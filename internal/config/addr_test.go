package config

import "testing"

func TestCheckAddresses(t *testing.T) {
	for addr, ok := range map[string]bool{
		"inet:127.0.0.1:8891": true, "inet6:[::1]:8891": true, "inet:8891@127.0.0.1": true, "unix:/run/m.sock": true,
		"local:/x": true, "inet:127.0.0.1": false, "inet:127.0.0.1:99999": false, "inet:127.0.0.1:0": true,
		"inet:127.0.0.1:": false, "unix:": false, "127.0.0.1:8891": false, "inet:x:nosuchservice": false,
	} {
		if err := CheckSocketAddr(addr); (err == nil) != ok {
			t.Errorf("CheckSocketAddr(%q) = %v", addr, err)
		}
	}
	for addr, ok := range map[string]bool{
		"127.0.0.1:9101": true, ":25": true, "[::1]:25": true, "localhost:smtp": true,
		"localhost": false, "127.0.0.1:99999": false, "127.0.0.1:": false, "a:b:c": false,
	} {
		if err := CheckHostPort(addr, true); (err == nil) != ok {
			t.Errorf("CheckHostPort(%q) = %v", addr, err)
		}
	}
	if CheckHostPort(":25", false) == nil || CheckHostPort("127.0.0.1:0", false) == nil {
		t.Error("an upstream without a host or port passed")
	}
}
