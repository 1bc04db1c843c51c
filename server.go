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

// ServerConfig configures a Server. The zero value is usable: every zero
// field takes the default noted.
type ServerConfig struct {
	// Keepalive is the largest keepalive interval the server agrees to;
	// a client proposing a longer one gets this. Default 5s.
	Keepalive time.Duration
	// WriteTimeout disconnects a peer that accepts no data for this long
	// while data waits for it (a stuck peer). Default 30s.
	WriteTimeout time.Duration
	// MaxQueue is the memory bound of each peer's send queue in bytes;
	// a peer whose queue passes it is disconnected and resyncs when it
	// reconnects. Default 64 MiB.
	MaxQueue int
	// HighWater is the send-queue size above which announcers in the same
	// VNI are slowed down (back-pressure). Default 1 MiB.
	HighWater int
	// NoPaceV1 turns off the pacing of writes to plain v1 peers (peers that
	// advertise no extension), which keeps the deployed v1 reader from ever
	// finding 64 KiB unread (docs/pacing.md). Turn it off only when every
	// plain v1 peer reads at any speed.
	NoPaceV1 bool
	// Logger receives one line per session event, and per-route lines at
	// debug level. Default discards.
	Logger *slog.Logger
	// GracefulRestart is the longest the server keeps the routes of a peer
	// whose session ended, when the peer negotiated graceful restart: the
	// peer asks for a time in its HELLO and gets at most this. When it
	// comes back and has re-announced (END_OF_SYNC), routes it did not
	// re-announce are withdrawn; subscribers see no flap.
	//
	// Zero means DefaultGracefulRestart (60s), not off. To turn graceful
	// restart off, use GracefulRestartOff (any negative value): the
	// command line's --graceful-restart 0 is GracefulRestartOff here.
	GracefulRestart time.Duration
	// SyncDelay holds back END_OF_SYNC markers for this long after the
	// server starts, so that clients reconnecting after a server restart
	// keep their stale routes until the other clients have re-announced
	// theirs.
	//
	// Zero means the default, 10s, not "no delay". To send END_OF_SYNC at
	// once, use NoSyncDelay (any negative value): the command line's
	// --sync-delay 0 is NoSyncDelay here.
	SyncDelay time.Duration
	// Limits bound what peers may make the server hold. Zero fields take
	// the defaults of DefaultLimits; Unlimited turns a limit off.
	Limits Limits
	// Authorizer, if set, decides what each peer may announce and
	// subscribe to. Without one every peer may do everything, as in v1.
	Authorizer Authorizer
	// ObserveFanout, if set, is called with the time from receiving an
	// update to having written it to the last of its subscribers, for a
	// sample of updates (about one in 64). It is called from the writers'
	// goroutines and must be fast.
	ObserveFanout func(time.Duration)
	// Sink, if set, is told about the routes this server's own peers
	// announce (not those of ExternalSources), to replicate them to other
	// servers of a cluster.
	Sink RouteSink
}

// Server is a MetalBond route server: it accepts peers, remembers the routes
// each announces and reflects them to every peer subscribed to the VNI.
//
// A Server is safe for concurrent use. Create it with NewServer and run it
// with Serve; one Server may serve several listeners.
type Server struct {
	cfg ServerConfig
	log *slog.Logger

	mu    sync.RWMutex // guards the following
	vnis  map[route.VNI]*vniState
	peers map[*serverPeer]struct{}
	// closedMessages counts the messages received by sessions that ended,
	// by type, so that totals survive sessions.
	closedMessages [7]uint64

	nextID       atomic.Uint32
	nextExternal atomic.Uint32
	fanoutSeq    atomic.Uint64
	stats        serverCounters
	started      time.Time
	refusals     refusalLog

	staleMu sync.Mutex              // guards stale
	stale   map[string][]*stalePeer // by peer key (name and address), oldest first

	connMu    sync.Mutex // guards conns and connsByIP
	conns     int
	connsByIP map[netip.Addr]int
}

// vniState is one VNI: its routes and its subscribers, under one lock so
// that a table change and its fan-out, or a subscription and its initial
// table, are atomic with respect to each other. That is what gives every
// subscriber each route exactly once.
type vniState struct {
	mu     sync.Mutex // guards the following
	routes *routetable.Shard
	subs   []*serverPeer
	// dead is set when the state was dropped from Server.vnis for being
	// empty; whoever finds it set after locking fetches the VNI again.
	dead bool
	// table is the VNI's routes encoded as ADD frames (tableN of them),
	// queued by reference to every subscriber that holds no route here;
	// nil until a subscription needs it, and again after any change
	// (fanoutN, through which every change goes).
	table  []byte
	tableN int
}

type serverCounters struct {
	accepted          atomic.Uint64
	handshakeFailures atomic.Uint64
	protocolErrors    [numProtocolErrorKinds]atomic.Uint64 // by protocolErrorKind
	slowPeersDropped  atomic.Uint64
	authRefusedConns  atomic.Uint64
	authRefusedMsgs   atomic.Uint64
	updatesReceived   atomic.Uint64
	updatesSent       atomic.Uint64
}

// NewServer returns a Server configured by cfg.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Keepalive == 0 {
		cfg.Keepalive = DefaultKeepalive
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.GracefulRestart == 0 {
		cfg.GracefulRestart = DefaultGracefulRestart
	}
	if cfg.SyncDelay == 0 {
		cfg.SyncDelay = 10 * time.Second
	}
	cfg.Limits.setDefaults()
	return &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		vnis:      make(map[route.VNI]*vniState),
		peers:     make(map[*serverPeer]struct{}),
		started:   time.Now(),
		stale:     make(map[string][]*stalePeer),
		connsByIP: make(map[netip.Addr]int),
	}, nil
}

// DefaultKeepalive is the keepalive interval used when none is configured.
const DefaultKeepalive = 5 * time.Second

// DefaultGracefulRestart is how long routes of a vanished peer are kept by
// default when both sides negotiated graceful restart. A zero
// ServerConfig.GracefulRestart or ClientConfig.GracefulRestart means this.
const DefaultGracefulRestart = 60 * time.Second

// GracefulRestartOff, as ServerConfig.GracefulRestart or
// ClientConfig.GracefulRestart, turns graceful restart off; any negative
// value does. (Zero there means DefaultGracefulRestart.)
const GracefulRestartOff time.Duration = -1

// NoSyncDelay, as ServerConfig.SyncDelay, sends END_OF_SYNC without delay;
// any negative value does. (Zero there means the default, 10s.)
const NoSyncDelay time.Duration = -1

// DefaultPort is the TCP port MetalBond listens on by default.
const DefaultPort = 4711

// ListenAndServe listens on the TCP address addr and calls Serve.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(ctx, ln)
}

// Serve accepts peers on ln until ctx is done, then closes ln and every
// session it accepted, waits for them to finish and returns nil. It returns
// an error only if ln fails permanently (after closing its sessions too).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	s.log.Info("listening", "addr", ln.Addr().String())

	var wg sync.WaitGroup
	defer wg.Wait()
	backoff := 5 * time.Millisecond
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporaryAcceptError(err) {
				s.log.Warn("accept failed, retrying", "err", err, "backoff", backoff)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
					return nil
				}
				backoff = min(2*backoff, time.Second)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		backoff = 5 * time.Millisecond
		s.stats.accepted.Add(1)
		release, err := s.admit(conn)
		if err != nil {
			conn.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer release()
			s.servePeer(ctx, conn)
		}()
	}
}

// serverPeer is the server's side of one session.
type serverPeer struct {
	srv  *Server
	id   routetable.SourceID
	sess *session.Session
	log  *slog.Logger

	perms Permissions // nil: everything allowed

	mu        sync.Mutex // guards the following (written by the reader goroutine, read by snapshots)
	subs      map[route.VNI]*vniState
	announced map[route.VNI]*vniState // VNIs it may hold routes in

	// Owned by the session's reader goroutine.
	congested []*session.Session
	batchVNI  *vniState // locked while a batch is pending
	batch     []byte    // encoded UPDATEs of the batch, not yet fanned out
	batchN    int       // UPDATEs in batch
	routes    int       // routes p holds, counted when Limits.MaxRoutesPerPeer is set
	stale     staleShare
	logs      logLimiter // rate-limits the log lines p's messages trigger
}

func (s *Server) servePeer(ctx context.Context, conn net.Conn) {
	accepted := time.Now()
	p := &serverPeer{
		srv:       s,
		id:        routetable.SourceID(s.nextID.Add(1)),
		log:       s.log.With("peer", conn.RemoteAddr().String()),
		subs:      make(map[route.VNI]*vniState),
		announced: make(map[route.VNI]*vniState),
	}
	features := wire.FeatureEndOfSync
	if s.cfg.GracefulRestart > 0 {
		features |= wire.FeatureGracefulRestart
	}
	p.sess = session.New(conn, session.Config{
		Role:             session.RoleServer,
		Keepalive:        s.cfg.Keepalive,
		HandshakeTimeout: s.handshakeTimeout(),
		Accepted:         accepted, // the timeout bounds TLS and v1 together
		WriteTimeout:     s.cfg.WriteTimeout,
		MaxQueue:         s.cfg.MaxQueue,
		HighWater:        s.cfg.HighWater,
		Logger:           p.log,
		Features:         features,
		GracefulRestart:  s.cfg.GracefulRestart,
		NoPaceV1:         s.cfg.NoPaceV1,
	}, p)
	if s.cfg.Authorizer != nil {
		perms, err := s.authorize(ctx, conn)
		if err != nil {
			s.stats.authRefusedConns.Add(1)
			p.log.Warn("session refused", "err", err)
			conn.Close()
			return
		}
		p.perms = perms
		p.log = p.log.With("identity", perms.Identity())
	}
	s.mu.Lock()
	s.peers[p] = struct{}{}
	s.mu.Unlock()

	p.log.Debug("session accepted")
	err := p.sess.Run(ctx)
	established := !p.sess.Info().EstablishedAt.IsZero()
	switch keep := p.gracefulRestartTime(); {
	case ctx.Err() != nil:
		// The server is shutting down: its table goes with it. Telling the
		// subscribers still connected that every route is gone would only
		// make them flap their kernels across a restart.
		p.dropSubscriptions()
	case keep > 0:
		p.dropSubscriptions()
		s.keepStale(p, keep)
	default:
		p.withdrawAll()
	}

	in := p.sess.Info()
	s.mu.Lock()
	delete(s.peers, p)
	for t, n := range in.Messages {
		s.closedMessages[t] += n
	}
	s.mu.Unlock()

	switch {
	case ctx.Err() != nil:
		p.log.Info("session closed", "reason", "server shutting down")
	default:
		s.countClose(err, established)
		p.log.Info("session down", "err", err)
	}
}

// authorize completes a TLS handshake, if any, within the handshake
// timeout and asks the Authorizer.
func (s *Server) authorize(ctx context.Context, conn net.Conn) (Permissions, error) {
	if tc, ok := conn.(interface {
		HandshakeContext(context.Context) error
	}); ok {
		hctx, cancel := context.WithTimeout(ctx, s.handshakeTimeout())
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
	}
	return s.cfg.Authorizer.Authorize(conn)
}

// countClose classifies why a session ended for the statistics.
func (s *Server) countClose(err error, established bool) {
	switch {
	case errors.Is(err, session.ErrStalled), errors.Is(err, session.ErrQueueFull), errors.Is(err, session.ErrKeepaliveFlood):
		s.stats.slowPeersDropped.Add(1)
	case !established && (errors.Is(err, session.ErrHandshakeTimeout) || isProtocolError(err)):
		s.stats.handshakeFailures.Add(1)
	}
	if k, ok := protocolErrorKindOf(err); ok {
		s.stats.protocolErrors[k].Add(1)
	}
}

// Established implements session.Handler.
func (p *serverPeer) Established(s *session.Session) {
	in := s.Info()
	p.log.Info("session established", "keepalive", in.Keepalive)
	p.srv.warnSharedName(p)
}

// Handle implements session.Handler: it applies one message of the peer.
func (p *serverPeer) Handle(_ *session.Session, m wire.Message) error {
	p.flush()
	switch m := m.(type) {
	case wire.Subscribe:
		if p.perms != nil && !p.perms.MaySubscribe(m.VNI) {
			p.srv.stats.authRefusedMsgs.Add(1)
			p.logs.log(p.log, slog.LevelWarn, logPolicySubscribe, "subscription refused by policy", "vni", m.VNI)
			return nil
		}
		if max := p.srv.cfg.Limits.MaxSubscriptionsPerPeer; max > 0 && p.subscriptions() >= max {
			p.refuse(limitSubscriptionsPerPeer, "vni", m.VNI)
			return nil
		}
		p.subscribe(m.VNI)
	case wire.Unsubscribe:
		p.unsubscribe(m.VNI)
	case wire.EndOfSync:
		if m.Announcements {
			p.srv.releaseStale(p)
			p.stale = staleShare{loaded: true}
		}
	}
	return nil
}

func (p *serverPeer) subscriptions() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.subs)
}

// HandleUpdate implements session.Handler.
func (p *serverPeer) HandleUpdate(_ *session.Session, u *wire.Update) error {
	p.srv.stats.updatesReceived.Add(1)
	if err := u.Route.NextHop.ValidateUnderlay(); err != nil {
		p.flush()
		p.refuse(refusedNexthopNotIPv6, "vni", u.Route.VNI, "prefix", u.Route.Prefix, "nexthop", u.Route.NextHop.Address)
		return nil
	}
	if p.perms != nil && !p.perms.MayAnnounce(u.Route.VNI) {
		p.flush()
		p.srv.stats.authRefusedMsgs.Add(1)
		p.logs.log(p.log, slog.LevelWarn, logPolicyUpdate, "update refused by policy", "vni", u.Route.VNI, "prefix", u.Route.Prefix)
		return nil
	}
	p.update(u.Action, u.Route)
	return nil
}

// vni returns the state of vni, creating it if needed.
func (s *Server) vni(vni route.VNI) *vniState {
	s.mu.RLock()
	st := s.vnis[vni]
	s.mu.RUnlock()
	if st != nil {
		return st
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st = s.vnis[vni]; st == nil {
		st = &vniState{routes: routetable.NewShard(vni)}
		s.vnis[vni] = st
	}
	return st
}

// lockVNI returns the state of vni, locked and alive.
func (s *Server) lockVNI(vni route.VNI) *vniState {
	for {
		st := s.vni(vni)
		st.mu.Lock()
		if !st.dead {
			return st
		}
		st.mu.Unlock()
	}
}

// dropIfEmpty forgets the state of vni if it holds no routes and has no
// subscribers, so that VNIs named once do not cost memory forever. It must
// be called with no VNI lock held.
func (s *Server) dropIfEmpty(vni route.VNI, st *vniState) {
	s.mu.Lock()
	st.mu.Lock()
	if !st.dead && st.routes.Len() == 0 && len(st.subs) == 0 && s.vnis[vni] == st {
		delete(s.vnis, vni)
		st.dead = true
	}
	st.mu.Unlock()
	s.mu.Unlock()
}

func (p *serverPeer) subscribe(vni route.VNI) {
	p.mu.Lock()
	_, dup := p.subs[vni]
	p.mu.Unlock()
	if dup {
		p.log.Debug("duplicate subscription ignored", "vni", vni)
		return
	}
	eos := p.sess.Negotiated()&wire.FeatureEndOfSync != 0
	delay := p.srv.cfg.SyncDelay - time.Since(p.srv.started)
	st := p.srv.lockVNI(vni)
	st.subs = append(st.subs, p)
	var n int
	if st.routes.SourceLen(p.id) == 0 {
		// Nothing is held back from p (see encodeTable): it gets the
		// table encoded once for all such subscribers.
		if st.table == nil {
			st.table, st.tableN = st.encodeTable(vni, p, false)
		}
		n = st.tableN
		p.sess.SendShared(st.table, n)
	} else {
		var b []byte
		b, n = st.encodeTable(vni, p, true)
		p.sess.SendShared(b, n)
	}
	if eos && delay <= 0 {
		frame, _ := wire.AppendFrame(nil, wire.EndOfSync{VNI: vni})
		p.sess.Send(frame, 0)
	}
	st.mu.Unlock()
	if eos && delay > 0 {
		// Right after a restart the table is still filling up as peers
		// come back: promise completeness only once they have had time.
		time.AfterFunc(delay, func() {
			frame, _ := wire.AppendFrame(nil, wire.EndOfSync{VNI: vni})
			p.sess.Send(frame, 0)
		})
	}
	p.mu.Lock()
	p.subs[vni] = st
	p.mu.Unlock()
	p.srv.stats.updatesSent.Add(uint64(n))
	p.logs.log(p.log, slog.LevelInfo, logSubscribed, "subscribed", "vni", vni, "routes", n)
}

// encodeTable encodes the routes of st as ADD frames and returns them with
// their number. With exclude, NAT routes that p announced are left out:
// they are not sent back to their announcer. st.mu is held.
func (st *vniState) encodeTable(vni route.VNI, p *serverPeer, exclude bool) ([]byte, int) {
	var b []byte
	n := 0
	st.routes.Range(func(pfx netip.Prefix, nh route.NextHop, h routetable.Holders) bool {
		r := route.Route{VNI: vni, Prefix: pfx, NextHop: nh}
		if b == nil {
			// One allocation for the whole table, from the size of the
			// first frame, instead of doubling as it fills.
			size := len(wire.AppendUpdate(nil, wire.ActionAdd, r))
			b = make([]byte, 0, st.routes.Len()*(size+size/16))
		}
		if exclude && nh.Type == route.NextHopNAT && h.Has(p.id) {
			return true
		}
		b = wire.AppendUpdate(b, wire.ActionAdd, r)
		n++
		return true
	})
	return b, n
}

func (p *serverPeer) unsubscribe(vni route.VNI) {
	p.mu.Lock()
	st := p.subs[vni]
	delete(p.subs, vni)
	p.mu.Unlock()
	if st == nil {
		p.log.Debug("unsubscribe without subscription ignored", "vni", vni)
		return
	}
	st.mu.Lock()
	st.removeSub(p)
	st.mu.Unlock()
	p.srv.dropIfEmpty(vni, st)
	p.logs.log(p.log, slog.LevelInfo, logUnsubscribed, "unsubscribed", "vni", vni)
}

func (st *vniState) removeSub(p *serverPeer) {
	if i := slices.Index(st.subs, p); i >= 0 {
		st.subs[i] = st.subs[len(st.subs)-1]
		st.subs[len(st.subs)-1] = nil
		st.subs = st.subs[:len(st.subs)-1]
	}
}

func (p *serverPeer) update(a wire.Action, r route.Route) {
	st, ok := p.announced[r.VNI] // read by the only writer: no lock needed
	if !ok && !p.mayEnterVNI(a, r) {
		return // refused, or a no-op: no state is created for it
	}
	if ok && p.batchVNI != st {
		p.flush()
		st.mu.Lock()
		if st.dead { // dropped while empty: fetch it again
			st.mu.Unlock()
			ok = false
		} else {
			p.batchVNI = st
		}
	}
	if !ok {
		p.flush() // no VNI lock may be held while taking the server's
		st = p.srv.lockVNI(r.VNI)
		p.batchVNI = st
		p.mu.Lock()
		p.announced[r.VNI] = st
		p.mu.Unlock()
	}
	sink := p.srv.cfg.Sink
	lim := &p.srv.cfg.Limits
	// Updates are applied in batches (all the peer's messages that one
	// read brought, up to maxBatch bytes of fan-out): the VNI stays locked
	// from the batch's first update until flush fans the batch out, so a
	// table change and its fan-out stay atomic with respect to
	// subscriptions, and each subscriber gets one queue operation per
	// batch instead of one per route.
	if lim.MaxRoutesPerPeer > 0 || lim.MaxRoutesPerVNI > 0 {
		if kind, allowed := p.checkRouteLimits(st, a, r); !allowed {
			p.flush()
			p.refuse(kind, "vni", r.VNI, "prefix", r.Prefix)
			p.leaveVNIIfEmpty(r.VNI, st)
			return
		}
	}
	var changed, local bool
	if a == wire.ActionAdd {
		// The route becomes local when p is the first of our peers to hold it.
		local = sink != nil && !st.hasLocalHolder(r.Prefix, r.NextHop)
		changed = st.routes.Add(r.Prefix, r.NextHop, p.id)
	} else {
		held := sink != nil && st.routes.Holders(r.Prefix, r.NextHop).Has(p.id)
		changed = st.routes.Remove(r.Prefix, r.NextHop, p.id)
		local = held && !st.hasLocalHolder(r.Prefix, r.NextHop)
	}
	if changed {
		p.batch = wire.AppendUpdate(p.batch, a, r)
		p.batchN++
	}
	if local {
		sink.LocalRoute(r, a == wire.ActionAdd)
	}
	if a == wire.ActionRemove && changed && st.routes.SourceLen(p.id) == 0 {
		p.flush()
		p.leaveVNIIfEmpty(r.VNI, st)
	}
	if p.srv.log.Enabled(context.Background(), slog.LevelDebug) {
		p.flush() // no logging under the VNI's lock
		p.log.Debug("update", "action", a, "vni", r.VNI, "prefix", r.Prefix, "nexthop", r.NextHop, "changed", changed)
	}
	if len(p.batch) >= maxBatch {
		p.flush()
	}
}

// maxBatch bounds a batch of updates in bytes, and so how long one
// announcer keeps a VNI locked (about a millisecond).
const maxBatch = 64 << 10

// flush fans the pending batch out, unlocks its VNI and applies
// back-pressure. It is called by the reader goroutine only.
func (p *serverPeer) flush() {
	st := p.batchVNI
	if st == nil {
		return
	}
	if p.batchN > 0 {
		p.congested = p.srv.fanoutN(st, p.batch, p.batchN, p, p.congested)
	}
	st.mu.Unlock()
	p.batchVNI, p.batch, p.batchN = nil, p.batch[:0], 0
	p.congested = applyBackPressure(p.congested)
}

// EndBatch implements session.BatchHandler: the peer has nothing more
// buffered, so the batch goes out now.
func (p *serverPeer) EndBatch(*session.Session) { p.flush() }

// fanout queues frame, one UPDATE, to every subscriber of st except
// except, and appends those whose queues are congested to congested.
// st.mu is held.
func (s *Server) fanout(st *vniState, frame []byte, except *serverPeer, congested []*session.Session) []*session.Session {
	return s.fanoutN(st, frame, 1, except, congested)
}

// fanoutN is fanout for frames holding updates UPDATEs. Every change of a
// VNI's routes goes through it.
func (s *Server) fanoutN(st *vniState, frames []byte, updates int, except *serverPeer, congested []*session.Session) []*session.Session {
	st.table, st.tableN = nil, 0
	send := (*session.Session).Send
	if len(frames) >= shareMin && len(st.subs) > 2 {
		// One copy that every subscriber's queue refers to, rather than
		// one copy per subscriber.
		frames = slices.Clone(frames)
		send = (*session.Session).SendShared
	}
	n := 0
	for _, sub := range st.subs {
		if sub == except {
			continue
		}
		if send(sub.sess, frames, updates) {
			congested = append(congested, sub.sess)
		}
		n++
	}
	s.stats.updatesSent.Add(uint64(n * updates))
	if obs := s.cfg.ObserveFanout; obs != nil && n > 0 {
		// One sample per fanoutSample updates: a batch may hold several.
		seq := s.fanoutSeq.Add(uint64(updates))
		for k := seq/fanoutSample - (seq-uint64(updates))/fanoutSample; k > 0; k-- {
			t := session.NewTracker(n, obs)
			for _, sub := range st.subs {
				if sub != except && !sub.sess.Track(t) {
					t.Done() // a closed session does not hold the measurement up
				}
			}
		}
	}
	return congested
}

// shareMin is the size from which a fan-out batch is queued by reference
// rather than copied into each subscriber's queue.
const shareMin = 2 << 10

// fanoutSample is the sampling period of ServerConfig.ObserveFanout.
const fanoutSample = 64

// applyBackPressure waits for subscribers whose queues passed the high-water
// mark to drain, which slows the producer (an announcing peer, through TCP
// flow control) down to what they can take instead of losing anything. The
// wait is bounded so that the producer's keepalives keep being answered,
// and stuck subscribers are not waited for at all: their write timeout
// disconnects them. It returns congested emptied for reuse.
func applyBackPressure(congested []*session.Session) []*session.Session {
	for i, sess := range congested {
		sess.WaitWritable(context.Background(), time.Second)
		congested[i] = nil
	}
	return congested[:0]
}

// withdrawAll removes every route of p and its subscriptions after its
// session ended.
func (p *serverPeer) withdrawAll() {
	p.dropSubscriptions()
	p.mu.Lock()
	announced := p.announced
	p.announced = map[route.VNI]*vniState{}
	p.mu.Unlock()
	p.srv.withdrawSource(p.id, announced, p, p.log)
}

// dropSubscriptions removes p from the subscribers of every VNI.
func (p *serverPeer) dropSubscriptions() {
	p.mu.Lock()
	subs := p.subs
	p.subs = map[route.VNI]*vniState{}
	p.mu.Unlock()
	for vni, st := range subs {
		st.mu.Lock()
		st.removeSub(p)
		st.mu.Unlock()
		p.srv.dropIfEmpty(vni, st)
	}
}

// withdrawSource removes every route that source id holds in the given
// VNIs, telling subscribers (except `except`) about routes that vanish.
func (s *Server) withdrawSource(id routetable.SourceID, vnis map[route.VNI]*vniState, except *serverPeer, log *slog.Logger) {
	var frame []byte
	var congested []*session.Session
	withdrawn, inVNIs := 0, 0
	for vni, st := range vnis {
		n := 0
		st.mu.Lock()
		var held []route.Route
		if s.cfg.Sink != nil && isLocalSource(id) {
			st.routes.RangeSource(id, func(pfx netip.Prefix, nh route.NextHop) bool {
				held = append(held, route.Route{VNI: vni, Prefix: pfx, NextHop: nh})
				return true
			})
		}
		st.routes.RemoveSource(id, func(pfx netip.Prefix, nh route.NextHop) {
			frame = wire.AppendUpdate(frame[:0], wire.ActionRemove, route.Route{VNI: vni, Prefix: pfx, NextHop: nh})
			congested = s.fanout(st, frame, except, congested)
			n++
		})
		for _, r := range held {
			if !st.hasLocalHolder(r.Prefix, r.NextHop) {
				s.cfg.Sink.LocalRoute(r, false)
			}
		}
		st.mu.Unlock()
		s.dropIfEmpty(vni, st)
		if n > 0 {
			withdrawn, inVNIs = withdrawn+n, inVNIs+1
		}
		congested = applyBackPressure(congested)
	}
	if withdrawn > 0 {
		log.Info("withdrew routes", "routes", withdrawn, "vnis", inVNIs)
	}
}
