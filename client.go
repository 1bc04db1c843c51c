package metalbond

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
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
	// client announces to and subscribes at each of them.
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
	// the server negotiated graceful restart. Default 60s; negative turns
	// the extensions off (the client then speaks plain v1, byte for byte).
	GracefulRestart time.Duration
	// Name identifies this client to servers across reconnects and
	// restarts (for graceful restart). Default the host name.
	Name string
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

type installOp struct {
	add    bool
	synced bool // call SyncNotifier.Synced instead of changing a route
	r      route.Route
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
}

// staleSession is an ended session whose routes the client keeps.
type staleSession struct {
	id     routetable.SourceID
	timer  *time.Timer
	synced map[route.VNI]bool // VNIs re-synced by a later session
}

// NewClient returns a Client configured by cfg. It checks the configuration
// but does not connect: call Run.
func NewClient(cfg ClientConfig) (*Client, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("no servers configured")
	}
	for _, s := range cfg.Servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return nil, fmt.Errorf("server address %q: %w", s, err)
		}
	}
	if cfg.Keepalive < 0 || (cfg.Keepalive > 0 && cfg.Keepalive < time.Second) {
		return nil, fmt.Errorf("keepalive %v: must be at least 1s", cfg.Keepalive)
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
		cfg.Name, _ = os.Hostname()
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
	}
	for _, addr := range cfg.Servers {
		cc := &clientConn{addr: addr}
		cc.state.Store(uint32(session.StateConnecting))
		c.conns = append(c.conns, cc)
	}
	return c, nil
}

// Run connects to every server and keeps the sessions up, reconnecting with
// a jittered backoff, until ctx is done. It then closes the sessions and
// returns nil. Routes already given to the Installer are left there (the
// kernel installer removes its routes on request, see its Cleanup).
// Run may be called only once.
func (c *Client) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return errors.New("client already running")
	}
	c.running = true
	c.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.installLoop(ctx)
	}()
	for _, cc := range c.conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.connLoop(ctx, cc)
		}()
	}
	<-ctx.Done()
	wg.Wait()
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
			if ss.timer.Stop() {
				c.staleTimers.Done()
			}
		}
		cc.stale = nil
	}
	c.mu.Unlock()
	c.staleTimers.Wait() // callbacks already under way find nothing to do
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

// connLoop keeps one server's session up until ctx is done.
func (c *Client) connLoop(ctx context.Context, cc *clientConn) {
	log := c.log.With("peer", cc.addr)
	delay := c.cfg.RetryMin
	for ctx.Err() == nil {
		cc.state.Store(uint32(session.StateConnecting))
		conn, err := c.cfg.Dial(ctx, "tcp", cc.addr)
		if err == nil {
			id := routetable.SourceID(c.nextID.Add(1))
			cc.id.Store(uint32(id))
			h := &clientHandler{c: c, cc: cc, id: id, log: log}
			scfg := session.Config{
				Role:         session.RoleClient,
				Keepalive:    c.cfg.Keepalive,
				WriteTimeout: c.cfg.WriteTimeout,
				MaxQueue:     c.cfg.MaxQueue,
				HighWater:    c.cfg.HighWater,
				Logger:       log,
				NoPaceV1:     c.cfg.NoPaceV1,
			}
			if c.cfg.GracefulRestart > 0 {
				scfg.Features = wire.FeatureEndOfSync | wire.FeatureGracefulRestart
				scfg.GracefulRestart = c.cfg.GracefulRestart
				scfg.Name = c.cfg.Name
			}
			sess := session.New(conn, scfg, h)
			cc.sess.Store(sess)
			log.Debug("connected", "local", conn.LocalAddr().String())
			err = sess.Run(ctx)
			wasUp := c.sessionDown(cc, id, c.keepTime(sess))
			cc.sess.Store(nil)
			if ctx.Err() != nil {
				break
			}
			log.Info("session down", "err", err)
			if wasUp {
				delay = c.cfg.RetryMin
			}
		} else if ctx.Err() == nil {
			log.Warn("connect failed", "err", err)
		}
		cc.state.Store(uint32(session.StateRetry))
		// Full jitter over [delay/2, delay*3/2) spreads a fleet's reconnects.
		wait := delay/2 + rand.N(delay)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
		delay = min(2*delay, c.cfg.RetryMax)
	}
	cc.state.Store(uint32(session.StateClosed))
}

// keepTime is how long to keep the routes of sess after it ended.
func (c *Client) keepTime(sess *session.Session) time.Duration {
	if c.cfg.GracePeriod > 0 {
		return c.cfg.GracePeriod
	}
	if sess.Negotiated()&wire.FeatureGracefulRestart != 0 {
		h, _ := sess.PeerHello()
		return min(time.Duration(h.GracefulRestart)*time.Second, c.cfg.GracefulRestart)
	}
	return 0
}

// sessionDown forgets a session that ended and withdraws the routes it
// delivered: now if another server's session has a complete view, or else,
// to ride out a restart, when a later session has re-synced (END_OF_SYNC)
// or keep has passed. It reports whether the session had been established.
func (c *Client) sessionDown(cc *clientConn, id routetable.SourceID, keep time.Duration) bool {
	c.mu.Lock()
	wasUp := cc.established
	cc.established = false
	// Another server's complete, current view makes this session's routes
	// redundant: there is nothing to ride out.
	for _, o := range c.conns {
		if o != cc && c.fullySynced(o) {
			keep = 0
		}
	}
	if keep > 0 && wasUp {
		ss := &staleSession{id: id, synced: make(map[route.VNI]bool)}
		cc.stale = append(cc.stale, ss)
		c.staleTimers.Add(1)
		ss.timer = time.AfterFunc(keep, func() {
			defer c.staleTimers.Done()
			c.mu.Lock()
			found := cc.removeStale(ss)
			c.mu.Unlock()
			if found {
				c.dropSource(id)
			}
		})
		c.mu.Unlock()
		return wasUp
	}
	c.mu.Unlock()
	c.dropSource(id)
	return wasUp
}

// removeStale removes ss from cc.stale and reports whether it was there.
// Client.mu is held.
func (cc *clientConn) removeStale(ss *staleSession) bool {
	i := slices.Index(cc.stale, ss)
	if i < 0 {
		return false
	}
	cc.stale = slices.Delete(cc.stale, i, i+1)
	return true
}

// synced is called when the current session of cc has received the whole
// table of vni (END_OF_SYNC). Every server has the same table, so routes of
// vni that ended sessions (of any server) held and this view lacks are
// withdrawn now; routes in both are kept without a flap.
func (c *Client) synced(cc *clientConn, vni route.VNI) {
	type staleRef struct {
		cc *clientConn
		ss *staleSession
	}
	c.mu.Lock()
	cc.syncedVNIs[vni] = true
	var done []staleRef
	n := 0
	var routes []route.Route
	for _, o := range c.conns {
		for _, ss := range o.stale {
			if routes == nil {
				routes = c.recv.Routes(vni)
			}
			for _, r := range routes {
				if slices.Contains(c.recv.Holders(r), ss.id) && c.recv.Remove(r, ss.id) {
					c.installQ = append(c.installQ, installOp{add: false, r: r})
					n++
				}
			}
			ss.synced[vni] = true
			all := true
			for v := range c.subs {
				all = all && ss.synced[v]
			}
			if all {
				done = append(done, staleRef{o, ss})
			}
		}
	}
	for _, d := range done {
		if d.ss.timer.Stop() {
			c.staleTimers.Done()
		}
		d.cc.removeStale(d.ss)
	}
	notify := !c.everSynced && c.fullySynced(cc)
	if notify {
		c.everSynced = true
		c.installQ = append(c.installQ, installOp{synced: true})
	}
	c.mu.Unlock()
	for _, d := range done {
		c.dropSource(d.ss.id)
	}
	if n > 0 {
		c.log.Info("resynced", "peer", cc.addr, "vni", vni, "stale_routes_withdrawn", n)
	}
	if n > 0 || notify {
		c.wakeInstaller()
	}
}

// fullySynced reports whether the current session of cc is established
// and has received the whole table of every subscribed VNI. Client.mu is
// held.
func (c *Client) fullySynced(cc *clientConn) bool {
	if !cc.established {
		return false
	}
	for v := range c.subs {
		if !cc.syncedVNIs[v] {
			return false
		}
	}
	return true
}

// dropSource withdraws every received route whose last holder was id.
func (c *Client) dropSource(id routetable.SourceID) {
	c.mu.Lock()
	n := 0
	c.recv.RemoveSource(id, func(r route.Route) {
		c.installQ = append(c.installQ, installOp{add: false, r: r})
		n++
	})
	c.mu.Unlock()
	if n > 0 {
		c.log.Info("withdrew routes of ended session", "session", id, "routes", n)
		c.wakeInstaller()
	}
}

func (c *Client) wakeInstaller() {
	select {
	case c.installWake <- struct{}{}:
	default:
	}
}

// installLoop calls the Installer, one change at a time, in order.
func (c *Client) installLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.installWake:
		}
		c.mu.Lock()
		ops := c.installQ
		c.installQ = nil
		c.mu.Unlock()
		for _, op := range ops {
			var err error
			if op.synced {
				if n, ok := c.cfg.Installer.(SyncNotifier); ok {
					n.Synced()
				}
				continue
			}
			if op.add {
				err = c.cfg.Installer.AddRoute(op.r)
				c.stats.installed.Add(1)
			} else {
				err = c.cfg.Installer.RemoveRoute(op.r)
				c.stats.installed.Add(-1)
			}
			if err != nil {
				c.stats.installErrors.Add(1)
				c.log.Error("route installer failed", "add", op.add, "route", op.r.String(), "err", err)
			}
		}
	}
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
// Announcing a route twice is harmless. When a server's send queue is full,
// Announce waits for it to drain (back-pressure) until ctx is done.
func (c *Client) Announce(ctx context.Context, r route.Route) error {
	return c.changeAnnouncement(ctx, r, true)
}

// Withdraw withdraws a route announced with Announce.
func (c *Client) Withdraw(ctx context.Context, r route.Route) error {
	return c.changeAnnouncement(ctx, r, false)
}

func (c *Client) changeAnnouncement(ctx context.Context, r route.Route, add bool) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRoute, err)
	}
	action := wire.ActionAdd
	if !add {
		action = wire.ActionRemove
	}
	frame := wire.AppendUpdate(nil, action, r)
	key := vniPrefix{r.VNI, r.Prefix}
	c.mu.Lock()
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
	return ctx.Err()
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

// Subscriptions returns the subscribed VNIs, sorted.
func (c *Client) Subscriptions() []route.VNI {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]route.VNI, 0, len(c.subs))
	for v := range c.subs {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// Announcements returns the announced routes, sorted.
func (c *Client) Announcements() []route.Route {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]route.Route, 0, len(c.announced))
	for r := range c.announced {
		out = append(out, r)
	}
	slices.SortFunc(out, route.Route.Compare)
	return out
}

// VNIs summarises the received routes by VNI, sorted.
func (c *Client) VNIs() []VNIInfo {
	var out []VNIInfo
	for _, vni := range c.recv.VNIs() {
		rs := c.recv.Routes(vni)
		prefixes := 0
		for i := range rs {
			if i == 0 || rs[i].Prefix != rs[i-1].Prefix {
				prefixes++
			}
		}
		out = append(out, VNIInfo{VNI: vni, Routes: len(rs), Prefixes: prefixes})
	}
	return out
}

// Routes returns the routes received for vni with the sessions that
// delivered each (see PeerInfo.ID), sorted.
func (c *Client) Routes(vni route.VNI) []RouteInfo {
	rs := c.recv.Routes(vni)
	out := make([]RouteInfo, 0, len(rs))
	for _, r := range rs {
		ri := RouteInfo{Route: r}
		for _, id := range c.recv.Holders(r) {
			ri.Peers = append(ri.Peers, uint32(id))
		}
		out = append(out, ri)
	}
	return out
}

// Peers returns a snapshot of the client's server sessions, in the order of
// ClientConfig.Servers.
func (c *Client) Peers() []PeerInfo {
	subs := c.Subscriptions()
	out := make([]PeerInfo, 0, len(c.conns))
	for _, cc := range c.conns {
		pi := PeerInfo{ID: cc.id.Load(), Remote: cc.addr, Direction: "outbound", Subscriptions: subs}
		if s := cc.sess.Load(); s != nil {
			fillSessionInfo(&pi, s)
		} else {
			pi.State = session.State(cc.state.Load()).String()
		}
		out = append(out, pi)
	}
	return out
}

// ClientStats are counters of a Client.
type ClientStats struct {
	// RoutesInstalled is the number of routes currently given to the
	// Installer.
	RoutesInstalled int64
	// InstallErrors counts Installer calls that returned an error.
	InstallErrors uint64
	// LoopsPrevented counts received updates ignored because they are for
	// a prefix this client announces itself.
	LoopsPrevented uint64
}

// Stats returns the client's counters.
func (c *Client) Stats() ClientStats {
	return ClientStats{
		RoutesInstalled: c.stats.installed.Load(),
		InstallErrors:   c.stats.installErrors.Load(),
		LoopsPrevented:  c.stats.loopsPrevented.Load(),
	}
}
