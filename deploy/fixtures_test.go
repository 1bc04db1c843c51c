package deploy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testPKI is a CA with a route server certificate (for the Service's DNS
// name and 127.0.0.1) and a hypervisor's client certificate whose identity
// the example authorization file allows.
type testPKI struct {
	caPEM                    []byte
	serverCert, serverKey    []byte
	clientCert, clientKey    []byte
	serverName, clientIdents string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	caKey := newKey(t)
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "metalbond test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ = x509.ParseCertificate(caDER)
	p := &testPKI{caPEM: pemBlock("CERTIFICATE", caDER), serverName: "metalbond.metalbond.svc",
		clientIdents: "spiffe://dc1.example.net/hypervisor/hv1"}
	leaf := func(serial int64, tmpl x509.Certificate) (certPEM, keyPEM []byte) {
		key := newKey(t)
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, &tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", kder)
	}
	p.serverCert, p.serverKey = leaf(2, x509.Certificate{
		Subject:     pkix.Name{CommonName: p.serverName},
		DNSNames:    []string{p.serverName},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	u, _ := url.Parse(p.clientIdents)
	p.clientCert, p.clientKey = leaf(3, x509.Certificate{
		Subject:     pkix.Name{CommonName: "hv1"},
		URIs:        []*url.URL{u},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// secret returns the Secret metalbond-tls as the TLS component expects it:
// the server's certificate and key, and the CA of the clients.
func (p *testPKI) secret() map[string][]byte {
	return map[string][]byte{"tls.crt": p.serverCert, "tls.key": p.serverKey, "ca.crt": p.caPEM}
}

// clientFiles writes the client's certificate, key and the CA to dir and
// returns the client's TLS flags.
func (p *testPKI) clientFiles(t *testing.T, dir string) []string {
	t.Helper()
	files := map[string][]byte{"client.crt": p.clientCert, "client.key": p.clientKey, "ca.crt": p.caPEM}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return []string{"--tls-cert=" + filepath.Join(dir, "client.crt"), "--tls-key=" + filepath.Join(dir, "client.key"),
		"--tls-ca=" + filepath.Join(dir, "ca.crt"), "--tls-server-name=" + p.serverName}
}

// tlsConfig is a client's configuration for a handshake with the server.
func (p *testPKI) tlsConfig(t *testing.T) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM)
	cert, err := tls.X509KeyPair(p.clientCert, p.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: p.serverName, MinVersion: tls.VersionTLS13}
}

// startEtcd starts a three-member etcd cluster on loopback with the
// repository's scripts/etcd-cluster.sh, stopped at the end of the test, and
// returns its client URLs. Without an etcd binary it returns nil, except in
// CI, where that fails the test.
func startEtcd(ctx context.Context, t *testing.T) []string {
	t.Helper()
	if _, err := exec.LookPath("etcd"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("etcd not found: CI must install Debian's etcd-server package")
		}
		t.Log("etcd not found: the tests of the etcd component are skipped")
		return nil
	}
	dir := t.TempDir()
	script := filepath.Join("..", "scripts", "etcd-cluster.sh")
	out, err := exec.CommandContext(ctx, "bash", script, "start", dir, strconv.Itoa(freePortRange(t, 6))).Output()
	t.Cleanup(func() {
		if out, err := exec.Command("bash", script, "stop", dir).CombinedOutput(); err != nil {
			t.Errorf("etcd-cluster.sh stop: %v\n%s", err, out)
		}
	})
	if err != nil {
		t.Fatalf("etcd-cluster.sh start: %v", err)
	}
	return strings.Split(strings.TrimSpace(string(out)), ",")
}

// freePortRange returns the first of n consecutive loopback ports that
// were free a moment ago.
func freePortRange(t *testing.T, n int) int {
	t.Helper()
	for try := 0; try < 100; try++ {
		base := 20000 + int(time.Now().UnixNano()%20000)
		var lns []net.Listener
		for i := 0; i < n; i++ {
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base+i)))
			if err != nil {
				break
			}
			lns = append(lns, ln)
		}
		for _, ln := range lns {
			ln.Close()
		}
		if len(lns) == n {
			return base
		}
	}
	t.Fatalf("found no %d consecutive free ports", n)
	return 0
}
