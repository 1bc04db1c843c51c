package metalbond

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// Limits bound what peers can make a Server hold, so that one misbehaving
// peer cannot exhaust it. Zero fields are unlimited. Every refusal is logged
// (at most once per second per kind) and counted in ServerStats.Refused.
//
// A refused connection is closed at once. A refused SUBSCRIBE or UPDATE is
// ignored and the session stays up: v1 has no way to refuse a message, and
// closing the session would only make the peer reconnect and try again.
type Limits struct {
	// MaxConnections bounds the sessions of the server in all.
	MaxConnections int
	// MaxConnectionsPerIP bounds the sessions from one source address.
	MaxConnectionsPerIP int
	// MaxRoutesPerPeer bounds the routes one session may hold.
	MaxRoutesPerPeer int
	// MaxRoutesPerVNI bounds the routes of one VNI.
	MaxRoutesPerVNI int
	// MaxSubscriptionsPerPeer bounds the VNIs one session may subscribe to.
	MaxSubscriptionsPerPeer int
	// HandshakeTimeout bounds the v1 handshake (HELLO and KEEPALIVE in both
	// directions). Default 2.5 keepalive intervals.
	HandshakeTimeout time.Duration
}

func (l *Limits) validate() error {
	if l.MaxConnections < 0 || l.MaxConnectionsPerIP < 0 || l.MaxRoutesPerPeer < 0 ||
		l.MaxRoutesPerVNI < 0 || l.MaxSubscriptionsPerPeer < 0 || l.HandshakeTimeout < 0 {
		return errors.New("limits must not be negative")
	}
	return nil
}

// limitKind names a limit in logs and statistics.
type limitKind uint8

const (
	limitConnections limitKind = iota
	limitConnectionsPerIP
	limitRoutesPerPeer
	limitRoutesPerVNI
	limitSubscriptionsPerPeer
	// refusedNexthopNotIPv6 is not a limit: an UPDATE whose nexthop is
	// not an IPv6 address (route.NextHop.ValidateUnderlay) is refused
	// the same way, ignored and counted, with the session kept up.
	refusedNexthopNotIPv6
	numLimitKinds
)

var limitNames = [numLimitKinds]string{
	"connections", "connections_per_ip", "routes_per_peer", "routes_per_vni", "subscriptions_per_peer",
	"nexthop_not_ipv6",
}

func (k limitKind) String() string { return limitNames[k] }

// refusalLog counts refusals and rate-limits their log lines.
type refusalLog struct {
	counts [numLimitKinds]atomicCounter
	mu     sync.Mutex // guards last
	last   [numLimitKinds]time.Time
}

// refuse counts and (rate-limited) logs a refusal.
func (s *Server) refuse(log *slog.Logger, kind limitKind, args ...any) {
	n := s.refusals.counts[kind].add()
	r := &s.refusals
	r.mu.Lock()
	now := time.Now()
	due := now.Sub(r.last[kind]) >= time.Second
	if due {
		r.last[kind] = now
	}
	r.mu.Unlock()
	if !due {
		return
	}
	if kind == refusedNexthopNotIPv6 {
		log.Warn("update refused: nexthop is not an IPv6 address (the underlay is IPv6)",
			append([]any{"refusals", n}, args...)...)
		return
	}
	log.Warn("refused: limit reached", append([]any{"limit", kind.String(), "refusals", n}, args...)...)
}

// admit applies the connection limits to a new connection. On success the
// returned function must be called when the connection ends.
func (s *Server) admit(conn net.Conn) (release func(), err error) {
	lim := s.cfg.Limits
	var ip netip.Addr
	if ap, err := netip.ParseAddrPort(conn.RemoteAddr().String()); err == nil {
		ip = ap.Addr().Unmap()
	}
	s.connMu.Lock()
	kind := numLimitKinds
	switch {
	case lim.MaxConnections > 0 && s.conns >= lim.MaxConnections:
		kind = limitConnections
	case lim.MaxConnectionsPerIP > 0 && s.connsByIP[ip] >= lim.MaxConnectionsPerIP:
		kind = limitConnectionsPerIP
	default:
		s.conns++
		s.connsByIP[ip]++
	}
	s.connMu.Unlock()
	if kind != numLimitKinds {
		s.refuse(s.log, kind, "peer", conn.RemoteAddr().String())
		return nil, errors.New("refused: " + kind.String())
	}
	return func() {
		s.connMu.Lock()
		s.conns--
		if s.connsByIP[ip]--; s.connsByIP[ip] <= 0 {
			delete(s.connsByIP, ip)
		}
		s.connMu.Unlock()
	}, nil
}

// checkRouteLimits decides whether p may apply update (a, r) to st and
// keeps p's route count. st.mu is held.
func (p *serverPeer) checkRouteLimits(st *vniState, a wire.Action, r route.Route) (limitKind, bool) {
	lim := &p.srv.cfg.Limits
	h := st.routes.Holders(r.Prefix, r.NextHop)
	held := h.Has(p.id)
	if a == wire.ActionRemove {
		if held && lim.MaxRoutesPerPeer > 0 {
			p.routes--
		}
		return 0, true
	}
	if held {
		return 0, true
	}
	if lim.MaxRoutesPerPeer > 0 && p.routes >= lim.MaxRoutesPerPeer {
		return limitRoutesPerPeer, false
	}
	if lim.MaxRoutesPerVNI > 0 && h.Len() == 0 && st.routes.Len() >= lim.MaxRoutesPerVNI {
		return limitRoutesPerVNI, false
	}
	if lim.MaxRoutesPerPeer > 0 {
		p.routes++
	}
	return 0, true
}
