package tlsauth_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/tlsauth"
)

// pki is the certificates of a test: a CA, a server, two hypervisors with
// rights, and peers that must be refused.
type pki struct {
	dir       string
	ca, other *testCA // other is a CA the server does not trust
	server    issued
	a, b      issued // hypervisors allowed by the policy
	stranger  issued // valid certificate, no rule
	expired   issued // A's identity, expired
	foreign   issued // A's identity, issued by other
}

const (
	idA = "uri:spiffe://test.example/hv/a"
	idB = "uri:spiffe://test.example/hv/b"
)

func newPKI(t testing.TB) *pki {
	t.Helper()
	dir := t.TempDir()
	p := &pki{dir: dir, ca: newCA(t, dir, "ca"), other: newCA(t, dir, "other-ca")}
	p.server = p.ca.issue(t, dir, "server", leaf{
		cn: "route-server-1", dns: []string{"rs.test.example"}, ips: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, server: true,
	})
	a := leaf{cn: "hv-a", dns: []string{"hv-a.test.example"}, uris: []string{"spiffe://test.example/hv/a"}}
	p.a = p.ca.issue(t, dir, "hv-a", a)
	p.b = p.ca.issue(t, dir, "hv-b", leaf{cn: "hv-b", dns: []string{"hv-b.test.example"}, uris: []string{"spiffe://test.example/hv/b"}})
	p.stranger = p.ca.issue(t, dir, "stranger", leaf{cn: "stranger", dns: []string{"stranger.test.example"}})
	expired := a
	expired.expired = true
	p.expired = p.ca.issue(t, dir, "expired", expired)
	p.foreign = p.other.issue(t, dir, "foreign", a)
	return p
}

// serverCreds are the server's credentials, requiring client certificates
// issued by the test CA.
func (p *pki) serverCreds(t testing.TB) *tlsauth.Credentials {
	return mustLoad(t, tlsauth.Config{CertFile: p.server.certFile, KeyFile: p.server.keyFile, CAFile: p.ca.file})
}

// dial returns a client dialler presenting id (none if zero) and trusting
// the test CA.
func (p *pki) dial(t testing.TB, id issued) func(context.Context, string, string) (net.Conn, error) {
	return mustLoad(t, tlsauth.Config{CertFile: id.certFile, KeyFile: id.keyFile, CAFile: p.ca.file}).Dial
}

const testPolicy = `
# Test policy: hypervisors own VNIs 100-199; hv-b may also announce into 300.
rules:
  - name: hypervisors
    identities: ["uri:spiffe://test.example/hv/*"]
    announce: [100-199]
    subscribe: [100-199]
  - name: hv-b extra
    identities: [dns:hv-b.test.example]
    announce: [300]
default:
  announce: []
unauthenticated:
  subscribe: [100]
`

func writePolicy(t testing.TB, dir, text string) *tlsauth.Policy {
	t.Helper()
	path := filepath.Join(dir, "authz.yaml")
	writeFile(t, path, []byte(text))
	pol, err := tlsauth.LoadPolicy(path)
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// TestMutualTLS runs one server with mTLS and a policy, two hypervisors
// that exchange routes through it, and a series of peers that must be
// refused; after each, the hypervisors' sessions must be the same ones
// and routes must still flow between them.
func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, metalbond.ServerConfig{Authorizer: writePolicy(t, p.dir, testPolicy)})
	addr := srv.serve(t, tlsListener(t, p.serverCreds(t)))
	plainAddr := srv.serve(t, nil) // for v1 peers: the unauthenticated rule

	a := startClient(t, addr, p.dial(t, p.a))
	b := startClient(t, addr, p.dial(t, p.b))
	a.mustReady(t)
	b.mustReady(t)
	a.subscribe(t, 150)
	b.subscribe(t, 100)

	var seq int
	flows := func(t *testing.T) {
		t.Helper()
		seq++
		r := mustRoute(t, fmt.Sprintf("100#10.1.%d.0/24#2001:db8::a", seq))
		a.announce(t, r)
		b.waitRoute(t, r)
	}
	flows(t)
	sessions := map[string]time.Time{}
	for _, id := range []string{idA, idB} {
		pi, ok := srv.peerByIdentity(id)
		if !ok || pi.State != "ESTABLISHED" {
			t.Fatalf("no established session for %s: %+v", id, srv.Peers())
		}
		sessions[id] = pi.EstablishedAt
	}
	// undisturbed checks that A and B keep their sessions and that routes
	// still flow from A to B.
	undisturbed := func(t *testing.T) {
		t.Helper()
		for id, at := range sessions {
			pi, ok := srv.peerByIdentity(id)
			if !ok || !pi.EstablishedAt.Equal(at) {
				t.Fatalf("session of %s was disturbed: %+v", id, srv.Peers())
			}
		}
		flows(t)
	}

	// refused starts a client with dial (plain TCP if nil) against target
	// and checks that the server refuses it, logging serverWants, that the
	// client logs clientWants and never becomes ready, and that nothing
	// else is disturbed.
	refused := func(t *testing.T, target string, dial func(context.Context, string, string) (net.Conn, error), serverWants, clientWants []string) {
		t.Helper()
		before, mark := srv.Stats().AuthRefusedSessions, srv.log.mark()
		c := startClient(t, target, dial)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("client log:\n%s\nserver log:\n%s", c.log, srv.log)
			}
		})
		line := srv.log.waitLogFrom(t, mark, append([]string{"session refused"}, serverWants...)...)
		t.Logf("server: %s", line)
		line = c.log.waitLog(t, clientWants...)
		t.Logf("client: %s", line)
		waitFor(t, "refusal counted", func() bool { return srv.Stats().AuthRefusedSessions > before })
		if c.Ready() {
			t.Fatal("refused client became ready")
		}
		c.stop()
		undisturbed(t)
	}

	t.Run("client certificate from another CA", func(t *testing.T) {
		refused(t, addr, p.dial(t, p.foreign),
			[]string{"TLS handshake", "certificate signed by unknown authority"},
			[]string{"session down", "remote error: tls: unknown certificate authority"})
	})
	t.Run("expired client certificate", func(t *testing.T) {
		// Load refuses an expired certificate of our own, so present it
		// with a hand-made configuration.
		refused(t, addr, rawDial(t, p.expired, p.ca.file),
			[]string{"TLS handshake", "certificate has expired"},
			[]string{"session down", "remote error: tls: expired certificate"})
	})
	t.Run("no client certificate", func(t *testing.T) {
		refused(t, addr, p.dial(t, issued{}),
			[]string{"TLS handshake", "client didn't provide a certificate"},
			[]string{"session down", "remote error: tls: certificate required"})
	})
	t.Run("server certificate from an untrusted CA", func(t *testing.T) {
		dial := mustLoad(t, tlsauth.Config{CertFile: p.a.certFile, KeyFile: p.a.keyFile, CAFile: p.other.file}).Dial
		refused(t, addr, dial,
			[]string{"TLS handshake", "remote error: tls: bad certificate"},
			[]string{"connect failed", "certificate signed by unknown authority"})
	})
	t.Run("server certificate for another name", func(t *testing.T) {
		dial := mustLoad(t, tlsauth.Config{CertFile: p.a.certFile, KeyFile: p.a.keyFile, CAFile: p.ca.file, ServerName: "other.test.example"}).Dial
		refused(t, addr, dial,
			[]string{"TLS handshake", "remote error: tls: bad certificate"},
			[]string{"connect failed", "not other.test.example"})
	})
	t.Run("identity without rights", func(t *testing.T) {
		refused(t, addr, p.dial(t, p.stranger),
			[]string{"identity dns:stranger.test.example, cn:stranger", "no rule of the authorization policy matches"},
			// v1 has no way to say why; the server's log does.
			[]string{"session down", "connection closed by peer in state HELLO_SENT"})
	})
	t.Run("plain client to the TLS port", func(t *testing.T) {
		refused(t, addr, nil,
			[]string{"TLS handshake", "first record does not look like a TLS handshake"},
			[]string{"session down", "connection closed by peer in state HELLO_SENT"})
	})

	t.Run("identity not allowed for a VNI", func(t *testing.T) {
		before := srv.Stats().AuthRefusedMessages
		denied := mustRoute(t, "300#10.3.0.0/24#2001:db8::a")
		a.subscribe(t, 300)
		a.announce(t, denied)
		srv.log.waitLog(t, "subscription refused by policy", "identity="+idA, "vni=300")
		srv.log.waitLog(t, "update refused by policy", "identity="+idA, "vni=300", "prefix=10.3.0.0/24")
		if got := srv.Stats().AuthRefusedMessages - before; got != 2 {
			t.Fatalf("AuthRefusedMessages grew by %d, want 2", got)
		}
		// B may announce into 300, but A's refused subscription must not
		// deliver it. B's marker in 150 is queued to A after B's route in
		// 300 would have been: once A has the marker, the route in 300
		// would be there too.
		bRoute := mustRoute(t, "300#10.3.1.0/24#2001:db8::b")
		marker := mustRoute(t, "150#10.150.0.0/24#2001:db8::b")
		b.announce(t, bRoute, marker)
		a.waitRoute(t, marker)
		if a.inst.Has(bRoute) {
			t.Fatal("refused subscription delivered a route")
		}
		for _, ri := range srv.Routes(300) {
			if ri.Route == denied {
				t.Fatalf("refused route stored: %v", srv.Routes(300))
			}
		}
		if len(srv.Routes(300)) != 1 {
			t.Fatalf("routes in 300: %v, want only B's", srv.Routes(300))
		}
		undisturbed(t)
	})

	t.Run("plain listener gets the unauthenticated rule", func(t *testing.T) {
		c := startClient(t, plainAddr, nil)
		c.mustReady(t)
		c.subscribe(t, 100, 101)
		own := mustRoute(t, "100#10.100.0.0/24#2001:db8::c")
		c.announce(t, own)
		srv.log.waitLog(t, "update refused by policy", "prefix=10.100.0.0/24")
		srv.log.waitLog(t, "subscription refused by policy", "vni=101")
		flows(t) // B receives A's next route, and so must c (subscribed to 100)
		c.waitRoute(t, mustRoute(t, fmt.Sprintf("100#10.1.%d.0/24#2001:db8::a", seq)))
		if b.inst.Has(own) {
			t.Fatal("unauthenticated announcement reached a subscriber")
		}
		c.stop()
		undisturbed(t)
	})
}

// TestTLSClientToPlainServer checks that a TLS client of a v1 server gets
// an error that says what is wrong, and that the server's v1 peers are not
// disturbed.
func TestTLSClientToPlainServer(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, metalbond.ServerConfig{})
	addr := srv.serve(t, nil)
	sub := startClient(t, addr, nil)
	sub.mustReady(t)
	sub.subscribe(t, 7)

	c := startClient(t, addr, p.dial(t, p.a))
	t.Logf("client: %s", c.log.waitLog(t, "connect failed", "TLS handshake", "it may be a plain-TCP MetalBond server"))
	waitFor(t, "protocol error counted", func() bool { return srv.Stats().ProtocolErrors["bad_version"] > 0 })
	if c.Ready() {
		t.Fatal("TLS client became ready with a plain server")
	}
	c.stop()

	pub := startClient(t, addr, nil)
	pub.mustReady(t)
	r := mustRoute(t, "7#10.7.0.0/16#2001:db8::7")
	pub.announce(t, r)
	sub.waitRoute(t, r)
}

// TestAllowAll checks that a TLS listener without a policy lets a client
// with a valid certificate do everything, and names it.
func TestAllowAll(t *testing.T) {
	p := newPKI(t)
	srv := startServer(t, metalbond.ServerConfig{Authorizer: tlsauth.AllowAll()})
	addr := srv.serve(t, tlsListener(t, p.serverCreds(t)))
	a := startClient(t, addr, p.dial(t, p.a))
	b := startClient(t, addr, p.dial(t, p.stranger))
	a.mustReady(t)
	b.mustReady(t)
	b.subscribe(t, 4242)
	r := mustRoute(t, "4242#10.42.0.0/16#2001:db8::a")
	a.announce(t, r)
	b.waitRoute(t, r)
	if _, ok := srv.peerByIdentity(idA); !ok {
		t.Fatalf("no peer named %s: %+v", idA, srv.Peers())
	}
	if _, ok := srv.peerByIdentity("dns:stranger.test.example"); !ok {
		t.Fatalf("no peer named dns:stranger.test.example: %+v", srv.Peers())
	}
	// Without a client certificate the handshake still fails: the
	// listener requires one.
	c := startClient(t, addr, p.dial(t, issued{}))
	srv.log.waitLog(t, "session refused", "client didn't provide a certificate")
	c.stop()
}

// rawDial dials TLS presenting id as it is, without the checks of Load.
func rawDial(t testing.TB, id issued, caFile string) func(context.Context, string, string) (net.Conn, error) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(id.certFile, id.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	data, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(data)
	d := &tls.Dialer{Config: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"}}
	return d.DialContext
}
