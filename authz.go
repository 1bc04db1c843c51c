package metalbond

import (
	"net"

	"github.com/metalbond/metalbond/route"
)

// Authorizer decides what a peer of a Server may do. With TLS client
// certificates it maps the certificate's identity to the VNIs the peer may
// announce into and subscribe to.
type Authorizer interface {
	// Authorize is called once per session, before the v1 handshake, with
	// the accepted connection; for a TLS listener it is a *tls.Conn whose
	// handshake has completed. An error refuses the session: the
	// connection is closed and the refusal logged and counted.
	Authorize(conn net.Conn) (Permissions, error)
}

// Permissions are what one peer may do. The Server asks for every
// SUBSCRIBE and UPDATE, so an implementation may change its answers while
// the session runs (a policy reloaded on SIGHUP). A refused message is
// ignored, logged and counted; the session stays up. Implementations must
// be safe for concurrent use and fast: they are on the update path.
type Permissions interface {
	// Identity names the peer in logs and status pages.
	Identity() string
	MayAnnounce(vni route.VNI) bool
	MaySubscribe(vni route.VNI) bool
}

// Reauthorize applies the current answers of every peer's Permissions to
// what the peer already has: subscriptions no longer allowed are dropped,
// and routes in VNIs the peer may no longer announce into are withdrawn
// (also those kept for a peer in graceful restart are not touched: they go
// when its time runs out or it returns). Call it after reloading a policy;
// sessions stay up.
func (s *Server) Reauthorize() {
	s.mu.RLock()
	peers := make([]*serverPeer, 0, len(s.peers))
	for p := range s.peers {
		if p.perms != nil {
			peers = append(peers, p)
		}
	}
	s.mu.RUnlock()
	for _, p := range peers {
		p.mu.Lock()
		var drop []route.VNI
		for vni := range p.subs {
			if !p.perms.MaySubscribe(vni) {
				drop = append(drop, vni)
			}
		}
		revoked := map[route.VNI]*vniState{}
		for vni, st := range p.announced {
			if !p.perms.MayAnnounce(vni) {
				revoked[vni] = st
			}
		}
		p.mu.Unlock()
		for _, vni := range drop {
			p.unsubscribe(vni)
			p.log.Warn("subscription revoked by policy", "vni", vni)
		}
		if len(revoked) > 0 {
			p.log.Warn("announcements revoked by policy", "vnis", len(revoked))
			s.withdrawSource(p.id, revoked, p, p.log)
		}
	}
}
