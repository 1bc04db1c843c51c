package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEtcdFlags(t *testing.T) {
	code, _, stderr, c := run(t, "server", "--etcd", "http://127.0.0.1:2379, http://127.0.0.1:2381", "--etcd", "http://127.0.0.1:2383",
		"--etcd-prefix", "/mb/", "--etcd-lease-ttl", "4", "--etcd-cert", "c.pem", "--etcd-key", "k.pem", "--etcd-ca", "ca.pem",
		"--etcd-user", "metalbond", "--etcd-password-file", "/etc/metalbond/etcd-password")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := etcdConfig{
		Endpoints: "http://127.0.0.1:2379,http://127.0.0.1:2381,http://127.0.0.1:2383",
		Prefix:    "/mb/", LeaseTTL: 4 * time.Second, Cert: "c.pem", Key: "k.pem", CA: "ca.pem",
		User: "metalbond", PasswordFile: "/etc/metalbond/etcd-password",
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
		{[]string{"--etcd", "http://e:2379", "--etcd-user", "u"}, `--etcd-user and --etcd-password-file go together`},
		{[]string{"--etcd-user", "u"}, `invalid --etcd-user "u": needs --etcd`},
	} {
		code, _, stderr, _ := run(t, append([]string{"server"}, tc.args...)...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", tc.args, code, stderr, tc.want)
		}
	}
}

func TestEtcdPasswordFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	empty := filepath.Join(dir, "empty")
	os.WriteFile(good, []byte("s3cret\r\nignored\n"), 0o600)
	os.WriteFile(empty, []byte("\nsecond line\n"), 0o600)
	log := slog.New(slog.DiscardHandler)
	cfg := etcdConfig{Endpoints: "http://127.0.0.1:2379", User: "metalbond"}

	cfg.PasswordFile = good
	if m, err := newMember(cfg, log); err != nil || m == nil {
		t.Errorf("with %s: %v", good, err)
	}
	for _, tc := range []struct{ file, want string }{
		{filepath.Join(dir, "missing"), "no such file"},
		{empty, "first line is empty"},
	} {
		cfg.PasswordFile = tc.file
		if _, err := newMember(cfg, log); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.file) {
			t.Errorf("with %s: err %v, want one naming the file with %q", tc.file, err, tc.want)
		}
	}
}
