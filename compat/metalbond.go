package compat

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/route"
)

// Config configures a MetalBond. The zero value is usable.
type Config struct {
	// KeepaliveInterval is the keepalive interval in seconds: proposed to
	// the servers of AddPeer, and the longest a StartServer server agrees
	// to. Zero means 5.
	KeepaliveInterval uint32

	// The fields below are not in the existing library; leaving them zero
	// gives its behaviour.

	// Logger receives session events. Default slog.Default().
	Logger *slog.Logger
	// Name identifies this participant to servers across reconnects and
	// restarts, for graceful restart. Default the host name followed by a
	// digest of the program's command line and of how many MetalBonds the
	// program created before (metalbond.ClientConfig.Name): MetalBonds of
	// different programs on one host differ, a restarted program keeps it.
	Name string
	// ClientTLS, if set, secures the connections to the servers of
	// AddPeer (see package tlsauth for loading certificates).
	ClientTLS *tls.Config
	// ServerTLS, if set, secures the connections StartServer accepts.
	ServerTLS *tls.Config
}

// ErrClosed is returned by the methods of a MetalBond after Shutdown.
var ErrClosed = errors.New("metalbond: shut down")

// MetalBond is one participant in MetalBond route distribution with the API
// of the existing Go library, backed by metalbond.Client (AddPeer and the
// route methods) and metalbond.Server (StartServer). It is safe for
// concurrent use.
type MetalBond struct {
	client Client
	core   *metalbond.Client
	cfg    Config
	log    *slog.Logger
	ctx    context.Context // done at Shutdown
	cancel context.CancelFunc
	bg     sync.WaitGroup // every goroutine started

	// opMu serialises the calls that change state, so that each checks and
	// changes it atomically. It is never held while a Client is called.
	opMu sync.Mutex

	mu        sync.Mutex // guards the following; held only briefly
	subs      map[VNI]struct{}
	announced map[route.Route]struct{}
	localIPs  map[string]netip.Addr // by server, from AddPeer
	server    *metalbond.Server     // nil until StartServer
	own       *metalbond.ExternalSource
	https     []*http.Server
	closed    bool
}

// NewMetalBond returns a MetalBond that tells client about the routes it
// learns (a nil client is taken for NewDummyClient()). It connects to
// nothing until AddPeer or StartServer.
func NewMetalBond(config Config, client Client) *MetalBond {
	if client == nil {
		client = NewDummyClient()
	}
	log := config.Logger
	if log == nil {
		log = slog.Default()
	}
	m := &MetalBond{
		client:    client,
		cfg:       config,
		log:       log,
		subs:      make(map[VNI]struct{}),
		announced: make(map[route.Route]struct{}),
		localIPs:  make(map[string]netip.Addr),
	}
	core, err := metalbond.NewClient(metalbond.ClientConfig{
		Keepalive: time.Duration(config.KeepaliveInterval) * time.Second,
		Installer: installer{client},
		Dial:      m.dial,
		Name:      config.Name,
		Logger:    log,
	})
	if err != nil {
		// NewClient refuses only bad settings, and none of those can be
		// expressed in Config.
		panic("compat: " + err.Error())
	}
	m.core = core
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		core.Run(m.ctx)
	}()
	return m
}

// dial connects to a server of AddPeer, from its local address if one was
// given, over TLS if configured.
func (m *MetalBond) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	m.mu.Lock()
	local := m.localIPs[addr]
	m.mu.Unlock()
	d := &net.Dialer{Timeout: 5 * time.Second}
	if local.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: local.AsSlice(), Zone: local.Zone()}
	}
	if m.cfg.ClientTLS != nil {
		td := &tls.Dialer{NetDialer: d, Config: m.cfg.ClientTLS}
		return td.DialContext(ctx, network, addr)
	}
	return d.DialContext(ctx, network, addr)
}

// GetClient returns the Client given to NewMetalBond.
func (m *MetalBond) GetClient() Client { return m.client }

// AddPeer connects to the route server at server (host:port), from
// localIP if it is not empty, and keeps the session up, reconnecting after
// failures. Subscriptions and announcements, earlier and later, are sent to
// it once the session is established. It fails if server is malformed or
// already added, or localIP is not an IP address.
func (m *MetalBond) AddPeer(server, localIP string) error {
	var local netip.Addr
	if localIP != "" {
		var err error
		if local, err = netip.ParseAddr(localIP); err != nil {
			return fmt.Errorf("peer %s: invalid local IP %q", server, localIP)
		}
	}
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if err := m.checkOpen(); err != nil {
		return err
	}
	m.mu.Lock()
	m.localIPs[server] = local
	m.mu.Unlock()
	if err := m.core.AddServer(server); err != nil {
		m.mu.Lock()
		delete(m.localIPs, server)
		m.mu.Unlock()
		return fmt.Errorf("cannot add peer: %w", err)
	}
	return nil
}

// RemovePeer closes the session to server and forgets it. When it returns,
// the session is closed and the routes only that server had sent are
// queued for RemoveRoute. It fails if server was not added.
func (m *MetalBond) RemovePeer(server string) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if err := m.checkOpen(); err != nil {
		return err
	}
	if err := m.core.RemoveServer(server); err != nil {
		return fmt.Errorf("cannot remove peer %s: peer does not exist", server)
	}
	m.mu.Lock()
	delete(m.localIPs, server)
	m.mu.Unlock()
	return nil
}

// PeerState returns the state of the session to server, a peer of
// AddPeer. It fails if server was not added.
func (m *MetalBond) PeerState(server string) (ConnectionState, error) {
	for _, p := range m.core.Peers() {
		if p.Server == server {
			if s, ok := parseState(p.State); ok {
				return s, nil
			}
			return 0, fmt.Errorf("peer %s: unknown state %q", server, p.State)
		}
	}
	return 0, fmt.Errorf("peer %s does not exist", server)
}

// checkOpen returns ErrClosed after Shutdown.
func (m *MetalBond) checkOpen() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	return nil
}

// Subscribe subscribes to vni at every peer, now and after reconnects. It
// may be called before a session is established (the existing library
// refused that): the subscription is sent once it is. Subscribing to a VNI
// already subscribed fails with an error containing "already subscribed to
// VNI".
func (m *MetalBond) Subscribe(vni VNI) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if err := m.checkOpen(); err != nil {
		return err
	}
	if m.IsSubscribed(vni) {
		return fmt.Errorf("already subscribed to VNI %d", vni)
	}
	// Subscribed before the first route can arrive: a Client that asks
	// IsSubscribed from AddRoute gets true.
	m.mu.Lock()
	m.subs[vni] = struct{}{}
	m.mu.Unlock()
	if err := m.core.Subscribe(m.ctx, route.VNI(vni)); err != nil {
		m.mu.Lock()
		delete(m.subs, vni)
		m.mu.Unlock()
		return err
	}
	return nil
}

// Unsubscribe ends the subscription to vni. The routes received for it are
// withdrawn: RemoveRoute is called for each (the existing library left
// them). Unsubscribing from a VNI not subscribed fails with an error
// containing "already unsubscribed from VNI".
func (m *MetalBond) Unsubscribe(vni VNI) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if err := m.checkOpen(); err != nil {
		return err
	}
	if !m.IsSubscribed(vni) {
		return fmt.Errorf("already unsubscribed from VNI %d", vni)
	}
	m.mu.Lock()
	delete(m.subs, vni)
	m.mu.Unlock()
	return m.core.Unsubscribe(m.ctx, route.VNI(vni))
}

// IsSubscribed reports whether vni is subscribed.
func (m *MetalBond) IsSubscribed(vni VNI) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.subs[vni]
	return ok
}

// GetSubscribedVnis returns the subscribed VNIs, sorted.
func (m *MetalBond) GetSubscribedVnis() []VNI {
	m.mu.Lock()
	out := make([]VNI, 0, len(m.subs))
	for v := range m.subs {
		out = append(out, v)
	}
	m.mu.Unlock()
	slices.Sort(out)
	return out
}

// AnnounceRoute announces a route to every peer (and to the peers of
// StartServer), now and after reconnects; it may be called before a
// session is established. A route already announced fails with an error
// containing "nexthop already exists"; an invalid one with an error naming
// the bad value.
func (m *MetalBond) AnnounceRoute(vni VNI, dest Destination, hop NextHop) error {
	return m.changeRoute(vni, dest, hop, true)
}

// WithdrawRoute withdraws a route of AnnounceRoute. A route not announced
// fails with an error containing "VNI does not exist" (nothing announced in
// vni), "destination does not exist" (nothing for that prefix) or "nexthop
// does not exist".
func (m *MetalBond) WithdrawRoute(vni VNI, dest Destination, hop NextHop) error {
	return m.changeRoute(vni, dest, hop, false)
}

// changeRoute announces (add) or withdraws a route.
func (m *MetalBond) changeRoute(vni VNI, dest Destination, hop NextHop, add bool) error {
	r, err := toRoute(vni, dest, hop)
	if err != nil {
		return err
	}
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if err := m.checkOpen(); err != nil {
		return err
	}
	m.mu.Lock()
	_, held := m.announced[r]
	if !add && !held {
		err = m.missingLocked(r)
	}
	own := m.own
	m.mu.Unlock()
	switch {
	case add && held:
		return fmt.Errorf("cannot announce route %d#%s#%s: nexthop already exists", vni, r.Prefix, hop)
	case err != nil:
		return fmt.Errorf("cannot withdraw route %d#%s#%s: %w", vni, r.Prefix, hop, err)
	}
	change, changeOwn := m.core.Announce, (*metalbond.ExternalSource).Add
	if !add {
		change, changeOwn = m.core.Withdraw, (*metalbond.ExternalSource).Remove
	}
	if err := change(m.ctx, r); err != nil {
		return err
	}
	if own != nil {
		changeOwn(own, r)
	}
	m.mu.Lock()
	if add {
		m.announced[r] = struct{}{}
	} else {
		delete(m.announced, r)
	}
	m.mu.Unlock()
	return nil
}

// missingLocked says what of r, which is not announced, is missing. m.mu
// is held.
func (m *MetalBond) missingLocked(r route.Route) error {
	vni, prefix := false, false
	for a := range m.announced {
		if a.VNI == r.VNI {
			vni = true
			prefix = prefix || a.Prefix == r.Prefix
		}
	}
	switch {
	case !vni:
		return errors.New("VNI does not exist")
	case !prefix:
		return errors.New("destination does not exist")
	}
	return errors.New("nexthop does not exist")
}

// IsRouteAnnounced reports whether the route is announced.
func (m *MetalBond) IsRouteAnnounced(vni VNI, dest Destination, hop NextHop) bool {
	r, err := toRoute(vni, dest, hop)
	if err != nil {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.announced[r]
	return ok
}

// AddRoutesForVni calls the Client's AddRoute again for every route
// currently received in vni. The calls are made from the goroutine that
// makes every Client call, in order with them: AddRoutesForVni queues them
// and returns without waiting (so a Client may call it from AddRoute).
func (m *MetalBond) AddRoutesForVni(vni VNI) error {
	if err := m.checkOpen(); err != nil {
		return err
	}
	_, err := m.core.Replay(route.VNI(vni))
	return err
}

// Shutdown closes every session, server and HTTP server of m and waits for
// them: when it returns, every goroutine m started has ended. It first
// withdraws every announced route at every server (at most 2 s), as the
// existing implementation's servers do when a client disconnects. A
// CleanupClient's Cleanup has been called, after the last AddRoute or
// RemoveRoute. Calls after Shutdown fail with ErrClosed; calling Shutdown
// again does nothing. It must not be called from inside a Client method.
func (m *MetalBond) Shutdown() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	https := m.https
	m.mu.Unlock()
	m.cancel()
	for _, h := range https {
		h.Close()
	}
	m.bg.Wait()
}
