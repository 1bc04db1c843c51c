package tlsauth_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
)

// TestHandshakeTimeoutBoundsTLSAndV1: Limits.HandshakeTimeout counts from
// the accept and bounds the TLS handshake and the v1 handshake together. A
// peer that says nothing is closed; so is one that takes most of the time
// for TLS and then sends no HELLO: it is closed when the timeout runs out
// from the accept, not a whole timeout after TLS.
func TestHandshakeTimeoutBoundsTLSAndV1(t *testing.T) {
	const timeout = 3 * time.Second
	p := newPKI(t)
	srv := startServer(t, metalbond.ServerConfig{Limits: metalbond.Limits{HandshakeTimeout: timeout}})
	addr := srv.serve(t, tlsListener(t, p.serverCreds(t)))

	t.Run("silent", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		closedWithin(t, conn, time.Now(), 3*timeout)
	})

	t.Run("slow TLS, then no HELLO", func(t *testing.T) {
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		accepted := time.Now()
		time.Sleep(timeout * 2 / 3)
		conn := tls.Client(raw, clientTLS(t, p))
		conn.SetDeadline(time.Now().Add(3 * timeout))
		if err := conn.Handshake(); err != nil {
			t.Logf("the server closed during TLS (a loaded machine): %v", err)
		}
		// Separate timeouts would close at 2/3 + 1 timeouts; together,
		// at one. The bound between leaves room for a loaded machine.
		closedWithin(t, conn, accepted, timeout*3/2)
	})
}

// clientTLS is a TLS client configuration presenting hv-a's certificate
// and trusting the test CA.
func clientTLS(t *testing.T, p *pki) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.a.certFile, p.a.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(p.ca.file)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: "rs.test.example", MinVersion: tls.VersionTLS13}
}

// closedWithin reads conn until the server closes it, and fails unless that
// happened within bound of since.
func closedWithin(t *testing.T, conn net.Conn, since time.Time, bound time.Duration) {
	t.Helper()
	conn.SetReadDeadline(since.Add(bound))
	buf := make([]byte, 512)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open %v after the accept", bound)
		}
		if !errors.Is(err, io.EOF) {
			t.Logf("closed: %v", err)
		}
		t.Logf("closed %v after the accept", time.Since(since).Round(time.Millisecond))
		return
	}
}
