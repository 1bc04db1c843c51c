package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metalbond/metalbond/internal/httpapi"
	"github.com/metalbond/metalbond/tlsauth"
)

func TestTLSFlags(t *testing.T) {
	code, _, stderr, c := run(t, "server", "--listen", "[::]:4711", "--tls-cert", "s.pem", "--tls-key", "s.key",
		"--tls-ca", "ca.pem", "--tls-authz", "authz.yaml", "--plain-listen", "[::]:4721")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := tlsConfig{Enabled: true, Files: tlsauth.Config{CertFile: "s.pem", KeyFile: "s.key", CAFile: "ca.pem"},
		Authz: "authz.yaml", PlainListen: "[::]:4721"}
	if c.server.TLS != want {
		t.Errorf("server TLS config %+v, want %+v", c.server.TLS, want)
	}
	if code, _, stderr, c = run(t, "server"); code != exitOK || c.server.TLS.Enabled {
		t.Errorf("server without TLS flags: exit %d, %+v, %s", code, c.server.TLS, stderr)
	}

	for _, tc := range []struct {
		args []string
		want tlsConfig
	}{
		{[]string{"--tls"}, tlsConfig{Enabled: true}},
		{[]string{"--tls-ca", "ca.pem"}, tlsConfig{Enabled: true, Files: tlsauth.Config{CAFile: "ca.pem"}}},
		{[]string{"--tls-server-name", "rs.example.net"}, tlsConfig{Enabled: true, Files: tlsauth.Config{ServerName: "rs.example.net"}}},
		{[]string{"--tls-cert", "c.pem", "--tls-key", "c.key"}, tlsConfig{Enabled: true, Files: tlsauth.Config{CertFile: "c.pem", KeyFile: "c.key"}}},
		{nil, tlsConfig{}},
	} {
		args := append([]string{"client", "--server", "[::1]:4711"}, tc.args...)
		code, _, stderr, c := run(t, args...)
		if code != exitOK {
			t.Fatalf("%q: exit %d: %s", args, code, stderr)
		}
		if c.client.TLS != tc.want {
			t.Errorf("%q: client TLS config %+v, want %+v", args, c.client.TLS, tc.want)
		}
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"server", "--tls-cert", "s.pem"}, "--tls-cert needs --tls-key"},
		{[]string{"server", "--tls-key", "s.key"}, "--tls-key needs --tls-cert"},
		{[]string{"server", "--tls-ca", "ca.pem"}, "--tls-ca needs --tls-cert and --tls-key"},
		{[]string{"server", "--plain-listen", "[::]:4721"}, "--plain-listen needs --tls-cert"},
		{[]string{"server", "--tls-cert", "s.pem", "--tls-key", "s.key", "--tls-authz", "a.yaml"}, "--tls-authz needs --tls-ca"},
		{[]string{"server", "--tls-cert", "s.pem", "--tls-key", "s.key", "--plain-listen", "::4721"}, `invalid --plain-listen "::4721"`},
		{[]string{"client", "--server", "[::1]:4711", "--tls-cert", "c.pem"}, "--tls-cert needs --tls-key"},
	} {
		code, _, stderr, _ := run(t, tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr, exitUsage, tc.want)
		}
	}
}

// testPKI writes a CA, a server certificate for 127.0.0.1 and client
// certificates to dir.
type testPKI struct {
	dir    string
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	serial int64
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	p.caKey = p.key(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	if p.caCert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	p.write(t, "ca.pem", "CERTIFICATE", der)
	return p
}

func (p *testPKI) key(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (p *testPKI) write(t *testing.T, name, typ string, der []byte) string {
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue writes name.pem and name.key: a server certificate for 127.0.0.1
// if uri is empty, else a client certificate with that URI SAN.
func (p *testPKI) issue(t *testing.T, name, uri string) (certFile, keyFile string) {
	t.Helper()
	key := p.key(t)
	p.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial + 1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if uri == "" {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	} else {
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p.write(t, name+".pem", "CERTIFICATE", der), p.write(t, name+".key", "PRIVATE KEY", keyDER)
}

// TestEndToEndTLS runs the binary with mutual TLS, an authorization file
// and a plain listener, then reloads the policy with SIGHUP.
func TestEndToEndTLS(t *testing.T) {
	p := newTestPKI(t)
	srvCert, srvKey := p.issue(t, "server", "")
	aCert, aKey := p.issue(t, "hv-a", "spiffe://test/hv/a")
	bCert, bKey := p.issue(t, "hv-b", "spiffe://test/hv/b")
	ca := filepath.Join(p.dir, "ca.pem")
	authz := filepath.Join(p.dir, "authz.yaml")
	policy := func(aVNIs string) {
		text := fmt.Sprintf("rules:\n  - identities: [\"uri:spiffe://test/hv/a\"]\n    announce: [%s]\n"+
			"  - identities: [\"uri:spiffe://test/hv/b\"]\n    subscribe: [\"*\"]\nunauthenticated:\n  subscribe: [23]\n", aVNIs)
		if err := os.WriteFile(authz+".tmp", []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(authz+".tmp", authz); err != nil {
			t.Fatal(err)
		}
	}
	policy("23")

	srv := start(t, "server", "server", "--listen", "127.0.0.1:0", "--plain-listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
		"--tls-cert", srvCert, "--tls-key", srvKey, "--tls-ca", ca, "--tls-authz", authz)
	srv.waitLog(`msg="TLS enabled".*client_certificates=true`, 10*time.Second)
	tlsAddr := srv.waitLog(`msg="TLS listener" addr=(\S+)`, 10*time.Second)[1]
	plainAddr := srv.waitLog(`msg="plain v1 listener.*addr=(\S+)`, 10*time.Second)[1]
	srvHTTP := "http://" + srv.waitLog(`msg="http listening" addr=(\S+)`, 10*time.Second)[1]

	b := start(t, "client B", "client", "--server", tlsAddr, "--subscribe", "23,24", "--http", "127.0.0.1:0",
		"--tls-cert", bCert, "--tls-key", bKey, "--tls-ca", ca)
	bHTTP := "http://" + b.waitLog(`msg="http listening" addr=(\S+)`, 10*time.Second)[1]
	a := start(t, "client A", "client", "--server", tlsAddr, "--tls-cert", aCert, "--tls-key", aKey, "--tls-ca", ca,
		"--announce", "23#10.0.23.0/24#2001:db8::a", "--announce", "24#10.0.24.0/24#2001:db8::a")
	srv.waitLog(`msg="update refused by policy".*identity=uri:spiffe://test/hv/a.*vni=24`, 10*time.Second)
	plain := start(t, "plain client", "client", "--server", plainAddr, "--subscribe", "23", "--announce", "23#10.1.23.0/24#2001:db8::c")
	srv.waitLog(`msg="update refused by policy".*vni=23 prefix=10.1.23.0/24`, 10*time.Second)

	routesOf := func(url string) (map[string]bool, error) {
		var page httpapi.RoutesJSON
		getInto(t, url+"/api/v1/routes", &page)
		got := map[string]bool{}
		for _, r := range page.Routes {
			got[fmt.Sprintf("%d#%s", r.VNI, r.Prefix)] = true
		}
		return got, nil
	}
	eventually(t, 10*time.Second, func() error {
		got, _ := routesOf(bHTTP)
		if len(got) != 1 || !got["23#10.0.23.0/24"] {
			return fmt.Errorf("client B routes %v, want only A's route in 23", got)
		}
		return nil
	})

	// SIGHUP with a policy that lets A announce into 24 too: the running
	// sessions stay, and A's next connection (its route is re-sent on
	// reconnect) gets its route into 24 accepted.
	policy("23-24")
	if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	srv.waitLog(`msg=reloaded what="authorization policy .* \(generation 2`, 10*time.Second)
	srv.waitLog(`msg=reloaded what="TLS credentials`, 10*time.Second)
	a.stop()
	a2 := start(t, "client A again", "client", "--server", tlsAddr, "--tls-cert", aCert, "--tls-key", aKey, "--tls-ca", ca,
		"--announce", "24#10.0.24.0/24#2001:db8::a")
	eventually(t, 10*time.Second, func() error {
		got, _ := routesOf(bHTTP)
		if len(got) != 1 || !got["24#10.0.24.0/24"] {
			return fmt.Errorf("client B routes %v, want A's route in 24 only", got)
		}
		return nil
	})
	var peers httpapi.PeersJSON
	getInto(t, srvHTTP+"/api/v1/peers", &peers)
	if len(peers.Peers) != 3 {
		t.Errorf("server peers after the reload: %+v, want B, the plain client and A again", peers.Peers)
	}
	for _, p := range []*proc{a2, plain, b, srv} {
		p.stop()
	}
}
