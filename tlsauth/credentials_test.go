package tlsauth_test

import (
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metalbond/metalbond/tlsauth"
)

func TestLoadErrors(t *testing.T) {
	p := newPKI(t)
	junk := filepath.Join(p.dir, "junk.pem")
	writeFile(t, junk, []byte("not PEM at all\n"))
	keyAsCA := p.a.keyFile
	for _, tc := range []struct {
		name string
		cfg  tlsauth.Config
		want string
	}{
		{"certificate without key", tlsauth.Config{CertFile: p.a.certFile}, "needs a key file"},
		{"key without certificate", tlsauth.Config{KeyFile: p.a.keyFile}, "needs a key file"},
		{"missing certificate", tlsauth.Config{CertFile: filepath.Join(p.dir, "nope.pem"), KeyFile: p.a.keyFile}, "no such file"},
		{"key of another certificate", tlsauth.Config{CertFile: p.a.certFile, KeyFile: p.b.keyFile}, "private key does not match public key"},
		{"expired certificate", tlsauth.Config{CertFile: p.expired.certFile, KeyFile: p.expired.keyFile}, "expired at"},
		{"missing CA bundle", tlsauth.Config{CAFile: filepath.Join(p.dir, "nope.pem")}, "CA bundle: open"},
		{"CA bundle without certificates", tlsauth.Config{CAFile: junk}, "no PEM certificates"},
		{"CA bundle holding a key", tlsauth.Config{CAFile: keyAsCA}, `unexpected PEM block "PRIVATE KEY"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tlsauth.Load(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestCredentialsConfigs(t *testing.T) {
	p := newPKI(t)
	client := mustLoad(t, tlsauth.Config{CAFile: p.ca.file})
	if _, err := client.ServerConfig(); err == nil {
		t.Fatal("ServerConfig without a certificate succeeded")
	}
	if client.Certificate() != nil || !strings.Contains(client.String(), "no certificate") {
		t.Fatalf("client without certificate: %v, %s", client.Certificate(), client)
	}
	cc := client.ClientConfig("rs.test.example")
	if cc.MinVersion != tls.VersionTLS13 || cc.ServerName != "rs.test.example" || cc.RootCAs == nil || cc.NextProtos[0] != tlsauth.ALPN {
		t.Fatalf("client config %+v", cc)
	}
	if system := mustLoad(t, tlsauth.Config{}).ClientConfig("x"); system.RootCAs != nil {
		t.Fatal("without a CA file, the client must use the system roots")
	}

	server := p.serverCreds(t)
	if !server.MutualTLS() || server.Certificate().SerialNumber.Cmp(p.server.cert.SerialNumber) != 0 {
		t.Fatalf("server credentials: mTLS %v, certificate %v", server.MutualTLS(), server.Certificate().Subject)
	}
	sc, err := server.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	per, err := sc.GetConfigForClient(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if sc.MinVersion != tls.VersionTLS13 || per.MinVersion != tls.VersionTLS13 ||
		per.ClientAuth != tls.RequireAndVerifyClientCert || per.ClientCAs == nil || !per.SessionTicketsDisabled {
		t.Fatalf("server handshake config %+v", per)
	}
	noMTLS := mustLoad(t, tlsauth.Config{CertFile: p.server.certFile, KeyFile: p.server.keyFile})
	sc, _ = noMTLS.ServerConfig()
	if per, _ := sc.GetConfigForClient(&tls.ClientHelloInfo{}); per.ClientAuth != tls.NoClientCert || noMTLS.MutualTLS() {
		t.Fatal("a server without a CA file must not ask for client certificates")
	}
}

// TestTLS12Refused checks that a client limited to TLS 1.2 cannot connect.
func TestTLS12Refused(t *testing.T) {
	p := newPKI(t)
	sc, err := mustLoad(t, tlsauth.Config{CertFile: p.server.certFile, KeyFile: p.server.keyFile}).ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", sc)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		done <- conn.(*tls.Conn).Handshake()
	}()
	cfg := mustLoad(t, tlsauth.Config{CAFile: p.ca.file}).ClientConfig("127.0.0.1")
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	conn, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	if err == nil {
		conn.Close()
		t.Fatal("TLS 1.2 handshake succeeded")
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "unsupported versions") {
		t.Fatalf("server handshake error %v, want one about the protocol version", err)
	}
}
