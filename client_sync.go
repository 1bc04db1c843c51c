package metalbond

import (
	"slices"
	"time"

	"github.com/metalbond/metalbond/internal/routetable"
	"github.com/metalbond/metalbond/route"
)

// staleSession is an ended session whose routes the client keeps.
type staleSession struct {
	id     routetable.SourceID
	timer  *time.Timer
	until  time.Time          // when the timer withdraws the routes
	synced map[route.VNI]bool // VNIs re-synced by a later session
}

// sessionDown forgets a session that ended and withdraws the routes it
// delivered: now if another server's session has a complete view, or else,
// to ride out a restart, when a later session has re-synced (END_OF_SYNC)
// or keep has passed. It reports whether the session had been established.
func (c *Client) sessionDown(cc *clientConn, id routetable.SourceID, keep time.Duration) bool {
	c.mu.Lock()
	wasUp := cc.established
	cc.established = false
	if cc.removed {
		keep = 0 // removed on purpose: nothing to ride out
	}
	// Another server's complete, current view makes this session's routes
	// redundant: there is nothing to ride out.
	for _, o := range c.conns {
		if o != cc && c.fullySynced(o) {
			keep = 0
		}
	}
	if keep > 0 && wasUp {
		ss := &staleSession{id: id, until: time.Now().Add(keep), synced: make(map[route.VNI]bool)}
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
		c.stopStaleTimer(d.ss)
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
