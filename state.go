package metalbond

import (
	"net/netip"
	"slices"
	"time"

	"github.com/metalbond/metalbond/internal/routetable"
	"github.com/metalbond/metalbond/internal/session"
	"github.com/metalbond/metalbond/route"
)

// PeerInfo is a snapshot of one session, for status pages and metrics.
type PeerInfo struct {
	// ID identifies the session within its Server or Client.
	ID uint32
	// Remote and Local are the connection's addresses. For a client
	// session that is not connected, Remote is the configured server
	// address and Local is empty.
	Remote, Local string
	// Server is, for a client's session, the server's address as
	// configured (ClientConfig.Servers or AddServer); empty on a server.
	Server string
	// Direction is "inbound" (accepted by a server) or "outbound" (dialled
	// by a client).
	Direction string
	// State is the v1 session state: CONNECTING, HELLO_SENT,
	// HELLO_RECEIVED, ESTABLISHED, RETRY or CLOSED.
	State string
	// Keepalive is the agreed keepalive interval (zero before the HELLO
	// exchange).
	Keepalive time.Duration
	// EstablishedAt is when the session became established (zero if not).
	EstablishedAt time.Time
	// Subscriptions are the VNIs this session subscribes to: the peer's on
	// a server, ours on a client.
	Subscriptions []route.VNI
	// Routes is the number of routes the peer currently announces to us.
	// On a client it includes the routes of the server's earlier sessions
	// that are still kept (graceful restart, ClientConfig.GracePeriod).
	Routes int
	// UpdatesReceived and UpdatesSent count UPDATE messages.
	UpdatesReceived, UpdatesSent uint64
	// MessagesReceived counts received messages by type name.
	MessagesReceived map[string]uint64
	// QueueBytes is the number of bytes waiting in the send queue.
	QueueBytes int
	// Identity is the peer's authenticated identity (TLS), if any.
	Identity string
	// Name is the name the peer gave in its HELLO (an extension; empty for
	// plain v1 peers), and Features the extensions both sides negotiated
	// (wire feature bits: 1 end-of-sync, 2 graceful restart).
	Name     string
	Features uint32
	// Paced is set for a plain v1 peer whose writes are paced to what its
	// reader survives (docs/pacing.md); PacedTime is how long writing to it
	// has waited for it to read, and BacklogBytes the bound of the bytes
	// written to it that it may not have read yet.
	Paced        bool
	PacedTime    time.Duration
	BacklogBytes int
	// StaleUntil is set, on a server, for a peer whose session ended while
	// graceful restart was negotiated (State "STALE"): its Routes are held
	// for its return until then. On a client it is the latest end of Held.
	StaleUntil time.Time
	// Held are, on a client, the server's earlier sessions whose routes are
	// still kept (graceful restart or ClientConfig.GracePeriod), and
	// HeldRoutes the routes kept from them (some may also have come again
	// over the current session). On a server, a STALE peer's HeldRoutes
	// are its Routes.
	Held       []HeldSession
	HeldRoutes int
}

// HeldSession is an ended session whose routes are kept until Until, or
// until a later session of the same peer has re-sent its table.
type HeldSession struct {
	ID    uint32
	Until time.Time
}

func fillSessionInfo(pi *PeerInfo, sess *session.Session) {
	in := sess.Info()
	h, _ := sess.PeerHello()
	pi.Name, pi.Features = h.Name, sess.Negotiated()
	pi.Remote, pi.Local = in.Remote, in.Local
	pi.State = in.State.String()
	pi.Keepalive = in.Keepalive
	pi.EstablishedAt = in.EstablishedAt
	pi.UpdatesReceived, pi.UpdatesSent = in.UpdatesReceived, in.UpdatesSent
	pi.QueueBytes = in.QueueBytes
	pi.Paced, pi.PacedTime, pi.BacklogBytes = in.Paced, in.PacedTime, in.BacklogBytes
	pi.MessagesReceived = make(map[string]uint64, 5)
	for t, n := range in.Messages {
		if t > 0 {
			pi.MessagesReceived[messageTypeNames[t]] = n
		}
	}
}

var messageTypeNames = [...]string{"", "HELLO", "KEEPALIVE", "SUBSCRIBE", "UNSUBSCRIBE", "UPDATE", "END_OF_SYNC"}

// VNIInfo summarises one VNI of a route table.
type VNIInfo struct {
	VNI route.VNI
	// Routes is the number of (prefix, nexthop) routes; Prefixes the number
	// of distinct prefixes.
	Routes, Prefixes int
	// Subscribers is the number of peers subscribed (server only).
	Subscribers int
}

// RouteInfo is one route with the peers that hold it.
type RouteInfo struct {
	route.Route
	// Peers are the IDs of the sessions the route was received from
	// (see PeerInfo.ID).
	Peers []uint32
}

// ServerStats are cumulative counters of a Server.
type ServerStats struct {
	Accepted          uint64
	HandshakeFailures uint64
	// ProtocolErrors counts sessions closed for a protocol error, by kind:
	// bad_version, unknown_type, too_large, malformed, invalid,
	// unexpected_message.
	ProtocolErrors map[string]uint64
	// SlowPeersDropped counts peers disconnected because they stalled (or
	// left data queued for longer than the write timeout), their send queue
	// passed its memory bound, or they sent keepalives faster than they
	// read the answers.
	SlowPeersDropped uint64
	UpdatesReceived  uint64
	// UpdatesSent counts UPDATE messages queued to subscribers.
	UpdatesSent uint64
	// AuthRefusedSessions counts sessions the Authorizer refused (or whose
	// TLS handshake failed); AuthRefusedMessages counts SUBSCRIBE and
	// UPDATE messages refused by a peer's Permissions.
	AuthRefusedSessions, AuthRefusedMessages uint64
	// Refused counts connections and messages refused by Limits, by limit:
	// connections, connections_per_ip, routes_per_peer, routes_per_vni,
	// subscriptions_per_peer, vnis_per_peer; and UPDATEs refused because
	// their nexthop is not an IPv6 address: nexthop_not_ipv6 (the session
	// stays up, as for a limit).
	Refused map[string]uint64
	// StaleRoutes is the number of routes currently kept for peers in
	// graceful restart.
	StaleRoutes int
	// MessagesReceived counts the messages received from all peers, past
	// and present, by type name (HELLO, KEEPALIVE, SUBSCRIBE, UNSUBSCRIBE,
	// UPDATE, END_OF_SYNC).
	MessagesReceived map[string]uint64
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	st := ServerStats{
		Accepted:          s.stats.accepted.Load(),
		HandshakeFailures: s.stats.handshakeFailures.Load(),
		ProtocolErrors:    make(map[string]uint64, numProtocolErrorKinds),
		SlowPeersDropped:  s.stats.slowPeersDropped.Load(),
		UpdatesReceived:   s.stats.updatesReceived.Load(),
		UpdatesSent:       s.stats.updatesSent.Load(),

		AuthRefusedSessions: s.stats.authRefusedConns.Load(),
		AuthRefusedMessages: s.stats.authRefusedMsgs.Load(),
	}
	for k := range numProtocolErrorKinds {
		st.ProtocolErrors[k.String()] = s.stats.protocolErrors[k].Load()
	}
	st.Refused = make(map[string]uint64, numLimitKinds)
	for k := range numLimitKinds {
		st.Refused[k.String()] = s.refusals.counts[k].load()
	}
	st.StaleRoutes = s.StaleRoutes()
	st.MessagesReceived = make(map[string]uint64, len(messageTypeNames)-1)
	s.mu.RLock()
	total := s.closedMessages
	for p := range s.peers {
		for t, n := range p.sess.Info().Messages {
			total[t] += n
		}
	}
	s.mu.RUnlock()
	for t, n := range total {
		if t > 0 {
			st.MessagesReceived[messageTypeNames[t]] = n
		}
	}
	return st
}

// Peers returns a snapshot of the connected peers, and of the peers whose
// routes are held for their graceful restart (State "STALE", StaleUntil),
// sorted by ID.
func (s *Server) Peers() []PeerInfo {
	s.mu.RLock()
	peers := make([]*serverPeer, 0, len(s.peers))
	for p := range s.peers {
		peers = append(peers, p)
	}
	s.mu.RUnlock()
	out := make([]PeerInfo, 0, len(peers))
	for _, p := range peers {
		pi := PeerInfo{ID: uint32(p.id), Direction: "inbound"}
		fillSessionInfo(&pi, p.sess)
		if p.perms != nil {
			pi.Identity = p.perms.Identity()
		}
		p.mu.Lock()
		for vni := range p.subs {
			pi.Subscriptions = append(pi.Subscriptions, vni)
		}
		announced := make([]*vniState, 0, len(p.announced))
		for _, st := range p.announced {
			announced = append(announced, st)
		}
		p.mu.Unlock()
		for _, st := range announced {
			st.mu.Lock()
			pi.Routes += st.routes.SourceLen(p.id)
			st.mu.Unlock()
		}
		slices.Sort(pi.Subscriptions)
		out = append(out, pi)
	}
	out = append(out, s.stalePeerInfos()...)
	slices.SortFunc(out, func(a, b PeerInfo) int { return int(a.ID) - int(b.ID) })
	return out
}

func (s *Server) vniStates() map[route.VNI]*vniState {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m := make(map[route.VNI]*vniState, len(s.vnis))
	for k, v := range s.vnis {
		m[k] = v
	}
	return m
}

// VNIs returns a summary of every VNI with routes or subscribers, sorted.
func (s *Server) VNIs() []VNIInfo {
	var out []VNIInfo
	for vni, st := range s.vniStates() {
		st.mu.Lock()
		in := VNIInfo{VNI: vni, Routes: st.routes.Len(), Prefixes: st.routes.Prefixes(), Subscribers: len(st.subs)}
		st.mu.Unlock()
		if in.Routes > 0 || in.Subscribers > 0 {
			out = append(out, in)
		}
	}
	slices.SortFunc(out, func(a, b VNIInfo) int { return int(a.VNI) - int(b.VNI) })
	return out
}

// Routes returns the routes of vni with the peers holding each, sorted by
// prefix and nexthop.
func (s *Server) Routes(vni route.VNI) []RouteInfo {
	s.mu.RLock()
	st := s.vnis[vni]
	s.mu.RUnlock()
	if st == nil {
		return nil
	}
	st.mu.Lock()
	out := make([]RouteInfo, 0, st.routes.Len())
	st.routes.Range(func(p netip.Prefix, nh route.NextHop, h routetable.Holders) bool {
		ri := RouteInfo{Route: route.Route{VNI: vni, Prefix: p, NextHop: nh}, Peers: make([]uint32, 0, h.Len())}
		h.Each(func(id routetable.SourceID) { ri.Peers = append(ri.Peers, uint32(id)) })
		out = append(out, ri)
		return true
	})
	st.mu.Unlock()
	sortRouteInfos(out)
	return out
}

func sortRouteInfos(rs []RouteInfo) {
	slices.SortFunc(rs, func(a, b RouteInfo) int { return a.Route.Compare(b.Route) })
	for i := range rs {
		slices.Sort(rs[i].Peers)
	}
}
