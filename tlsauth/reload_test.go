package tlsauth_test

import (
	"context"
	"crypto/tls"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/tlsauth"
)

// serverSerial opens a TLS connection with dial and returns the serial
// number of the certificate the server presents.
func serverSerial(t testing.TB, addr string, dial func(context.Context, string, string) (net.Conn, error)) *big.Int {
	t.Helper()
	conn, err := dial(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber
}

// watch runs tlsauth.Watch on rs until the test ends and returns its
// trigger and log.
func watch(t testing.TB, rs ...tlsauth.Reloader) (chan<- struct{}, *logBuf) {
	trigger := make(chan struct{})
	log := &logBuf{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tlsauth.Watch(ctx, trigger, log.logger(), rs...)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return trigger, log
}

// TestReload swaps the server's certificate and the authorization file
// under running sessions, as SIGHUP does: new handshakes use the new
// certificate, the sessions stay up and obey the new policy at once; then
// broken files are refused and the current ones kept.
func TestReload(t *testing.T) {
	p := newPKI(t)
	const v1 = `
rules:
  - name: a
    identities: ["` + idA + `"]
    announce: [100]
    subscribe: [100, 200]
  - name: b
    identities: ["` + idB + `"]
    announce: [200]
    subscribe: [100, 200]
`
	// v2 moves VNI 200 from B to A.
	v2 := strings.Replace(strings.Replace(v1, "announce: [100]", "announce: [100, 200]", 1), "announce: [200]", "announce: []", 1)
	creds := p.serverCreds(t)
	pol := writePolicy(t, p.dir, v1)
	srv := startServer(t, metalbond.ServerConfig{Authorizer: pol})
	addr := srv.serve(t, tlsListener(t, creds))
	trigger, wlog := watch(t, creds, pol)

	a := startClient(t, addr, p.dial(t, p.a))
	b := startClient(t, addr, p.dial(t, p.b))
	a.mustReady(t)
	b.mustReady(t)
	a.subscribe(t, 200)
	b.subscribe(t, 200)
	fromB := mustRoute(t, "200#10.200.0.0/24#2001:db8::b")
	b.announce(t, fromB)
	a.waitRoute(t, fromB)
	early := mustRoute(t, "200#10.200.1.0/24#2001:db8::a")
	a.announce(t, early)
	srv.log.waitLog(t, "update refused by policy", "identity="+idA, "prefix=10.200.1.0/24")

	if got := serverSerial(t, addr, p.dial(t, p.a)); got.Cmp(p.server.cert.SerialNumber) != 0 {
		t.Fatalf("server certificate serial %v, want %v", got, p.server.cert.SerialNumber)
	}
	established := map[string]time.Time{}
	for _, id := range []string{idA, idB} {
		pi, _ := srv.peerByIdentity(id)
		established[id] = pi.EstablishedAt
	}

	// Replace both files in place and signal.
	renewed := p.ca.issue(t, p.dir, "server", leaf{cn: "route-server-2", ips: []net.IP{net.IPv4(127, 0, 0, 1)}, server: true})
	writeFile(t, filepath.Join(p.dir, "authz.yaml"), []byte(v2))
	trigger <- struct{}{}
	wlog.waitLog(t, "reloaded", "route-server-2")
	wlog.waitLog(t, "reloaded", "generation 2")

	if got := serverSerial(t, addr, p.dial(t, p.a)); got.Cmp(renewed.cert.SerialNumber) != 0 {
		t.Fatalf("after reload, server certificate serial %v, want the renewed %v", got, renewed.cert.SerialNumber)
	}
	for id, at := range established {
		if pi, ok := srv.peerByIdentity(id); !ok || !pi.EstablishedAt.Equal(at) {
			t.Fatalf("session of %s did not survive the reload: %+v", id, srv.Peers())
		}
	}
	// The running sessions obey v2 from their next message on.
	late := mustRoute(t, "200#10.200.2.0/24#2001:db8::a")
	a.announce(t, late)
	b.waitRoute(t, late)
	refusedB := mustRoute(t, "200#10.200.3.0/24#2001:db8::b")
	b.announce(t, refusedB)
	srv.log.waitLog(t, "update refused by policy", "identity="+idB, "prefix=10.200.3.0/24")

	// Broken files are refused; what was loaded stays in force.
	writeFile(t, filepath.Join(p.dir, "authz.yaml"), []byte(strings.Replace(v2, "subscribe:", "subscrbe:", 1)))
	mismatched := p.ca.issue(t, p.dir, "other-server", leaf{cn: "route-server-3", ips: []net.IP{net.IPv4(127, 0, 0, 1)}, server: true})
	data, err := os.ReadFile(mismatched.certFile)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, renewed.certFile, data) // the key file still holds the renewed key
	trigger <- struct{}{}
	wlog.waitLog(t, "reload failed", `unknown key \"subscrbe\"`)
	wlog.waitLog(t, "reload failed", "private key does not match public key")
	if g := pol.Generation(); g != 2 {
		t.Fatalf("policy generation %d after a failed reload, want 2", g)
	}
	if got := serverSerial(t, addr, p.dial(t, p.a)); got.Cmp(renewed.cert.SerialNumber) != 0 {
		t.Fatalf("after a failed reload, server certificate serial %v, want %v", got, renewed.cert.SerialNumber)
	}
	again := mustRoute(t, "200#10.200.4.0/24#2001:db8::a")
	a.announce(t, again)
	b.waitRoute(t, again)
}

// TestReloadCA adds a CA to the server's bundle: clients it issued are
// accepted by new handshakes, and existing sessions are untouched.
func TestReloadCA(t *testing.T) {
	p := newPKI(t)
	bundle := filepath.Join(p.dir, "clients.pem")
	caPEM, err := os.ReadFile(p.ca.file)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, bundle, caPEM)
	creds := mustLoad(t, tlsauth.Config{CertFile: p.server.certFile, KeyFile: p.server.keyFile, CAFile: bundle})
	srv := startServer(t, metalbond.ServerConfig{Authorizer: tlsauth.AllowAll()})
	addr := srv.serve(t, tlsListener(t, creds))
	a := startClient(t, addr, p.dial(t, p.a))
	a.mustReady(t)

	f := startClient(t, addr, p.dial(t, p.foreign))
	srv.log.waitLog(t, "session refused", "certificate signed by unknown authority")
	f.stop()

	otherPEM, err := os.ReadFile(p.other.file)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, bundle, append(caPEM, otherPEM...))
	if err := creds.Reload(); err != nil {
		t.Fatal(err)
	}
	f = startClient(t, addr, p.dial(t, p.foreign))
	f.mustReady(t)
	f.subscribe(t, 5)
	r := mustRoute(t, "5#10.5.0.0/16#2001:db8::a")
	a.announce(t, r)
	f.waitRoute(t, r)
	if n := srv.Stats().Accepted; n != 3 {
		t.Fatalf("server accepted %d sessions, want 3 (A kept its session)", n)
	}
}

// TestClientReload renews a client's certificate: the next connection
// presents the new one.
func TestClientReload(t *testing.T) {
	p := newPKI(t)
	creds := p.serverCreds(t)
	cfg, err := creds.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serials := make(chan *big.Int)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				close(serials)
				return
			}
			tc := conn.(*tls.Conn)
			if err := tc.Handshake(); err != nil {
				t.Errorf("handshake: %v", err)
			}
			serials <- tc.ConnectionState().PeerCertificates[0].SerialNumber
			tc.Close()
		}
	}()
	client := mustLoad(t, tlsauth.Config{CertFile: p.a.certFile, KeyFile: p.a.keyFile, CAFile: p.ca.file})
	dialSerial := func() *big.Int {
		t.Helper()
		conn, err := client.Dial(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return <-serials
	}
	if got := dialSerial(); got.Cmp(p.a.cert.SerialNumber) != 0 {
		t.Fatalf("presented serial %v, want %v", got, p.a.cert.SerialNumber)
	}
	renewed := p.ca.issue(t, p.dir, "hv-a", leaf{cn: "hv-a", uris: []string{"spiffe://test.example/hv/a"}})
	if err := client.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := dialSerial(); got.Cmp(renewed.cert.SerialNumber) != 0 {
		t.Fatalf("after reload, presented serial %v, want %v", got, renewed.cert.SerialNumber)
	}
	ln.Close()
	for range serials {
	}
}
