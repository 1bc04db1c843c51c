package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/httpapi"
	"github.com/metalbond/metalbond/internal/metrics"
)

// serverConfig is the validated configuration of "metalbond server".
type serverConfig struct {
	Listen    string        // MetalBond TCP address
	HTTP      string        // status and API address; empty: none
	Keepalive time.Duration // largest keepalive interval agreed to
	// GracefulRestart and SyncDelay as in metalbond.ServerConfig
	// (negative GracefulRestart: off).
	GracefulRestart time.Duration
	SyncDelay       time.Duration
	Limits          metalbond.Limits
	NoPaceV1        bool
	TLS             tlsConfig
	Etcd            etcdConfig
	Log             logConfig
}

// serverFlags are the raw flags of "metalbond server".
type serverFlags struct {
	config           string
	listen           string
	http             string
	keepalive        string
	gracefulRestart  string
	syncDelay        string
	handshakeTimeout string
	limits           metalbond.Limits
	noPaceV1         bool
	tls              tlsFlags
	etcd             etcdFlags
	log              logFlags
}

func newServerCommand(r runners) *cobra.Command {
	var f serverFlags
	cmd := &cobra.Command{
		Use:   "server [flags]",
		Short: "Run a route server",
		Long: `Run a MetalBond route server. It accepts clients on --listen, remembers the
routes each announces and reflects them to every client subscribed to the
VNI. It runs until SIGINT or SIGTERM, then closes every session and exits 0.

With --tls-cert and --tls-key, --listen speaks TLS 1.3; --tls-ca requires
client certificates and --tls-authz limits each certificate identity to its
VNIs. Plain v1 peers are then accepted only on --plain-listen. SIGHUP rereads
the certificate, key, CA bundle and authorization file without dropping
sessions (see docs/security.md).

With --etcd, the server joins a cluster of route servers that share their
routes through etcd: clients may connect to any two or three of them and
still learn every route (see docs/scale-out.md); /readyz is then also false
while the server is not in sync with etcd.

With --http it serves a status page at /, the route table at /routes.json
and /routes.yaml, a JSON API under /api/v1/, Prometheus metrics at /metrics,
and /healthz and /readyz (see docs/http-api.md). Every flag can also be set
in a YAML file given with --config, whose keys are the long flag names:
  listen: "[::]:4711"
  http: "[::1]:4712"
  keepalive: 5`,
		Example: `  metalbond server --listen [::]:4711 --http [::1]:4712
  metalbond server --config /etc/metalbond/server.yaml`,
		Args: cobra.NoArgs,
		RunE: runDaemon(&f.config, f.parse, func(c serverConfig) logConfig { return c.Log }, r.server),
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	fs.StringVar(&f.listen, "listen", fmt.Sprintf("[::]:%d", metalbond.DefaultPort),
		"TCP `address` to accept MetalBond peers on, HOST:PORT (IPv6 in brackets); an empty host means all addresses")
	fs.StringVar(&f.http, "http", "",
		"serve the status page, JSON API and /metrics on this `address`, e.g. [::1]:4712 (default: no HTTP)")
	fs.StringVar(&f.keepalive, "keepalive", "5",
		"largest keepalive interval to agree to, in `seconds` (or a duration like 10s); a peer silent for 2.5 intervals is closed")
	fs.StringVar(&f.gracefulRestart, "graceful-restart", "60s",
		"keep the routes of a client whose session ended for at most this `duration`, when it negotiated graceful restart, until it is back and has re-announced; 0 turns graceful restart off")
	fs.StringVar(&f.syncDelay, "sync-delay", "10s",
		"after starting, hold back end-of-sync markers for this `duration` so that reconnecting clients keep their routes until the others have re-announced")
	fs.StringVar(&f.handshakeTimeout, "handshake-timeout", "0",
		"close a peer that has not completed the handshake (TLS and HELLO) within this `duration` (0: 2.5 keepalive intervals)")
	def := metalbond.DefaultLimits
	fs.IntVar(&f.limits.MaxConnections, "max-connections", def.MaxConnections, "refuse connections beyond this `number` (0: unlimited)")
	fs.IntVar(&f.limits.MaxConnectionsPerIP, "max-connections-per-ip", 0, "refuse connections from one source address beyond this `number` (0: unlimited)")
	fs.IntVar(&f.limits.MaxRoutesPerPeer, "max-routes-per-peer", def.MaxRoutesPerPeer, "ignore (and count) announcements of a peer beyond this `number` of routes, its routes kept for graceful restart included (0: unlimited)")
	fs.IntVar(&f.limits.MaxRoutesPerVNI, "max-routes-per-vni", def.MaxRoutesPerVNI, "ignore (and count) new routes in a VNI beyond this `number` (0: unlimited)")
	fs.IntVar(&f.limits.MaxVNIsPerPeer, "max-vnis-per-peer", def.MaxVNIsPerPeer, "ignore (and count) announcements of a peer into more than this `number` of VNIs (0: unlimited)")
	fs.IntVar(&f.limits.MaxSubscriptionsPerPeer, "max-subscriptions-per-peer", def.MaxSubscriptionsPerPeer, "ignore (and count) subscriptions of a peer beyond this `number` of VNIs (0: unlimited)")
	fs.BoolVar(&f.noPaceV1, "no-pace-v1", false,
		"do not pace writes to plain v1 peers; by default they are paced so that a deployed v1 reader never finds 64 KiB unread (docs/pacing.md)")
	f.tls.registerServer(fs)
	f.etcd.register(fs)
	f.log.register(fs)
	fs.StringVar(&f.config, "config", "",
		"read settings from this YAML `file`: keys are these flags' long names; flags on the command line override it")
	return cmd
}

// parse validates the flags.
func (f *serverFlags) parse() (serverConfig, error) {
	var c serverConfig
	var err error
	if err := checkAddr(f.listen, true); err != nil {
		return c, flagError("listen", f.listen, err)
	}
	c.Listen = f.listen
	if f.http != "" {
		if err := checkAddr(f.http, true); err != nil {
			return c, flagError("http", f.http, err)
		}
		c.HTTP = f.http
	}
	if c.Keepalive, err = parseKeepalive(f.keepalive); err != nil {
		return c, flagError("keepalive", f.keepalive, err)
	}
	if c.GracefulRestart, err = parseSeconds(f.gracefulRestart); err != nil {
		return c, flagError("graceful-restart", f.gracefulRestart, err)
	}
	if c.GracefulRestart == 0 {
		c.GracefulRestart = metalbond.GracefulRestartOff // in the library, 0 is the default
	}
	if c.SyncDelay, err = parseSeconds(f.syncDelay); err != nil {
		return c, flagError("sync-delay", f.syncDelay, err)
	}
	if c.SyncDelay == 0 {
		c.SyncDelay = metalbond.NoSyncDelay // in the library, 0 is the default
	}
	c.Limits = f.limits
	c.NoPaceV1 = f.noPaceV1
	if c.Limits.HandshakeTimeout, err = parseSeconds(f.handshakeTimeout); err != nil {
		return c, flagError("handshake-timeout", f.handshakeTimeout, err)
	}
	for name, v := range map[string]*int{
		"max-connections": &c.Limits.MaxConnections, "max-connections-per-ip": &c.Limits.MaxConnectionsPerIP,
		"max-routes-per-peer": &c.Limits.MaxRoutesPerPeer, "max-routes-per-vni": &c.Limits.MaxRoutesPerVNI,
		"max-vnis-per-peer": &c.Limits.MaxVNIsPerPeer, "max-subscriptions-per-peer": &c.Limits.MaxSubscriptionsPerPeer,
	} {
		if *v < 0 {
			return c, flagError(name, strconv.Itoa(*v), errors.New("must not be negative"))
		}
		if *v == 0 { // given as 0 on the command line: no limit
			*v = metalbond.Unlimited
		}
	}
	if c.TLS, err = f.tls.parseServer(); err != nil {
		return c, err
	}
	if c.Etcd, err = f.etcd.parse(); err != nil {
		return c, err
	}
	if c.Log, err = f.log.config(); err != nil {
		return c, err
	}
	return c, nil
}

// runServer runs a route server (and its HTTP endpoint) until ctx is done.
func runServer(ctx context.Context, cfg serverConfig, log *slog.Logger, _ io.Writer) error {
	sec, err := loadServerSecurity(cfg.TLS, log)
	if err != nil {
		return err
	}
	// The fan-out histogram exists before the server, whose hook feeds it.
	fanout := metrics.NewFanout()
	// The cluster member exists before the server, which reports its
	// local routes to the member's sink.
	member, err := newMember(cfg.Etcd, log)
	if err != nil {
		return err
	}
	srv, err := metalbond.NewServer(metalbond.ServerConfig{
		Keepalive:       cfg.Keepalive,
		GracefulRestart: cfg.GracefulRestart,
		SyncDelay:       cfg.SyncDelay,
		Limits:          cfg.Limits,
		NoPaceV1:        cfg.NoPaceV1,
		Logger:          log,
		Authorizer:      sec.authorizer,
		ObserveFanout:   fanout.Observe,
		Sink:            sinkOf(member),
	})
	if err != nil {
		return err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		return err
	}
	if sec.creds != nil {
		log.Info("TLS listener", "addr", ln.Addr().String())
		tln, err := sec.creds.NewListener(ln)
		if err != nil {
			ln.Close()
			return err
		}
		ln = tln
	}
	var plainLn net.Listener
	if cfg.TLS.PlainListen != "" {
		if plainLn, err = lc.Listen(ctx, "tcp", cfg.TLS.PlainListen); err != nil {
			ln.Close()
			return err
		}
		log.Warn("plain v1 listener: peers on it are neither authenticated nor encrypted", "addr", plainLn.Addr().String())
	}
	var httpLn net.Listener
	if cfg.HTTP != "" {
		if httpLn, err = lc.Listen(ctx, "tcp", cfg.HTTP); err != nil {
			ln.Close()
			if plainLn != nil {
				plainLn.Close()
			}
			return err
		}
	}

	// Ready while the MetalBond listener accepts peers.
	var listening atomic.Bool
	g, ctx := errgroup.WithContext(ctx)
	listening.Store(true)
	g.Go(func() error {
		defer listening.Store(false)
		return srv.Serve(ctx, ln)
	})
	if plainLn != nil {
		g.Go(func() error { return srv.Serve(ctx, plainLn) })
	}
	if member != nil {
		g.Go(func() error { return member.Run(ctx, srv) })
	}
	g.Go(func() error {
		reload := sec.reload
		if sec.authorizer != nil {
			// After the policy, apply it to what running sessions already hold.
			reload = append(reload, reauthorizer{srv})
		}
		reloadOnSIGHUP(ctx, log, reload)
		return nil
	})
	if httpLn != nil {
		mopts := metrics.Options{Server: srv, Version: versionString(), Fanout: fanout}
		if member != nil {
			mopts.Cluster = member.Stats
		}
		m := metrics.New(mopts)
		h := httpapi.New(httpapi.Options{
			Server:  srv,
			Metrics: m,
			Version: versionString(),
			Ready: func() error {
				if !listening.Load() {
					return errNotListening
				}
				if member != nil && !member.Ready() {
					return errClusterNotReady
				}
				return nil
			},
			Logger: log,
		})
		g.Go(func() error { return serveHTTP(ctx, httpLn, h, log) })
	}
	err = g.Wait()
	log.Info("server stopped")
	return err
}

var errNotListening = fmt.Errorf("not listening")
