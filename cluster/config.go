package cluster

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"
	"unicode"
)

// Defaults for the zero fields of Config.
const (
	DefaultPrefix    = "/metalbond/"
	DefaultLeaseTTL  = 10 * time.Second
	DefaultMaxTxnOps = 128 // etcd's own default for --max-txn-ops
	// MinLeaseTTL is the shortest lease accepted. etcd itself raises a
	// lease below 1.5 election timeouts (2s with its defaults) to that.
	MinLeaseTTL = time.Second
)

// Config configures a Member. Zero fields take the defaults noted.
type Config struct {
	// Endpoints are the etcd client URLs, such as http://10.0.0.1:2379.
	// Required.
	Endpoints []string
	// Prefix is the etcd key prefix under which the cluster keeps its
	// keys; servers with the same prefix form one cluster. A missing
	// trailing "/" is added. Default "/metalbond/".
	Prefix string
	// ServerID names this server in the cluster; it must be unique among
	// the live servers and must not contain "/" or white space. Default
	// the host name, a dash and 8 random hex digits, new for every
	// process: a restarted server then writes its routes under a new ID
	// while those of its previous life stay until their lease expires,
	// which gives its clients the lease time to reconnect before the
	// other servers withdraw anything.
	ServerID string
	// LeaseTTL is how long the routes of a server that stopped talking to
	// etcd stay: the time in which the withdrawals of a failed server's
	// clients reach everyone. Rounded up to whole seconds. Default 10s.
	LeaseTTL time.Duration
	// TLS, if set, secures the connections to etcd (see LoadTLS).
	TLS *tls.Config
	// Username and Password authenticate to etcd, if set.
	Username, Password string
	// DialTimeout bounds each etcd request. Default 5s.
	DialTimeout time.Duration
	// MaxTxnOps is the largest number of operations in one transaction;
	// it must not exceed etcd's --max-txn-ops. Default 128.
	MaxTxnOps int
	// Logger receives lifecycle events (lease granted or lost, resyncs,
	// servers joining and leaving) and errors. Default discards.
	Logger *slog.Logger
}

// withDefaults checks cfg and fills in its zero fields.
func (cfg Config) withDefaults() (Config, error) {
	if len(cfg.Endpoints) == 0 {
		return cfg, errors.New("cluster: no etcd endpoints")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.ServerID == "" {
		id, err := defaultServerID()
		if err != nil {
			return cfg, err
		}
		cfg.ServerID = id
	}
	if err := validServerID(cfg.ServerID); err != nil {
		return cfg, err
	}
	switch {
	case cfg.LeaseTTL == 0:
		cfg.LeaseTTL = DefaultLeaseTTL
	case cfg.LeaseTTL < MinLeaseTTL:
		return cfg, fmt.Errorf("cluster: lease TTL %v: must be at least %v", cfg.LeaseTTL, MinLeaseTTL)
	}
	cfg.LeaseTTL = (cfg.LeaseTTL + time.Second - 1).Truncate(time.Second)
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.MaxTxnOps <= 0 {
		cfg.MaxTxnOps = DefaultMaxTxnOps
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

func validServerID(id string) error {
	if len(id) > 128 {
		return fmt.Errorf("cluster: server ID %.20q...: longer than 128 bytes", id)
	}
	for _, c := range id {
		if c == '/' || unicode.IsSpace(c) || !unicode.IsPrint(c) {
			return fmt.Errorf("cluster: server ID %q: must not contain %q", id, c)
		}
	}
	return nil
}

// defaultServerID returns the host name, a dash and 8 random hex digits.
func defaultServerID() (string, error) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "metalbond"
	}
	host = strings.Map(func(c rune) rune {
		if c == '/' || unicode.IsSpace(c) || !unicode.IsPrint(c) {
			return '_'
		}
		return c
	}, host)
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return host + "-" + hex.EncodeToString(b[:]), nil
}

// LoadTLS builds the TLS configuration for etcd connections from PEM
// files: a client certificate and key (both or neither) and the CA that
// signed etcd's server certificates (empty: the system roots).
func LoadTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("cluster: a client certificate needs both a certificate and a key file")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster: load client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("cluster: read CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cluster: CA file %s: no PEM certificates", caFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}
