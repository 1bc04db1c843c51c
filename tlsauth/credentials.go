package tlsauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ALPN is the application protocol name offered in TLS handshakes. Peers
// do not require it; it keeps a MetalBond connection from being mistaken
// for another protocol on the same certificates.
const ALPN = "metalbond"

// HandshakeTimeout bounds the TLS handshake of Credentials.Dial.
const HandshakeTimeout = 10 * time.Second

// Config names the PEM files of one TLS endpoint, server or client.
type Config struct {
	// CertFile and KeyFile hold this endpoint's certificate chain (leaf
	// first) and its private key. Both or neither; a server needs them, a
	// client gives them to authenticate itself (mTLS).
	CertFile, KeyFile string
	// CAFile holds the CA certificates to verify the other side with. On
	// a server it turns on mutual TLS: every client must present a
	// certificate issued by one of them. On a client it replaces the
	// system roots for verifying servers.
	CAFile string
	// ServerName is the name a client expects in the server's certificate
	// (a DNS name or an IP address). Default: the host part of the
	// address dialled.
	ServerName string
}

// Credentials are the certificate, key and CA pool of one TLS endpoint,
// reloadable while connections run: the tls.Configs they return read the
// current files at each handshake, and Reload swaps them atomically.
// Established connections keep the certificates they were made with.
//
// Credentials are safe for concurrent use.
type Credentials struct {
	cfg Config

	cur atomic.Pointer[material] // never nil
	mu  sync.Mutex               // serialises Reload
}

// material is one loaded version of the files. It is immutable.
type material struct {
	cert   *tls.Certificate // nil without CertFile; cert.Leaf is set
	pool   *x509.CertPool   // nil without CAFile
	server *tls.Config      // what a server handshake uses; nil without cert
}

// Load reads the files named by cfg.
func Load(cfg Config) (*Credentials, error) {
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("TLS: a certificate file needs a key file and the other way round")
	}
	c := &Credentials{cfg: cfg}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the files again and, if they are all valid, uses them for
// new handshakes. If any is not, the current ones stay and the error says
// why. A certificate that has expired, or that does not match its key, is
// invalid.
func (c *Credentials) Reload() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, err := loadMaterial(c.cfg, time.Now())
	if err != nil {
		return fmt.Errorf("TLS credentials: %w", err)
	}
	c.cur.Store(m)
	return nil
}

func loadMaterial(cfg Config, now time.Time) (*material, error) {
	m := &material{}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("certificate %s, key %s: %w", cfg.CertFile, cfg.KeyFile, err)
		}
		if cert.Leaf == nil {
			if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
				return nil, fmt.Errorf("certificate %s: %w", cfg.CertFile, err)
			}
		}
		if now.After(cert.Leaf.NotAfter) {
			return nil, fmt.Errorf("certificate %s expired at %s", cfg.CertFile, cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		m.cert = &cert
	}
	if cfg.CAFile != "" {
		pool, err := loadCAs(cfg.CAFile)
		if err != nil {
			return nil, err
		}
		m.pool = pool
	}
	if m.cert != nil {
		m.server = &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{*m.cert},
			NextProtos:   []string{ALPN},
			// A resumed session would skip verifying the client against
			// the CA pool in force; sessions are long and reconnects rare,
			// so a full handshake each time costs nothing worth saving.
			SessionTicketsDisabled: true,
		}
		if m.pool != nil {
			m.server.ClientAuth = tls.RequireAndVerifyClientCert
			m.server.ClientCAs = m.pool
		}
	}
	return m, nil
}

// loadCAs reads a PEM bundle of CA certificates. Anything in it that is not
// a certificate is an error, so that a damaged bundle is not silently
// shorter.
func loadCAs(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("CA bundle %s: unexpected PEM block %q", path, b.Type)
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA bundle %s: certificate %d: %w", path, n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("CA bundle %s: no PEM certificates", path)
	}
	return pool, nil
}

// Certificate returns the leaf of the current certificate, or nil without
// one.
func (c *Credentials) Certificate() *x509.Certificate {
	if m := c.cur.Load(); m.cert != nil {
		return m.cert.Leaf
	}
	return nil
}

// MutualTLS reports whether a server with these credentials requires
// client certificates (a CAFile was given).
func (c *Credentials) MutualTLS() bool { return c.cfg.CAFile != "" }

// String describes the current certificate for logs.
func (c *Credentials) String() string {
	leaf := c.Certificate()
	if leaf == nil {
		return fmt.Sprintf("TLS credentials (no certificate, CA %q)", c.cfg.CAFile)
	}
	return fmt.Sprintf("TLS credentials (certificate %q serial %x, expires %s)",
		leaf.Subject.CommonName, leaf.SerialNumber, leaf.NotAfter.UTC().Format(time.RFC3339))
}

// ServerConfig returns a TLS 1.3 server configuration that, at each
// handshake, presents the current certificate and, with a CAFile,
// requires a client certificate verified against the current CA pool.
func (c *Credentials) ServerConfig() (*tls.Config, error) {
	if c.cfg.CertFile == "" {
		return nil, errors.New("TLS server: no certificate configured")
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return c.cur.Load().server, nil
		},
	}, nil
}

// NewListener returns a listener that accepts TLS connections on inner,
// configured by ServerConfig. The handshake is done by the first read or
// write, or by an explicit Handshake: metalbond.Server does it (with a
// timeout) when it has an Authorizer, which a TLS listener should have
// (AllowAll at least).
func (c *Credentials) NewListener(inner net.Listener) (net.Listener, error) {
	cfg, err := c.ServerConfig()
	if err != nil {
		return nil, err
	}
	return tls.NewListener(inner, cfg), nil
}

// ClientConfig returns a TLS 1.3 client configuration that verifies the
// server against the current CA pool (the system roots without a CAFile)
// and the name serverName, and presents the current certificate, if any,
// when the server asks for one.
func (c *Credentials) ClientConfig(serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		RootCAs:              c.cur.Load().pool,
		ServerName:           serverName,
		NextProtos:           []string{ALPN},
		GetClientCertificate: c.clientCertificate,
	}
}

func (c *Credentials) clientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if m := c.cur.Load(); m.cert != nil {
		return m.cert, nil
	}
	return &tls.Certificate{}, nil // none: the server decides whether that is acceptable
}

// Dial connects to addr and completes a TLS handshake, verifying the
// server as ClientConfig does with Config.ServerName or else the host of
// addr. It has the signature of metalbond.ClientConfig.Dial. Its errors
// say whether the connection or the handshake failed, and hint at a plain
// TCP server when the peer hung up during the handshake.
func (c *Credentials) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	name := c.cfg.ServerName
	if name == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		name = host
	}
	d := net.Dialer{Timeout: HandshakeTimeout}
	raw, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, c.ClientConfig(name))
	hctx, cancel := context.WithTimeout(ctx, HandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, handshakeError(err)
	}
	return tc, nil
}

// handshakeError adds a hint to the errors a TLS client gets from a server
// that does not speak TLS: a v1 server reads the ClientHello as a frame of
// an unknown version and hangs up.
func handshakeError(err error) error {
	var rh tls.RecordHeaderError
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("TLS handshake: %w (the server hung up: it may be a plain-TCP MetalBond server)", err)
	case errors.As(err, &rh):
		return fmt.Errorf("TLS handshake: %w (the server does not speak TLS)", err)
	}
	return fmt.Errorf("TLS handshake: %w", err)
}
