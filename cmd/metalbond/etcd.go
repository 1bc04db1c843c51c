package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/cluster"
)

// etcdConfig joins a server to a cluster through etcd (docs/scale-out.md).
// The zero value (no endpoints) runs the server standalone. It is
// comparable, as serverConfig is.
type etcdConfig struct {
	// Endpoints are the etcd client URLs, comma-separated.
	Endpoints string
	Prefix    string        // empty: cluster.DefaultPrefix
	LeaseTTL  time.Duration // zero: cluster.DefaultLeaseTTL
	// Cert, Key and CA are PEM files for TLS to etcd.
	Cert, Key, CA string
	// User and PasswordFile authenticate to etcd (the password is the
	// file's first line).
	User, PasswordFile string
}

// etcdFlags are the raw --etcd* flags of "metalbond server".
type etcdFlags struct {
	endpoints []string
	prefix    string
	leaseTTL  string
	cert, key string
	ca        string
	user      string
	password  string // file
}

func (f *etcdFlags) register(fs *pflag.FlagSet) {
	fs.StringSliceVar(&f.endpoints, "etcd", nil,
		"join a cluster of route servers through etcd at these client `URLs` (comma-separated or repeated, e.g. http://10.0.0.1:2379); without it the server runs standalone")
	fs.StringVar(&f.prefix, "etcd-prefix", "",
		"etcd key `prefix` of the cluster; servers with the same prefix form one cluster (default "+cluster.DefaultPrefix+")")
	fs.StringVar(&f.leaseTTL, "etcd-lease-ttl", "",
		"lease `duration` (or seconds): how long the routes of a server that stopped talking to etcd stay (default 10s)")
	fs.StringVar(&f.cert, "etcd-cert", "", "client certificate PEM `file` for etcd (needs --etcd-key)")
	fs.StringVar(&f.key, "etcd-key", "", "client key PEM `file` for etcd (needs --etcd-cert)")
	fs.StringVar(&f.ca, "etcd-ca", "", "PEM `file` of the CAs that sign etcd's certificates (default: the system's)")
	fs.StringVar(&f.user, "etcd-user", "", "etcd `user` to authenticate as (needs --etcd-password-file)")
	fs.StringVar(&f.password, "etcd-password-file", "", "`file` whose first line is the password of --etcd-user")
}

func (f *etcdFlags) parse() (etcdConfig, error) {
	var c etcdConfig
	var eps []string
	for _, e := range f.endpoints {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	c.Endpoints = strings.Join(eps, ",")
	if len(eps) == 0 {
		for name, v := range map[string]string{"etcd-prefix": f.prefix, "etcd-lease-ttl": f.leaseTTL, "etcd-cert": f.cert, "etcd-key": f.key, "etcd-ca": f.ca,
			"etcd-user": f.user, "etcd-password-file": f.password} {
			if v != "" {
				return c, flagError(name, v, errors.New("needs --etcd"))
			}
		}
		return c, nil
	}
	c.Prefix = f.prefix
	if f.leaseTTL != "" {
		d, err := parseSeconds(f.leaseTTL)
		if err == nil && d < cluster.MinLeaseTTL {
			err = fmt.Errorf("must be at least %v", cluster.MinLeaseTTL)
		}
		if err != nil {
			return c, flagError("etcd-lease-ttl", f.leaseTTL, err)
		}
		c.LeaseTTL = d
	}
	if (f.cert == "") != (f.key == "") {
		return c, errors.New("--etcd-cert and --etcd-key go together")
	}
	c.Cert, c.Key, c.CA = f.cert, f.key, f.ca
	if (f.user == "") != (f.password == "") {
		return c, errors.New("--etcd-user and --etcd-password-file go together")
	}
	c.User, c.PasswordFile = f.user, f.password
	return c, nil
}

// newMember returns the cluster member configured by c, or nil if c has
// no endpoints.
func newMember(c etcdConfig, log *slog.Logger) (*cluster.Member, error) {
	if c.Endpoints == "" {
		return nil, nil
	}
	endpoints := strings.Split(c.Endpoints, ",")
	var tlsCfg *tls.Config
	https := false
	for _, e := range endpoints {
		https = https || strings.HasPrefix(e, "https://")
	}
	if c.Cert != "" || c.CA != "" || https {
		var err error
		if tlsCfg, err = cluster.LoadTLS(c.Cert, c.Key, c.CA); err != nil {
			return nil, err
		}
	}
	var password string
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("etcd password: %w", err)
		}
		password, _, _ = strings.Cut(string(b), "\n")
		if password = strings.TrimRight(password, "\r"); password == "" {
			return nil, fmt.Errorf("etcd password: %s: first line is empty", c.PasswordFile)
		}
	}
	return cluster.New(cluster.Config{
		Endpoints: endpoints,
		Prefix:    c.Prefix,
		LeaseTTL:  c.LeaseTTL,
		TLS:       tlsCfg,
		Username:  c.User,
		Password:  password,
		Logger:    log.With("component", "cluster"),
	})
}

// sinkOf returns m's RouteSink, or nil for a standalone server.
func sinkOf(m *cluster.Member) metalbond.RouteSink {
	if m == nil {
		return nil
	}
	return m.Sink()
}

var errClusterNotReady = errors.New("not in sync with the etcd cluster")
