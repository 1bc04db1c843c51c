package metalbond

import (
	"log/slog"
	"net"
	"slices"
	"time"

	"github.com/metalbond/metalbond/internal/routetable"
	"github.com/metalbond/metalbond/internal/session"
	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// stalePeer holds the routes of a peer whose session ended while graceful
// restart was negotiated, until the peer is back and has re-announced, or
// until its time is up.
type stalePeer struct {
	id        routetable.SourceID
	announced map[route.VNI]*vniState
	timer     *time.Timer
	log       *slog.Logger
	// name, identity, remote and until are for Peers: the peer's HELLO
	// name, its authenticated identity, the address of its ended session,
	// and when its routes go.
	name, identity, remote string
	until                  time.Time
}

// peerKey identifies a peer across reconnects: the name it gives in HELLO,
// its address (without the port, which changes) and, with an Authorizer,
// its authenticated identity, so that one certificate holder cannot end
// another's graceful restart.
func (p *serverPeer) key() string {
	h, _ := p.sess.PeerHello()
	host := p.sess.RemoteAddr().String()
	if hp, _, err := net.SplitHostPort(host); err == nil {
		host = hp
	}
	id := ""
	if p.perms != nil {
		id = p.perms.Identity()
	}
	return h.Name + "|" + host + "|" + id
}

// gracefulRestartTime returns how long to keep p's routes now that its
// session ended, or 0 to withdraw them at once: graceful restart must have
// been negotiated and the peer must have named itself.
func (p *serverPeer) gracefulRestartTime() time.Duration {
	if p.srv.cfg.GracefulRestart <= 0 || p.sess.Negotiated()&wire.FeatureGracefulRestart == 0 {
		return 0
	}
	h, _ := p.sess.PeerHello()
	if h.Name == "" || h.GracefulRestart == 0 {
		return 0
	}
	return min(time.Duration(h.GracefulRestart)*time.Second, p.srv.cfg.GracefulRestart)
}

// keepStale keeps the routes of p, whose session ended, for keep.
func (s *Server) keepStale(p *serverPeer, keep time.Duration) {
	p.mu.Lock()
	announced := p.announced
	p.announced = map[route.VNI]*vniState{}
	p.mu.Unlock()
	if countSource(p.id, announced) == 0 {
		return // a clean stop withdrew everything: nothing to keep
	}
	h, _ := p.sess.PeerHello()
	key := p.key()
	sp := &stalePeer{id: p.id, announced: announced, log: p.log,
		name: h.Name, remote: p.sess.RemoteAddr().String(), until: time.Now().Add(keep)}
	if p.perms != nil {
		sp.identity = p.perms.Identity()
	}
	s.staleMu.Lock()
	s.stale[key] = append(s.stale[key], sp)
	sp.timer = time.AfterFunc(keep, func() {
		if s.takeStale(key, sp) {
			sp.log.Info("graceful restart time expired: withdrawing routes", "after", keep)
			s.withdrawSource(sp.id, sp.announced, nil, sp.log)
		}
	})
	s.staleMu.Unlock()
	p.log.Info("keeping routes for graceful restart", "for", keep, "name", h.Name)
}

// takeStale removes sp from the stale peers of key and reports whether it
// was still there (so that exactly one of the timer and the returning peer
// withdraws its routes).
func (s *Server) takeStale(key string, sp *stalePeer) bool {
	s.staleMu.Lock()
	defer s.staleMu.Unlock()
	list := s.stale[key]
	for i, x := range list {
		if x == sp {
			list = append(list[:i], list[i+1:]...)
			if len(list) == 0 {
				delete(s.stale, key)
			} else {
				s.stale[key] = list
			}
			return true
		}
	}
	return false
}

// releaseStale is called when p has re-announced all its routes (it sent
// END_OF_SYNC): routes its earlier sessions held and p did not re-announce
// are withdrawn now.
func (s *Server) releaseStale(p *serverPeer) {
	h, _ := p.sess.PeerHello()
	if h.Name == "" {
		return
	}
	key := p.key()
	s.staleMu.Lock()
	list := s.stale[key]
	delete(s.stale, key)
	s.staleMu.Unlock()
	for _, sp := range list {
		sp.timer.Stop()
		// p too: its subscriptions may have delivered it its own old routes.
		s.withdrawSource(sp.id, sp.announced, nil, p.log)
	}
	if len(list) > 0 {
		p.log.Info("graceful restart complete: stale routes released", "sessions", len(list))
	}
}

// StaleRoutes returns the number of routes kept for peers whose sessions
// ended while graceful restart was negotiated.
func (s *Server) StaleRoutes() int {
	s.staleMu.Lock()
	var all []*stalePeer
	for _, list := range s.stale {
		all = append(all, list...)
	}
	s.staleMu.Unlock()
	n := 0
	for _, sp := range all {
		n += countSource(sp.id, sp.announced)
	}
	return n
}

// staleShare is what the earlier sessions of a peer, kept for graceful
// restart, hold: their routes count against the peer's route limit, so that
// reconnecting does not multiply it. It is owned by the session's reader
// goroutine.
type staleShare struct {
	loaded bool
	key    string
	ids    []routetable.SourceID // the stale sessions
	counts []int                 // the routes each holds (fixed once stale)
	routes int                   // the sum of counts
	// reannounced counts the routes the peer holds that a stale session
	// holds too: they are counted once.
	reannounced int
}

// holds reports whether one of the stale sessions holds the route whose
// holders are h.
func (sh *staleShare) holds(h routetable.Holders) bool {
	for _, id := range sh.ids {
		if h.Has(id) {
			return true
		}
	}
	return false
}

// loadStale counts what the stale sessions of p's key hold, once, when p
// first announces (before it holds any VNI's lock).
func (p *serverPeer) loadStale() {
	if p.stale.loaded {
		return
	}
	s := p.srv
	sh := staleShare{loaded: true, key: p.key()}
	s.staleMu.Lock()
	list := slices.Clone(s.stale[sh.key])
	s.staleMu.Unlock()
	for _, sp := range list {
		n := countSource(sp.id, sp.announced)
		sh.ids, sh.counts, sh.routes = append(sh.ids, sp.id), append(sh.counts, n), sh.routes+n
	}
	p.stale = sh
}

// heldRoutes returns the routes p counts against Limits.MaxRoutesPerPeer:
// its own and those its earlier sessions still hold for graceful restart.
// Stale sessions whose time ran out since loadStale stop counting.
func (p *serverPeer) heldRoutes() int {
	sh := &p.stale
	if len(sh.ids) > 0 {
		alive := p.srv.staleAlive(sh.key)
		for i := 0; i < len(sh.ids); {
			if alive[sh.ids[i]] {
				i++
				continue
			}
			sh.routes -= sh.counts[i]
			sh.ids = slices.Delete(sh.ids, i, i+1)
			sh.counts = slices.Delete(sh.counts, i, i+1)
		}
		sh.reannounced = min(sh.reannounced, sh.routes)
	}
	return p.routes + sh.routes - sh.reannounced
}

// staleAlive returns the sessions still kept for key.
func (s *Server) staleAlive(key string) map[routetable.SourceID]bool {
	s.staleMu.Lock()
	defer s.staleMu.Unlock()
	alive := make(map[routetable.SourceID]bool, len(s.stale[key]))
	for _, sp := range s.stale[key] {
		alive[sp.id] = true
	}
	return alive
}

// countSource returns the number of routes id holds in vnis.
func countSource(id routetable.SourceID, vnis map[route.VNI]*vniState) int {
	n := 0
	for _, st := range vnis {
		st.mu.Lock()
		n += st.routes.SourceLen(id)
		st.mu.Unlock()
	}
	return n
}

// warnSharedName logs when p, which names itself for graceful restart,
// shares its name and address with another connected peer: the two are
// taken for one client, and the graceful restart of one would release the
// routes of the other. Two clients on one host need different names.
func (s *Server) warnSharedName(p *serverPeer) {
	h, _ := p.sess.PeerHello()
	if h.Name == "" || p.sess.Negotiated()&wire.FeatureGracefulRestart == 0 {
		return
	}
	key := p.key()
	s.mu.RLock()
	var other *serverPeer
	for o := range s.peers {
		if o != p && o.sess.State() == session.StateEstablished && o.key() == key {
			other = o
			break
		}
	}
	s.mu.RUnlock()
	if other != nil {
		p.log.Warn("another connected session has the same name: the two are taken for one client across restarts; give each client its own name",
			"name", h.Name, "other", other.sess.RemoteAddr().String())
	}
}

// stalePeerInfos describes the peers whose routes are held stale, for
// Peers: state STALE, the routes held and until when.
func (s *Server) stalePeerInfos() []PeerInfo {
	s.staleMu.Lock()
	var all []*stalePeer
	for _, list := range s.stale {
		all = append(all, list...)
	}
	s.staleMu.Unlock()
	out := make([]PeerInfo, 0, len(all))
	for _, sp := range all {
		n := countSource(sp.id, sp.announced)
		out = append(out, PeerInfo{ID: uint32(sp.id), Remote: sp.remote, Direction: "inbound", State: "STALE",
			Name: sp.name, Identity: sp.identity, Routes: n, HeldRoutes: n, StaleUntil: sp.until})
	}
	return out
}
