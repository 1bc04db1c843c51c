package metalbond

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metalbond/metalbond/internal/routetable"
	"github.com/metalbond/metalbond/internal/session"
	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// ClientConfig configures a Client. Zero fields take the defaults noted.
type ClientConfig struct {
	// Servers are the route servers to connect to, as host:port. The
	// client announces to and subscribes at each of them. It may be empty:
	// servers can be added and removed later (AddServer, RemoveServer).
	Servers []string
	// Keepalive is the interval proposed in HELLO. Default 5s.
	Keepalive time.Duration
	// Installer is told about received routes. Default NopInstaller.
	Installer Installer
	// GracePeriod keeps the routes learned from a server whose session
	// ended for this long, so that a quick reconnect (or a server restart)
	// does not withdraw and re-add them; routes the server no longer has
	// are removed when it expires. Zero removes them at once.
	GracePeriod time.Duration
	// GracefulRestart is how long servers are asked to keep this client's
	// routes when its session ends (a restart or a network blip), for
	// servers that negotiate graceful restart. It also bounds how long the
	// client keeps a vanished server's routes when GracePeriod is zero and
	// the server negotiated graceful restart.
	//
	// Zero means DefaultGracefulRestart (60s), not off. To turn the
	// extensions off (the client then speaks plain v1, byte for byte), use
	// GracefulRestartOff (any negative value): the command line's
	// --graceful-restart 0 is GracefulRestartOff here.
	GracefulRestart time.Duration
	// Name identifies this client to servers across reconnects and
	// restarts (for graceful restart); at most 255 bytes. The default is
	// the host name followed by a digest of what tells this client from
	// another on the same host: the program's command line, the Servers and
	// how many Clients without a Name the program created before (see
	// client_name.go). A restart with the same command line keeps it; a
	// different client on the same host gets another. Set it when the
	// command line changes across restarts.
	Name string
	// StopTimeout bounds how long a clean stop (Shutdown, or the end of
	// Run's context) waits for the servers to take the withdrawals of
	// every announced route before it closes the sessions anyway.
	// Default DefaultStopTimeout (2s).
	StopTimeout time.Duration
	// RetryMin and RetryMax bound the randomised delay between connection
	// attempts to a server. Defaults 500ms and 8s.
	RetryMin, RetryMax time.Duration
	// Dial opens connections. Default a net.Dialer with a 5s timeout.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// WriteTimeout, MaxQueue and HighWater bound each session's send
	// queue as in ServerConfig.
	WriteTimeout time.Duration
	MaxQueue     int
	HighWater    int
	// NoPaceV1 turns off the pacing of writes to a plain v1 server (one that
	// advertises no extension), which keeps the deployed v1 reader from ever
	// finding 64 KiB unread (docs/pacing.md). Turn it off only when the
	// plain v1 servers read at any speed.
	NoPaceV1 bool
	// Logger receives one line per session event, and per-route lines at
	// debug level. Default discards.
	Logger *slog.Logger
}

// Client is the hypervisor side of MetalBond: it keeps sessions to one or
// more route servers, announces routes, subscribes to VNIs and tells its
// Installer about the routes it learns.
//
// Subscriptions and announcements are state: calls made before a server is
// reachable are kept and sent once it is, and everything is sent again after
// a reconnect. A Client is safe for concurrent use.
//
// A Client stops in one of two ways, chosen at the call site: Shutdown (or
// the end of Run's context) withdraws every route it announced at every
// server before it disconnects; StopForRestart leaves them with the servers
// for the graceful restart time, because it is coming back. A crash is
// taken for a restart.
type Client struct {
	cfg ClientConfig
	log *slog.Logger

	mu        sync.Mutex // guards the following
	subs      map[route.VNI]struct{}
	announced map[route.Route]struct{}
	own       map[vniPrefix]int // announced routes per (VNI, prefix): loop prevention
	conns     []*clientConn
	recv      *routetable.Table // received routes; sources are session IDs
	installQ  []installOp
	running   bool
	// stopped is set when Run begins to stop (its context is done, or
	// Shutdown or StopForRestart was called): no server can be added, no
	// session is started and nothing can be announced or withdrawn from
	// then on. runCtx is the context of the sessions while Run runs (not
	// Run's: they outlive it for the withdrawals of a clean stop), and
	// connLoops counts the goroutines of connLoop.
	stopped   bool
	runCtx    context.Context
	connLoops sync.WaitGroup
	// stopRequested and stopHow record the first call of Shutdown or
	// StopForRestart; stopReq is closed then. runDone is closed when Run
	// returns.
	stopRequested bool
	stopHow       int
	stopReq       chan struct{}
	runDone       chan struct{}
	// installClosed is set when the installer goroutine has ended: nothing
	// queued from then on would be applied.
	installClosed bool
	// everSynced is set once a server has sent the full table of every
	// subscribed VNI (SyncNotifier).
	everSynced bool

	// staleTimers counts the stale sessions' timers that have not been
	// stopped: their callbacks may still run. Run waits for them.
	staleTimers sync.WaitGroup

	installWake chan struct{} // capacity 1
	ready       chan struct{} // closed when a session is first established
	readyOnce   sync.Once
	nextID      atomic.Uint32
	stats       clientCounters
}

type vniPrefix struct {
	vni    route.VNI
	prefix netip.Prefix
}

type clientCounters struct {
	installed      atomic.Int64
	installErrors  atomic.Uint64
	loopsPrevented atomic.Uint64
}

// clientConn is the client's link to one server across reconnects.
type clientConn struct {
	addr  string
	sess  atomic.Pointer[session.Session] // current session, nil between sessions
	id    atomic.Uint32                   // ID of the current or last session
	state atomic.Uint32                   // session.State while no session runs
	// established is true between Established and the end of the session;
	// guarded by Client.mu.
	established bool
	// stale are earlier sessions whose routes are kept until the current
	// session has re-synced or their time is up; guarded by Client.mu.
	stale []*staleSession
	// syncedVNIs are the VNIs the current session has received in full
	// (END_OF_SYNC); guarded by Client.mu.
	syncedVNIs map[route.VNI]bool
	// cancel stops connLoop, which closes done when it has returned; both
	// are set when connLoop starts (guarded by Client.mu). removed is set
	// by RemoveServer (guarded by Client.mu): the session's routes are then
	// withdrawn at once, not kept for a reconnect.
	cancel  context.CancelFunc
	done    chan struct{}
	removed bool
}

// NewClient returns a Client configured by cfg. It checks the configuration
// but does not connect: call Run.
func NewClient(cfg ClientConfig) (*Client, error) {
	for i, s := range cfg.Servers {
		if err := checkServerAddr(s); err != nil {
			return nil, err
		}
		if slices.Contains(cfg.Servers[:i], s) {
			return nil, fmt.Errorf("server address %q: listed twice", s)
		}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Keepalive == 0 {
		cfg.Keepalive = DefaultKeepalive
	}
	if cfg.Installer == nil {
		cfg.Installer = NopInstaller{}
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 500 * time.Millisecond
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(8*time.Second, cfg.RetryMin)
	}
	if cfg.Dial == nil {
		d := &net.Dialer{Timeout: 5 * time.Second}
		cfg.Dial = d.DialContext
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.GracefulRestart == 0 {
		cfg.GracefulRestart = DefaultGracefulRestart
	}
	if cfg.Name == "" {
		cfg.Name = defaultName(cfg.Servers)
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = DefaultStopTimeout
	}
	c := &Client{
		cfg:         cfg,
		log:         cfg.Logger,
		subs:        make(map[route.VNI]struct{}),
		announced:   make(map[route.Route]struct{}),
		own:         make(map[vniPrefix]int),
		recv:        routetable.New(),
		installWake: make(chan struct{}, 1),
		ready:       make(chan struct{}),
		stopReq:     make(chan struct{}),
		runDone:     make(chan struct{}),
	}
	for _, addr := range cfg.Servers {
		c.conns = append(c.conns, newClientConn(addr))
	}
	return c, nil
}

// Run connects to every server and keeps the sessions up, reconnecting with
// a jittered backoff, until ctx is done or Shutdown or StopForRestart is
// called. It then stops and returns nil.
//
// When ctx is done, Run stops as Shutdown does: it withdraws every
// announced route at every server (bounded by ClientConfig.StopTimeout)
// before it closes the sessions. To stop without withdrawing, because the
// client is coming back, call StopForRestart.
//
// Routes already given to the Installer are left there (the kernel
// installer removes its routes on request, see its Cleanup); changes not
// yet given to it are dropped, and an Installer that implements
// StopNotifier is told. When Run returns, every session and the installer
// goroutine have ended, and the Installer is not called again.
// Run may be called only once.
func (c *Client) Run(ctx context.Context) error {
	// The sessions outlive ctx: a clean stop still sends on them.
	loopCtx, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoops()
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return errors.New("client already running")
	}
	defer close(c.runDone)
	c.running = true
	c.runCtx = loopCtx
	if !c.stopRequested {
		for _, cc := range c.conns {
			c.startConnLocked(cc)
		}
	}
	c.mu.Unlock()

	installDone := make(chan struct{})
	go func() {
		defer close(installDone)
		c.installLoop(loopCtx)
	}()
	select {
	case <-ctx.Done():
	case <-c.stopReq:
	}
	c.mu.Lock()
	c.stopped = true // no connLoop starts after this
	how := c.stopHow
	c.mu.Unlock()
	if how == stopWithdraw {
		c.withdrawAll()
	} else {
		c.log.Info("stopping for a restart: servers keep the routes for the graceful restart time", "routes", c.announcedCount())
	}
	stopLoops()
	c.connLoops.Wait()
	<-installDone
	c.stopStale()
	return nil
}

// stopStale stops the timers of stale sessions when Run ends, as the
// sessions ending with it start them too: their routes stay with the
// Installer like all others, and no callback runs after Run returned.
func (c *Client) stopStale() {
	c.mu.Lock()
	for _, cc := range c.conns {
		for _, ss := range cc.stale {
			c.stopStaleTimer(ss)
		}
		cc.stale = nil
	}
	c.mu.Unlock()
	c.staleTimers.Wait() // callbacks already under way find nothing to do
}

// stopStaleTimer stops ss's timer; a callback that had not started yet
// will not run.
func (c *Client) stopStaleTimer(ss *staleSession) {
	if ss.timer.Stop() {
		c.staleTimers.Done()
	}
}

func (c *Client) announcedCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.announced)
}

// WaitReady blocks until a session to at least one server has been
// established, or ctx is done.
func (c *Client) WaitReady(ctx context.Context) error {
	select {
	case <-c.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Ready reports whether a session to at least one server is established.
func (c *Client) Ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cc := range c.conns {
		if cc.established {
			return true
		}
	}
	return false
}

// clientHandler is the client's session.Handler for one session.
type clientHandler struct {
	c   *Client
	cc  *clientConn
	id  routetable.SourceID
	log *slog.Logger
}

// Established re-sends every subscription and announcement.
func (h *clientHandler) Established(s *session.Session) {
	c := h.c
	c.mu.Lock()
	h.cc.established = true
	h.cc.syncedVNIs = make(map[route.VNI]bool)
	if c.stopped {
		// Stopping: announcing now would leave the routes behind.
		c.mu.Unlock()
		return
	}
	subs, routes := len(c.subs), len(c.announced)
	s.SendFunc(func(b []byte) ([]byte, int) {
		for vni := range c.subs {
			b, _ = wire.AppendFrame(b, wire.Subscribe{VNI: vni})
		}
		for r := range c.announced {
			b = wire.AppendUpdate(b, wire.ActionAdd, r)
		}
		if s.Negotiated()&wire.FeatureEndOfSync != 0 {
			b, _ = wire.AppendFrame(b, wire.EndOfSync{Announcements: true})
		}
		return b, len(c.announced)
	})
	c.mu.Unlock()
	c.readyOnce.Do(func() { close(c.ready) })
	h.log.Info("session established", "keepalive", s.Info().Keepalive, "subscriptions", subs, "announcements", routes)
}

// Handle takes END_OF_SYNC and refuses SUBSCRIBE and UNSUBSCRIBE: servers
// do not send them.
func (h *clientHandler) Handle(_ *session.Session, m wire.Message) error {
	if e, ok := m.(wire.EndOfSync); ok {
		h.log.Debug("initial table complete", "vni", e.VNI)
		h.c.synced(h.cc, e.VNI)
		return nil
	}
	return fmt.Errorf("%w: server sent %s", session.ErrProtocol, m.Type())
}

// HandleUpdate applies one route update from the server.
func (h *clientHandler) HandleUpdate(_ *session.Session, u *wire.Update) error {
	c := h.c
	r := u.Route
	c.mu.Lock()
	if c.own[vniPrefix{r.VNI, r.Prefix}] > 0 {
		c.mu.Unlock()
		c.stats.loopsPrevented.Add(1)
		h.log.Debug("ignored update for own prefix", "vni", r.VNI, "prefix", r.Prefix)
		return nil
	}
	if _, ok := c.subs[r.VNI]; !ok {
		c.mu.Unlock()
		h.log.Debug("ignored update for VNI not subscribed", "vni", r.VNI, "prefix", r.Prefix)
		return nil
	}
	var changed bool
	if u.Action == wire.ActionAdd {
		changed = c.recv.Add(r, h.id)
	} else {
		changed = c.recv.Remove(r, h.id)
	}
	if changed {
		c.installQ = append(c.installQ, installOp{add: u.Action == wire.ActionAdd, r: r})
	}
	c.mu.Unlock()
	if changed {
		c.wakeInstaller()
	}
	if c.log.Enabled(context.Background(), slog.LevelDebug) {
		h.log.Debug("update", "action", u.Action, "vni", r.VNI, "prefix", r.Prefix, "nexthop", r.NextHop, "changed", changed)
	}
	return nil
}

// Subscribe subscribes to vni at every server, now and after every
// reconnect. Subscribing twice is harmless.
func (c *Client) Subscribe(ctx context.Context, vni route.VNI) error {
	if !vni.Valid() {
		return fmt.Errorf("%w: %d exceeds 24 bits", ErrInvalidVNI, vni)
	}
	frame, _ := wire.AppendFrame(nil, wire.Subscribe{VNI: vni})
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.subs[vni]; ok {
		return nil
	}
	c.subs[vni] = struct{}{}
	c.sendLocked(frame, 0)
	return nil
}

// Unsubscribe stops the subscription to vni and withdraws the routes
// received for it from the Installer.
func (c *Client) Unsubscribe(ctx context.Context, vni route.VNI) error {
	if !vni.Valid() {
		return fmt.Errorf("%w: %d exceeds 24 bits", ErrInvalidVNI, vni)
	}
	frame, _ := wire.AppendFrame(nil, wire.Unsubscribe{VNI: vni})
	c.mu.Lock()
	if _, ok := c.subs[vni]; !ok {
		c.mu.Unlock()
		return nil
	}
	delete(c.subs, vni)
	c.sendLocked(frame, 0)
	removed := 0
	for _, r := range c.recv.Routes(vni) {
		for _, id := range c.recv.Holders(r) {
			c.recv.Remove(r, id)
		}
		c.installQ = append(c.installQ, installOp{add: false, r: r})
		removed++
	}
	c.mu.Unlock()
	if removed > 0 {
		c.wakeInstaller()
	}
	return nil
}

// Announce announces r to every server, now and after every reconnect.
// Announcing a route twice is harmless.
//
// Announce returns nil once it has accepted r: r is queued to every
// established session and is sent to every server whose session starts
// later, until Withdraw. Nothing that happens to ctx afterwards undoes that.
// ctx only bounds the wait when a server's send queue is full
// (back-pressure): Announce then returns nil when ctx is done, the route
// being accepted all the same. Announce accepts nothing and returns an
// error for an invalid route, when ctx is already done, and with ErrClosed
// once the client is stopping (Shutdown, StopForRestart, or the end of
// Run's context).
func (c *Client) Announce(ctx context.Context, r route.Route) error {
	return c.changeAnnouncement(ctx, r, true)
}

// Withdraw withdraws a route announced with Announce. Its guarantee is
// Announce's: when it returns nil the REMOVE is queued to every established
// session, and a later clean stop (Shutdown or the end of Run's context)
// sends it before it closes the sessions, whatever happens to ctx. It
// returns an error, withdrawing nothing, for an invalid route, when ctx is
// already done, and with ErrClosed once the client is stopping; the clean
// stop itself withdraws every route still announced.
func (c *Client) Withdraw(ctx context.Context, r route.Route) error {
	return c.changeAnnouncement(ctx, r, false)
}

func (c *Client) changeAnnouncement(ctx context.Context, r route.Route, add bool) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRoute, err)
	}
	if err := r.NextHop.ValidateUnderlay(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRoute, err)
	}
	action := wire.ActionAdd
	if !add {
		action = wire.ActionRemove
	}
	frame := wire.AppendUpdate(nil, action, r)
	key := vniPrefix{r.VNI, r.Prefix}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	if c.stopped || c.stopRequested {
		c.mu.Unlock()
		return ErrClosed
	}
	_, exists := c.announced[r]
	if exists == add {
		c.mu.Unlock()
		return nil
	}
	if add {
		c.announced[r] = struct{}{}
		c.own[key]++
	} else {
		delete(c.announced, r)
		if c.own[key]--; c.own[key] == 0 {
			delete(c.own, key)
		}
	}
	congested := c.sendLocked(frame, 1)
	c.mu.Unlock()
	for _, s := range congested {
		s.WaitWritable(ctx, time.Minute)
	}
	return nil // accepted, whatever ctx does now
}

// sendLocked sends frame on every established session and returns those
// that are congested. c.mu is held.
func (c *Client) sendLocked(frame []byte, updates int) []*session.Session {
	var congested []*session.Session
	for _, cc := range c.conns {
		if !cc.established {
			continue
		}
		if s := cc.sess.Load(); s != nil && s.Send(frame, updates) {
			congested = append(congested, s)
		}
	}
	return congested
}
