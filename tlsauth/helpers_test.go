package tlsauth_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/testinstall"
	"github.com/metalbond/metalbond/route"
	"github.com/metalbond/metalbond/tlsauth"
)

// testCA issues certificates for a test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate, PEM
}

var serials struct {
	sync.Mutex
	n int64
}

func nextSerial() *big.Int {
	serials.Lock()
	defer serials.Unlock()
	serials.n++
	return big.NewInt(serials.n)
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newCA makes a self-signed CA named name and writes its certificate to
// dir/name.pem.
func newCA(t testing.TB, dir, name string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, file: filepath.Join(dir, name+".pem")}
	writeFile(t, ca.file, pemBlock("CERTIFICATE", der))
	return ca
}

// leaf describes a certificate to issue.
type leaf struct {
	cn       string
	dns      []string
	uris     []string
	ips      []net.IP
	expired  bool // valid until an hour ago
	server   bool // for TLS servers (else clients)
	reuseKey *ecdsa.PrivateKey
}

// issued is a certificate and key written to files.
type issued struct {
	cert              *x509.Certificate
	key               *ecdsa.PrivateKey
	certFile, keyFile string
}

// issue signs l and writes it to dir/name.pem and dir/name.key, replacing
// existing files atomically (as a careful operator would).
func (ca *testCA) issue(t testing.TB, dir, name string, l leaf) issued {
	t.Helper()
	key := l.reuseKey
	if key == nil {
		key = newKey(t)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: l.cn},
		DNSNames:     l.dns,
		IPAddresses:  l.ips,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if l.server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	if l.expired {
		tmpl.NotBefore = time.Now().Add(-48 * time.Hour)
		tmpl.NotAfter = time.Now().Add(-time.Hour)
	}
	for _, s := range l.uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	out := issued{cert: cert, key: key, certFile: filepath.Join(dir, name+".pem"), keyFile: filepath.Join(dir, name+".key")}
	writeFile(t, out.certFile, pemBlock("CERTIFICATE", der))
	writeFile(t, out.keyFile, pemBlock("PRIVATE KEY", keyDER))
	return out
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// writeFile replaces path by data atomically.
func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func mustLoad(t testing.TB, cfg tlsauth.Config) *tlsauth.Credentials {
	t.Helper()
	c, err := tlsauth.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// logBuf collects log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// mark returns the current end of the log, for waitLogFrom.
func (l *logBuf) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

// waitLog waits until the log has a line containing every one of parts.
func (l *logBuf) waitLog(t testing.TB, parts ...string) string {
	t.Helper()
	return l.waitLogFrom(t, 0, parts...)
}

// waitLogFrom waits for a line containing every one of parts, written
// after mark.
func (l *logBuf) waitLogFrom(t testing.TB, mark int, parts ...string) string {
	t.Helper()
	var line string
	waitFor(t, fmt.Sprintf("log line with %q", parts), func() bool {
		for s := range strings.Lines(l.String()[mark:]) {
			if containsAll(s, parts) {
				line = strings.TrimSpace(s)
				return true
			}
		}
		return false
	})
	return line
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testServer is a metalbond.Server serving listeners until the test ends.
type testServer struct {
	*metalbond.Server
	log *logBuf
}

func startServer(t testing.TB, cfg metalbond.ServerConfig) *testServer {
	t.Helper()
	s := &testServer{log: &logBuf{}}
	cfg.Logger = s.log.logger()
	srv, err := metalbond.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Server = srv
	return s
}

// serve accepts on a new loopback listener, wrapped by wrap if not nil,
// until the test ends, and returns its address.
func (s *testServer) serve(t testing.TB, wrap func(net.Listener) net.Listener) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if wrap != nil {
		ln = wrap(ln)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return addr
}

// tlsListener wraps listeners with creds.
func tlsListener(t testing.TB, creds *tlsauth.Credentials) func(net.Listener) net.Listener {
	return func(ln net.Listener) net.Listener {
		tln, err := creds.NewListener(ln)
		if err != nil {
			t.Fatal(err)
		}
		return tln
	}
}

// peerByIdentity returns the server's session of the peer with identity
// id, if it is up.
func (s *testServer) peerByIdentity(id string) (metalbond.PeerInfo, bool) {
	for _, p := range s.Peers() {
		if p.Identity == id {
			return p, true
		}
	}
	return metalbond.PeerInfo{}, false
}

// testClient is a metalbond.Client with a recording installer, run until
// the test ends or stop is called.
type testClient struct {
	*metalbond.Client
	inst *testinstall.Recorder
	log  *logBuf
	stop func()
}

// startClient runs a client of addr; dial nil means plain TCP.
func startClient(t testing.TB, addr string, dial func(context.Context, string, string) (net.Conn, error)) *testClient {
	t.Helper()
	tc := &testClient{inst: testinstall.New(), log: &logBuf{}}
	c, err := metalbond.NewClient(metalbond.ClientConfig{
		Servers:   []string{addr},
		Installer: tc.inst,
		Dial:      dial,
		RetryMin:  50 * time.Millisecond,
		RetryMax:  200 * time.Millisecond,
		Logger:    tc.log.logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	tc.Client = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			t.Errorf("client Run: %v", err)
		}
	}()
	var once sync.Once
	tc.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(tc.stop)
	return tc
}

func (c *testClient) mustReady(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatalf("client not ready: %v\nclient log:\n%s", err, c.log)
	}
}

func (c *testClient) subscribe(t testing.TB, vnis ...route.VNI) {
	t.Helper()
	for _, v := range vnis {
		if err := c.Subscribe(context.Background(), v); err != nil {
			t.Fatal(err)
		}
	}
}

func (c *testClient) announce(t testing.TB, rs ...route.Route) {
	t.Helper()
	for _, r := range rs {
		if err := c.Announce(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
}

// waitRoute waits until the client has installed rt.
func (c *testClient) waitRoute(t testing.TB, rt route.Route) {
	t.Helper()
	waitFor(t, "route "+rt.String(), func() bool { return c.inst.Has(rt) })
}

func mustRoute(t testing.TB, s string) route.Route {
	t.Helper()
	r, err := route.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
