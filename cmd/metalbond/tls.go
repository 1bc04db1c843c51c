package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/tlsauth"
)

// tlsFlags are the raw TLS flags of server and client (see docs/security.md).
type tlsFlags struct {
	cert, key, ca string
	authz         string // server only
	plainListen   string // server only
	enable        bool   // client only
	serverName    string // client only
}

func (f *tlsFlags) registerCommon(fs *pflag.FlagSet, certHelp, caHelp string) {
	fs.StringVar(&f.cert, "tls-cert", "", certHelp)
	fs.StringVar(&f.key, "tls-key", "", "PEM `file` with the private key of --tls-cert")
	fs.StringVar(&f.ca, "tls-ca", "", caHelp)
}

func (f *tlsFlags) registerServer(fs *pflag.FlagSet) {
	f.registerCommon(fs,
		"speak TLS 1.3 on --listen with the certificate chain in this PEM `file` (then plain v1 only on --plain-listen)",
		"require client certificates issued by the CAs in this PEM `file` (mutual TLS); needs --tls-cert")
	fs.StringVar(&f.authz, "tls-authz", "",
		"authorization `file` (YAML) mapping client certificate identities to the VNIs they may announce into and subscribe to; needs --tls-ca")
	fs.StringVar(&f.plainListen, "plain-listen", "",
		"also accept plain (unauthenticated, unencrypted) v1 peers on this `address`, for peers without TLS; needs --tls-cert")
}

func (f *tlsFlags) registerClient(fs *pflag.FlagSet) {
	fs.BoolVar(&f.enable, "tls", false,
		"connect with TLS 1.3, verifying the servers against the system roots (implied by the other --tls flags)")
	f.registerCommon(fs,
		"present the client certificate chain in this PEM `file` to the servers (implies --tls)",
		"verify the servers against the CAs in this PEM `file` instead of the system roots (implies --tls)")
	fs.StringVar(&f.serverName, "tls-server-name", "",
		"`name` expected in the servers' certificates (default: the host of each --server; implies --tls)")
}

// tlsConfig is the validated TLS configuration of a server or client.
type tlsConfig struct {
	Enabled     bool
	Files       tlsauth.Config
	Authz       string // server: authorization file
	PlainListen string // server: address for plain v1 peers
}

func (f *tlsFlags) checkPair() error {
	switch {
	case f.cert != "" && f.key == "":
		return errors.New("--tls-cert needs --tls-key")
	case f.key != "" && f.cert == "":
		return errors.New("--tls-key needs --tls-cert")
	}
	return nil
}

func (f *tlsFlags) parseServer() (tlsConfig, error) {
	var c tlsConfig
	if err := f.checkPair(); err != nil {
		return c, err
	}
	if f.cert == "" {
		for _, fl := range []struct{ name, value string }{{"tls-ca", f.ca}, {"tls-authz", f.authz}, {"plain-listen", f.plainListen}} {
			if fl.value != "" {
				return c, fmt.Errorf("--%s needs --tls-cert and --tls-key (without them --listen is plain v1)", fl.name)
			}
		}
		return c, nil
	}
	if f.authz != "" && f.ca == "" {
		return c, errors.New("--tls-authz needs --tls-ca: identities come from verified client certificates")
	}
	if f.plainListen != "" {
		if err := checkAddr(f.plainListen, true); err != nil {
			return c, flagError("plain-listen", f.plainListen, err)
		}
	}
	c.Enabled = true
	c.Files = tlsauth.Config{CertFile: f.cert, KeyFile: f.key, CAFile: f.ca}
	c.Authz, c.PlainListen = f.authz, f.plainListen
	return c, nil
}

func (f *tlsFlags) parseClient() (tlsConfig, error) {
	var c tlsConfig
	if err := f.checkPair(); err != nil {
		return c, err
	}
	c.Enabled = f.enable || f.cert != "" || f.ca != "" || f.serverName != ""
	c.Files = tlsauth.Config{CertFile: f.cert, KeyFile: f.key, CAFile: f.ca, ServerName: f.serverName}
	return c, nil
}

// serverSecurity is what a server's TLS configuration turns into.
type serverSecurity struct {
	creds      *tlsauth.Credentials // nil: plain v1 on --listen
	authorizer metalbond.Authorizer // nil: everyone may do everything
	reload     []tlsauth.Reloader
}

// loadServerSecurity loads the files of c and logs what they protect.
func loadServerSecurity(c tlsConfig, log *slog.Logger) (serverSecurity, error) {
	var s serverSecurity
	if !c.Enabled {
		return s, nil
	}
	creds, err := tlsauth.Load(c.Files)
	if err != nil {
		return s, err
	}
	s.creds, s.reload = creds, []tlsauth.Reloader{creds}
	// An Authorizer makes the server complete (and time) the TLS handshake
	// before the v1 one, and count failed handshakes as refused sessions.
	s.authorizer = tlsauth.AllowAll()
	if c.Authz != "" {
		policy, err := tlsauth.LoadPolicy(c.Authz)
		if err != nil {
			return s, err
		}
		s.authorizer, s.reload = policy, append(s.reload, policy)
		log.Info("authorization policy loaded", "what", policy.String())
	}
	log.Info("TLS enabled", "what", creds.String(), "client_certificates", creds.MutualTLS())
	if !creds.MutualTLS() {
		log.Warn("TLS without --tls-ca: any client may connect and may announce into and subscribe to every VNI")
	}
	return s, nil
}

// clientDial returns the dial function of a client's TLS configuration (nil
// for plain TCP) and what SIGHUP reloads.
func clientDial(c tlsConfig, log *slog.Logger) (func(context.Context, string, string) (net.Conn, error), []tlsauth.Reloader, error) {
	if !c.Enabled {
		return nil, nil, nil
	}
	creds, err := tlsauth.Load(c.Files)
	if err != nil {
		return nil, nil, err
	}
	log.Info("TLS enabled", "what", creds.String(), "system_roots", c.Files.CAFile == "")
	return creds.Dial, []tlsauth.Reloader{creds}, nil
}

// reloadOnSIGHUP rereads rs on every SIGHUP until ctx is done. With nothing
// to reload, SIGHUP keeps its default effect.
func reloadOnSIGHUP(ctx context.Context, log *slog.Logger, rs []tlsauth.Reloader) {
	if len(rs) == 0 {
		return
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tlsauth.Watch(ctx, hup, log, rs...)
}

// reauthorizer re-checks running sessions against the reloaded policy: it
// drops subscriptions and withdraws announcements the policy no longer
// allows.
type reauthorizer struct{ srv *metalbond.Server }

func (r reauthorizer) Reload() error { r.srv.Reauthorize(); return nil }

func (r reauthorizer) String() string { return "permissions of running sessions" }
