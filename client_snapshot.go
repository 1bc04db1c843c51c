package metalbond

import (
	"slices"

	"github.com/metalbond/metalbond/internal/routetable"
	"github.com/metalbond/metalbond/internal/session"
	"github.com/metalbond/metalbond/route"
)

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
// ClientConfig.Servers followed by those added with AddServer. A server's
// Routes counts the routes received from it that the client holds: from
// its current session, and from earlier sessions whose routes are kept for
// graceful restart (or GracePeriod).
func (c *Client) Peers() []PeerInfo {
	subs := c.Subscriptions()
	c.mu.Lock()
	conns := slices.Clone(c.conns)
	c.mu.Unlock()
	out := make([]PeerInfo, 0, len(conns))
	for _, cc := range conns {
		pi := PeerInfo{ID: cc.id.Load(), Server: cc.addr, Remote: cc.addr, Direction: "outbound", Subscriptions: subs}
		if s := cc.sess.Load(); s != nil {
			fillSessionInfo(&pi, s)
		} else {
			pi.State = session.State(cc.state.Load()).String()
		}
		pi.Routes = c.recv.CountSources(c.sources(cc)...)
		pi.Held = c.heldSessions(cc)
		if len(pi.Held) > 0 {
			ids := make([]routetable.SourceID, len(pi.Held))
			for i, h := range pi.Held {
				ids[i] = routetable.SourceID(h.ID)
				if h.Until.After(pi.StaleUntil) {
					pi.StaleUntil = h.Until
				}
			}
			pi.HeldRoutes = c.recv.CountSources(ids...)
		}
		out = append(out, pi)
	}
	return out
}

// sources returns the IDs of the sessions of cc whose routes the client
// may hold: the current (or last) one and the kept earlier ones.
func (c *Client) sources(cc *clientConn) []routetable.SourceID {
	var ids []routetable.SourceID
	if id := cc.id.Load(); id != 0 {
		ids = append(ids, routetable.SourceID(id))
	}
	c.mu.Lock()
	for _, ss := range cc.stale {
		if !slices.Contains(ids, ss.id) {
			ids = append(ids, ss.id)
		}
	}
	c.mu.Unlock()
	return ids
}

// heldSessions returns the earlier sessions of cc whose routes are kept.
func (c *Client) heldSessions(cc *clientConn) []HeldSession {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []HeldSession
	for _, ss := range cc.stale {
		out = append(out, HeldSession{ID: uint32(ss.id), Until: ss.until})
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
