package compat_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	mb "github.com/metalbond/metalbond/compat"
	mbproto "github.com/metalbond/metalbond/compat/pb"
	"github.com/metalbond/metalbond/internal/testport"
)

// A MetalBond that runs a server serves its own announcements, made before
// or after StartServer, to the server's peers, and shows them over HTTP.
func TestServerServesOwnAnnouncements(t *testing.T) {
	before := goleak.IgnoreCurrent()
	addr, httpAddr := testport.Free(t, "127.0.0.1"), testport.Free(t, "127.0.0.1")
	early := hop("2001:db8::1", mbproto.NextHopType_STANDARD, 0, 0)
	late := hop("2001:db8::2", mbproto.NextHopType_NAT, 100, 199)
	server := mb.NewMetalBond(mb.Config{}, nil)
	if err := server.AnnounceRoute(7, dest("192.0.2.1/32"), early); err != nil {
		t.Fatal(err)
	}
	if err := server.StartServer(addr); err != nil {
		t.Fatal(err)
	}
	if err := server.StartHTTPServer(httpAddr); err != nil {
		t.Fatal(err)
	}
	if err := server.AnnounceRoute(7, dest("192.0.2.2/32"), late); err != nil {
		t.Fatal(err)
	}

	agent := newAgentClient()
	agentMB := mb.NewMetalBond(mb.Config{Name: "agent"}, agent)
	if err := agentMB.AddPeer(addr, ""); err != nil {
		t.Fatal(err)
	}
	if err := agentMB.Subscribe(7); err != nil {
		t.Fatal(err)
	}
	agent.waitRoutes(t, routeKey(7, dest("192.0.2.1/32"), early), routeKey(7, dest("192.0.2.2/32"), late))
	if err := server.WithdrawRoute(7, dest("192.0.2.1/32"), early); err != nil {
		t.Fatal(err)
	}
	agent.waitRoutes(t, routeKey(7, dest("192.0.2.2/32"), late))

	body := httpGet(t, "http://"+httpAddr+"/routes.json")
	if !strings.Contains(body, `192.0.2.2/32`) || strings.Contains(body, `192.0.2.1/32`) {
		t.Errorf("/routes.json does not show the server's table (192.0.2.2/32 only):\n%s", body)
	}

	agentMB.Shutdown()
	server.Shutdown()
	goleak.VerifyNone(t, before)
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v", url, resp.Status, err)
	}
	return string(b)
}

// Config.ClientTLS and Config.ServerTLS secure the sessions.
func TestTLS(t *testing.T) {
	before := goleak.IgnoreCurrent()
	serverTLS, clientTLS := testTLS(t)
	addr := testport.Free(t, "127.0.0.1")
	server := mb.NewMetalBond(mb.Config{ServerTLS: serverTLS}, nil)
	if err := server.StartServer(addr); err != nil {
		t.Fatal(err)
	}
	speaker := mb.NewMetalBond(mb.Config{ClientTLS: clientTLS, Name: "speaker"}, nil)
	agent := newAgentClient()
	agentMB := mb.NewMetalBond(mb.Config{ClientTLS: clientTLS, Name: "agent"}, agent)
	for _, m := range []*mb.MetalBond{speaker, agentMB} {
		if err := m.AddPeer(addr, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := agentMB.Subscribe(9); err != nil {
		t.Fatal(err)
	}
	h := hop("2001:db8::9", mbproto.NextHopType_STANDARD, 0, 0)
	if err := speaker.AnnounceRoute(9, dest("10.9.0.0/16"), h); err != nil {
		t.Fatal(err)
	}
	agent.waitRoutes(t, routeKey(9, dest("10.9.0.0/16"), h))

	// A client without TLS gets no session: its HELLO is not a TLS
	// handshake, and the server closes the connection.
	plain := mb.NewMetalBond(mb.Config{Name: "plain"}, nil)
	if err := plain.AddPeer(addr, ""); err != nil {
		t.Fatal(err)
	}
	waitState(t, plain, addr, "RETRY after a refused handshake", func(s mb.ConnectionState) bool { return s == mb.RETRY })

	for _, m := range []*mb.MetalBond{plain, agentMB, speaker, server} {
		m.Shutdown()
	}
	goleak.VerifyNone(t, before)
}

// testTLS returns a server configuration with a self-signed certificate
// for 127.0.0.1 and a client configuration that trusts it.
func testTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "route server"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
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
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS13}
	client = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	return server, client
}
