package main

import (
	"strings"
	"testing"
	"time"
)

func TestEtcdFlags(t *testing.T) {
	code, _, stderr, c := run(t, "server", "--etcd", "http://127.0.0.1:2379, http://127.0.0.1:2381", "--etcd", "http://127.0.0.1:2383",
		"--etcd-prefix", "/mb/", "--etcd-lease-ttl", "4", "--etcd-cert", "c.pem", "--etcd-key", "k.pem", "--etcd-ca", "ca.pem")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := etcdConfig{
		Endpoints: "http://127.0.0.1:2379,http://127.0.0.1:2381,http://127.0.0.1:2383",
		Prefix:    "/mb/", LeaseTTL: 4 * time.Second, Cert: "c.pem", Key: "k.pem", CA: "ca.pem",
	}
	if c.server.Etcd != want {
		t.Errorf("got %+v, want %+v", c.server.Etcd, want)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--etcd-prefix", "/x/"}, `invalid --etcd-prefix "/x/": needs --etcd`},
		{[]string{"--etcd", "http://e:2379", "--etcd-lease-ttl", "500ms"}, `invalid --etcd-lease-ttl "500ms": must be at least 1s`},
		{[]string{"--etcd", "http://e:2379", "--etcd-lease-ttl", "x"}, `invalid --etcd-lease-ttl "x"`},
		{[]string{"--etcd", "http://e:2379", "--etcd-cert", "c.pem"}, `--etcd-cert and --etcd-key go together`},
	} {
		code, _, stderr, _ := run(t, append([]string{"server"}, tc.args...)...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", tc.args, code, stderr, tc.want)
		}
	}
}
