package cluster

import "testing"

func TestConfigDefaults(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("no endpoints accepted")
	}
	for _, id := range []string{"a/b", "a b", "a\x00"} {
		if _, err := New(Config{Endpoints: []string{"x"}, ServerID: id}); err == nil {
			t.Errorf("server ID %q accepted", id)
		}
	}
	if _, err := New(Config{Endpoints: []string{"x"}, LeaseTTL: 500 * 1e6}); err == nil {
		t.Error("lease TTL below a second accepted")
	}
	m, err := New(Config{Endpoints: []string{"x"}, Prefix: "/p", LeaseTTL: 2500 * 1e6})
	if err != nil {
		t.Fatal(err)
	}
	if m.cfg.Prefix != "/p/" || m.cfg.LeaseTTL != 3e9 || m.cfg.MaxTxnOps != DefaultMaxTxnOps {
		t.Errorf("defaults: %+v", m.cfg)
	}
	if err := validServerID(m.ID()); err != nil || len(m.ID()) < 10 {
		t.Errorf("default server ID %q: %v", m.ID(), err)
	}
	m2, _ := New(Config{Endpoints: []string{"x"}})
	if m2.ID() == m.ID() {
		t.Errorf("two default server IDs are both %q", m.ID())
	}
}
