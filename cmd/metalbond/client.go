package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/httpapi"
	"github.com/metalbond/metalbond/internal/metrics"
	"github.com/metalbond/metalbond/kernel"
	"github.com/metalbond/metalbond/route"
)

// clientConfig is the validated configuration of "metalbond client".
type clientConfig struct {
	Servers       []string
	Subscribe     []route.VNI
	Announce      []route.Route
	InstallRoutes []route.TableMapping // each VNI is subscribed; needs Tun
	Tun           string
	IPv4Only      bool
	Keepalive     time.Duration
	GracePeriod   time.Duration
	// GracefulRestart is asked of servers; negative turns the extensions off.
	GracefulRestart time.Duration
	Name            string
	// AdoptGrace keeps kernel routes found at start until the servers have
	// resent their tables (negative: remove them at start).
	AdoptGrace time.Duration
	HTTP       string
	Cleanup    bool
	NoPaceV1   bool
	TLS        tlsConfig
	Log        logConfig
}

// clientFlags are the raw flags of "metalbond client".
type clientFlags struct {
	config          string
	servers         []string
	subscribe       []string
	announce        []string
	installRoutes   []string
	tun             string
	ipv4Only        bool
	keepalive       string
	gracePeriod     string
	gracefulRestart string
	name            string
	adoptGrace      string
	http            string
	cleanup         bool
	noPaceV1        bool
	tls             tlsFlags
	log             logFlags
}

func newClientCommand(r runners) *cobra.Command {
	var f clientFlags
	cmd := &cobra.Command{
		Use:   "client --server ADDR [flags]",
		Short: "Run a client: announce routes, subscribe to VNIs, install received routes",
		Long: `Run a MetalBond client. It connects to every --server (for redundancy),
announces the --announce routes to each, subscribes to each --subscribe VNI
and, for the VNIs mapped with --install-routes, installs the routes it
receives into Linux routing tables on the --tun device. It reconnects with a
randomised backoff and runs until a signal stops it:

  SIGINT, SIGTERM  clean stop: every announced route is withdrawn at every
                   server (at most 2 s), so subscribers drop them at once.
  SIGUSR1          stop for a restart: the routes are kept by the servers
                   for the graceful restart time and the next run under the
                   same --name takes them over without a flap (the systemd
                   unit uses it for "systemctl restart").

Servers recognise a restarted client by its --name. The default is the host
name followed by a digest of the command line, so two clients on one host
differ and a restart with the same command line is recognised; give --name
when the command line changes across a restart.

With --tls (or any --tls-* flag) it connects with TLS 1.3 and verifies the
servers; --tls-cert and --tls-key authenticate it to servers that require
client certificates. SIGHUP rereads them for the next connections.

Repeatable flags may be given several times or hold a comma-separated list.

The tunnel device is created once by the operator:
  ip link add overlay-tun type ip6tnl mode any external
  ip link set up dev overlay-tun

Every flag can also be set in a YAML file given with --config, whose keys
are the long flag names (flags on the command line win):
  server: ["[2001:db8::10]:4711", "[2001:db8::11]:4711"]
  subscribe: [23]
  announce: ["23#10.0.23.0/24#2001:db8::1"]
  install-routes: ["23#100"]
  tun: overlay-tun
  http: "[::1]:4712"`,
		Example: `  metalbond client --server [::1]:4711 --subscribe 23 \
      --announce 23#10.0.23.0/24#2001:db8::1 --install-routes 23#100 --tun overlay-tun
  metalbond client --server [2001:db8::10]:4711 --server [2001:db8::11]:4711 \
      --announce 23#10.0.24.0/24#2001:db8::2#NAT#1024#2047`,
		Args: cobra.NoArgs,
		RunE: runDaemon(&f.config, f.parse, func(c clientConfig) logConfig { return c.Log }, r.client),
	}
	fs := cmd.Flags()
	fs.SortFlags = false
	fs.StringSliceVar(&f.servers, "server", nil,
		"route server to connect to, `HOST:PORT` (IPv6 in brackets); repeatable, at least one")
	fs.StringSliceVar(&f.subscribe, "subscribe", nil,
		"subscribe to this `VNI` (0 to 16777215) and receive its routes; repeatable")
	fs.StringSliceVar(&f.announce, "announce", nil,
		"announce a `route`: VNI#PREFIX#NEXTHOP[#STD|LB|NAT][#FROM#TO], e.g. 23#10.0.23.0/24#2001:db8::1 or 23#10.0.24.0/24#2001:db8::2#NAT#1024#2047; repeatable")
	fs.StringSliceVar(&f.installRoutes, "install-routes", nil,
		"install the routes received for a subscribed VNI into a Linux routing table: `VNI#TABLE`, e.g. 23#100; needs --tun; repeatable. "+
			"Each table can have only one client in a network namespace. TABLE 254 (or 0) is the main table, which the host's own traffic uses: the received routes then "+
			"steer it, a received prefix replaces the host's own route for it (and --cleanup deletes it), and no other client can install into the main table; "+
			"prefer a table of its own, selected with ip rule")
	fs.StringVar(&f.tun, "tun", "",
		"tunnel `device` for installed routes (an ip6tnl device in mode any, external)")
	fs.BoolVar(&f.ipv4Only, "ipv4-only", false,
		"install only IPv4 prefixes")
	fs.StringVar(&f.keepalive, "keepalive", "5",
		"keepalive interval to propose to the servers, in `seconds` (or a duration like 10s)")
	fs.StringVar(&f.gracePeriod, "grace-period", "0",
		"keep the routes learned from a server whose session ended for this `duration` (e.g. 30s), so that a quick reconnect does not flap them; 0 removes them at once")
	fs.StringVar(&f.gracefulRestart, "graceful-restart", "60s",
		"with servers that support graceful restart, ask them to keep this client's routes for this `duration` when its session ends (a restart), and keep theirs as long until they have resent their tables; 0 speaks plain v1 without extensions")
	fs.StringVar(&f.adoptGrace, "adopt-grace", "60s",
		"keep the routes of ours found in the kernel at start for up to this `duration`, until the servers have resent their tables, so that a restart does not flap them; 0 removes them at start")
	fs.StringVar(&f.name, "name", "",
		"`name` that identifies this client to servers across restarts, for graceful restart; must differ between clients on one host (default: the host name)")
	fs.StringVar(&f.http, "http", "",
		"serve the status page, JSON API and /metrics on this `address`, e.g. [::1]:4712 (default: no HTTP)")
	fs.BoolVar(&f.cleanup, "cleanup", false,
		"remove every route this client installed when it exits (by default they stay until the next start)")
	fs.BoolVar(&f.noPaceV1, "no-pace-v1", false,
		"do not pace writes to a plain v1 server; by default they are paced so that a deployed v1 server never finds 64 KiB unread (docs/pacing.md)")
	f.tls.registerClient(fs)
	f.log.register(fs)
	fs.StringVar(&f.config, "config", "",
		"read settings from this YAML `file`: keys are these flags' long names; flags on the command line override it")
	return cmd
}

// parse validates the flags.
func (f *clientFlags) parse() (clientConfig, error) {
	var c clientConfig
	var err error
	if len(f.servers) == 0 {
		return c, errors.New("missing --server: give the address of at least one route server")
	}
	for _, s := range f.servers {
		if err := checkAddr(s, false); err != nil {
			return c, flagError("server", s, err)
		}
		if !slices.Contains(c.Servers, s) {
			c.Servers = append(c.Servers, s)
		}
	}
	for _, s := range f.subscribe {
		vni, err := route.ParseVNI(s)
		if err != nil {
			return c, flagError("subscribe", s, errors.New("want a VNI from 0 to 16777215"))
		}
		if !slices.Contains(c.Subscribe, vni) {
			c.Subscribe = append(c.Subscribe, vni)
		}
	}
	seen := make(map[route.Route]bool, len(f.announce))
	for _, s := range f.announce {
		r, err := route.Parse(s)
		if err != nil {
			return c, flagError("announce", s, trimSubject(err, "route", s))
		}
		if err := r.NextHop.ValidateUnderlay(); err != nil {
			return c, flagError("announce", s, err)
		}
		if !seen[r] {
			seen[r] = true
			c.Announce = append(c.Announce, r)
		}
	}
	tables := map[route.VNI]int{}
	for _, s := range f.installRoutes {
		m, err := route.ParseTableMapping(s)
		if err != nil {
			return c, flagError("install-routes", s, trimSubject(err, "table mapping", s))
		}
		if t, dup := tables[m.VNI]; dup && t != m.Table {
			return c, flagError("install-routes", s, fmt.Errorf("VNI %d is already mapped to table %d", m.VNI, t))
		}
		if !slices.Contains(c.Subscribe, m.VNI) {
			return c, flagError("install-routes", s, fmt.Errorf("VNI %d is not subscribed: add --subscribe %d", m.VNI, m.VNI))
		}
		if _, dup := tables[m.VNI]; !dup {
			tables[m.VNI] = m.Table
			c.InstallRoutes = append(c.InstallRoutes, m)
		}
	}
	if len(c.InstallRoutes) > 0 && f.tun == "" {
		return c, errors.New("--install-routes needs --tun DEVICE: the tunnel device to install routes on")
	}
	if f.tun != "" {
		if len(f.tun) > 15 || strings.ContainsAny(f.tun, "/ \t\n") {
			return c, flagError("tun", f.tun, errors.New("not a network device name"))
		}
		if len(c.InstallRoutes) == 0 {
			return c, errors.New("--tun needs --install-routes VNI#TABLE: the tunnel device is used only for installing received routes")
		}
	}
	c.Tun, c.IPv4Only, c.Cleanup, c.NoPaceV1 = f.tun, f.ipv4Only, f.cleanup, f.noPaceV1
	if c.Keepalive, err = parseKeepalive(f.keepalive); err != nil {
		return c, flagError("keepalive", f.keepalive, err)
	}
	if c.GracePeriod, err = parseSeconds(f.gracePeriod); err != nil {
		return c, flagError("grace-period", f.gracePeriod, err)
	}
	if c.GracefulRestart, err = parseSeconds(f.gracefulRestart); err != nil {
		return c, flagError("graceful-restart", f.gracefulRestart, err)
	}
	if c.GracefulRestart == 0 {
		c.GracefulRestart = metalbond.GracefulRestartOff // in the library, 0 is the default
	}
	if len(f.name) > 255 {
		return c, flagError("name", f.name, errors.New("longer than 255 bytes"))
	}
	c.Name = f.name
	if c.AdoptGrace, err = parseSeconds(f.adoptGrace); err != nil {
		return c, flagError("adopt-grace", f.adoptGrace, err)
	}
	if c.AdoptGrace == 0 {
		c.AdoptGrace = kernel.AdoptOff // in the library, 0 is the default
	}
	if f.http != "" {
		if err := checkAddr(f.http, true); err != nil {
			return c, flagError("http", f.http, err)
		}
		c.HTTP = f.http
	}
	if c.TLS, err = f.tls.parseClient(); err != nil {
		return c, err
	}
	if c.Log, err = f.log.config(); err != nil {
		return c, err
	}
	return c, nil
}

// trimSubject removes the leading `subject "value": ` that the route parsers
// put in front of their errors: the flag error names the value already.
func trimSubject(err error, subject, value string) error {
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, fmt.Sprintf("%s %q: ", subject, value)); ok {
		return errors.New(rest)
	}
	if rest, ok := strings.CutPrefix(msg, fmt.Sprintf("invalid %s %q: ", subject, value)); ok {
		return errors.New(rest)
	}
	return err
}

// runClient runs a client (with its route installer and HTTP endpoint)
// until ctx is done.
func runClient(ctx context.Context, cfg clientConfig, log *slog.Logger, _ io.Writer) (err error) {
	var (
		installer metalbond.Installer
		inst      *kernel.Installer
	)
	if len(cfg.InstallRoutes) > 0 {
		tables := make(map[route.VNI]int, len(cfg.InstallRoutes))
		for _, m := range cfg.InstallRoutes {
			tables[m.VNI] = m.Table
		}
		inst, err = kernel.New(kernel.Config{
			Tables:     tables,
			Device:     cfg.Tun,
			IPv4Only:   cfg.IPv4Only,
			AdoptGrace: cfg.AdoptGrace,
			Logger:     log,
		})
		if err != nil {
			return fmt.Errorf("route installer: %w", err)
		}
		installer = inst
		defer func() {
			if cfg.Cleanup {
				if cerr := inst.Cleanup(); cerr != nil {
					err = errors.Join(err, cerr)
				}
			}
			inst.Close()
		}()
	}

	dial, reload, err := clientDial(cfg.TLS, log)
	if err != nil {
		return err
	}
	c, err := metalbond.NewClient(metalbond.ClientConfig{
		Dial:            dial,
		Servers:         cfg.Servers,
		Keepalive:       cfg.Keepalive,
		Installer:       installer,
		GracePeriod:     cfg.GracePeriod,
		GracefulRestart: cfg.GracefulRestart,
		Name:            cfg.Name,
		NoPaceV1:        cfg.NoPaceV1,
		Logger:          log,
	})
	if err != nil {
		return err
	}
	var httpLn net.Listener
	if cfg.HTTP != "" {
		var lc net.ListenConfig
		if httpLn, err = lc.Listen(ctx, "tcp", cfg.HTTP); err != nil {
			return err
		}
	}
	// Subscriptions and announcements made before Run are kept and sent
	// once a session is established.
	for _, vni := range cfg.Subscribe {
		if err := c.Subscribe(ctx, vni); err != nil {
			return err
		}
	}
	for _, r := range cfg.Announce {
		if err := c.Announce(ctx, r); err != nil {
			return err
		}
	}

	// Run ends on SIGINT or SIGTERM (ctx: a clean stop that withdraws
	// every announced route) or on SIGUSR1 (a stop for a restart that
	// keeps them); everything else ends with it.
	ctx, endAll := context.WithCancel(ctx)
	defer endAll()
	stopRestart := stopForRestartOnSIGUSR1(ctx, c, log)
	defer stopRestart()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer endAll()
		return c.Run(ctx)
	})
	g.Go(func() error {
		reloadOnSIGHUP(ctx, log, reload)
		return nil
	})
	if inst != nil {
		g.Go(func() error { return inst.Run(ctx) })
	}
	if httpLn != nil {
		opts := metrics.Options{Client: c, Version: versionString()}
		if inst != nil {
			opts.Installer = inst.Stats
		}
		h := httpapi.New(httpapi.Options{
			Client:    c,
			Metrics:   metrics.New(opts),
			Installer: opts.Installer,
			Version:   versionString(),
			Logger:    log,
		})
		g.Go(func() error { return serveHTTP(ctx, httpLn, h, log) })
	}
	log.Info("client started", "servers", cfg.Servers, "subscriptions", len(cfg.Subscribe), "announcements", len(cfg.Announce))
	err = g.Wait()
	log.Info("client stopped")
	return err
}
