package metalbond

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// Limits bound what peers can make a Server hold, so that one misbehaving
// peer cannot exhaust it. Zero fields take the value of DefaultLimits;
// Unlimited turns a limit off. Every refusal is logged (rate-limited per
// peer and limit) and counted in ServerStats.Refused. docs/security.md
// gives the reason for each default.
//
// A refused connection is closed at once. A refused SUBSCRIBE or UPDATE is
// ignored and the session stays up: v1 has no way to refuse a message, and
// closing the session would only make the peer reconnect and try again.
type Limits struct {
	// MaxConnections bounds the sessions of the server in all.
	MaxConnections int
	// MaxConnectionsPerIP bounds the sessions from one source address.
	MaxConnectionsPerIP int
	// MaxRoutesPerPeer bounds the routes one peer may hold, counting those
	// its earlier sessions still hold for graceful restart.
	MaxRoutesPerPeer int
	// MaxRoutesPerVNI bounds the routes of one VNI.
	MaxRoutesPerVNI int
	// MaxVNIsPerPeer bounds the VNIs one session may hold routes in.
	MaxVNIsPerPeer int
	// MaxSubscriptionsPerPeer bounds the VNIs one session may subscribe to.
	MaxSubscriptionsPerPeer int
	// HandshakeTimeout bounds the handshake: TLS, if any, and the v1
	// HELLO and KEEPALIVE in both directions, together. Default 2.5
	// keepalive intervals.
	HandshakeTimeout time.Duration
}

// Unlimited, as a field of Limits, turns that limit off.
const Unlimited = -1

// DefaultLimits are the limits of a server whose Limits fields are zero:
// well above what any deployment measured in docs/benchmarks.md reaches
// (1,000,000 routes from one announcer in one VNI, 10,000 clients), and low
// enough that one peer cannot make the server hold more than about 100 MB.
var DefaultLimits = Limits{
	MaxConnections:          16384,
	MaxConnectionsPerIP:     Unlimited, // hypervisors behind NAT, tests and benchmarks on loopback
	MaxRoutesPerPeer:        1 << 20,
	MaxRoutesPerVNI:         1 << 20,
	MaxVNIsPerPeer:          16384,
	MaxSubscriptionsPerPeer: 16384,
}

// fields returns the limits by flag name, for validation and defaults.
func (l *Limits) fields() map[string]*int {
	return map[string]*int{
		"max-connections": &l.MaxConnections, "max-connections-per-ip": &l.MaxConnectionsPerIP,
		"max-routes-per-peer": &l.MaxRoutesPerPeer, "max-routes-per-vni": &l.MaxRoutesPerVNI,
		"max-vnis-per-peer": &l.MaxVNIsPerPeer, "max-subscriptions-per-peer": &l.MaxSubscriptionsPerPeer,
	}
}

func (l *Limits) validate() error {
	for name, v := range l.fields() {
		if *v < Unlimited {
			return fmt.Errorf("limit %s %d: must be positive, 0 (default) or Unlimited (-1)", name, *v)
		}
	}
	if l.HandshakeTimeout < 0 {
		return fmt.Errorf("handshake timeout %v: must not be negative", l.HandshakeTimeout)
	}
	return nil
}

// setDefaults fills zero fields from DefaultLimits and turns Unlimited into
// zero, which the checks take as no limit.
func (l *Limits) setDefaults() {
	def := DefaultLimits
	defs := def.fields()
	for name, v := range l.fields() {
		if *v == 0 {
			*v = *defs[name]
		}
		if *v == Unlimited {
			*v = 0
		}
	}
}

// limitKind names a limit in logs and statistics.
type limitKind uint8

const (
	limitConnections limitKind = iota
	limitConnectionsPerIP
	limitRoutesPerPeer
	limitRoutesPerVNI
	limitSubscriptionsPerPeer
	limitVNIsPerPeer
	// refusedNexthopNotIPv6 is not a limit: an UPDATE whose nexthop is
	// not an IPv6 address (route.NextHop.ValidateUnderlay) is refused
	// the same way, ignored and counted, with the session kept up.
	refusedNexthopNotIPv6
	numLimitKinds
)

var limitNames = [numLimitKinds]string{
	"connections", "connections_per_ip", "routes_per_peer", "routes_per_vni", "subscriptions_per_peer",
	"vnis_per_peer", "nexthop_not_ipv6",
}

func (k limitKind) String() string { return limitNames[k] }

// refusalLog counts refusals; connection refusals, which have no peer yet,
// are logged through the server's own limiter.
type refusalLog struct {
	counts [numLimitKinds]atomicCounter
	logs   logLimiter
}

// refuse counts and (rate-limited) logs a refusal of a connection.
func (s *Server) refuse(log *slog.Logger, kind limitKind, args ...any) {
	n := s.refusals.counts[kind].add()
	s.refusals.logs.log(log, slog.LevelWarn, logKind(kind), "refused: limit reached",
		append([]any{"limit", kind.String(), "refusals", n}, args...)...)
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
			if p.stale.holds(h) {
				p.stale.reannounced--
			}
		}
		return 0, true
	}
	if held {
		return 0, true
	}
	if lim.MaxRoutesPerPeer > 0 {
		if p.stale.holds(h) {
			// A route p's earlier session left for graceful restart: taking
			// it over holds nothing more.
			p.stale.reannounced++
		} else if p.heldRoutes() >= lim.MaxRoutesPerPeer {
			return limitRoutesPerPeer, false
		}
	}
	if lim.MaxRoutesPerVNI > 0 && h.Len() == 0 && st.routes.Len() >= lim.MaxRoutesPerVNI {
		if lim.MaxRoutesPerPeer > 0 && p.stale.holds(h) {
			p.stale.reannounced--
		}
		return limitRoutesPerVNI, false
	}
	if lim.MaxRoutesPerPeer > 0 {
		p.routes++
	}
	return 0, true
}

// mayEnterVNI decides, for an update in a VNI where p holds no route, whether
// it may change anything at all, before any state is made for it: a REMOVE
// there withdraws nothing, and an ADD over p's route limit is refused. Only
// an update that passes gets the VNI's state made (and a place in
// p.announced). It is called by the reader goroutine.
func (p *serverPeer) mayEnterVNI(a wire.Action, r route.Route) bool {
	if a == wire.ActionRemove {
		return false
	}
	max := p.srv.cfg.Limits.MaxRoutesPerPeer
	if max > 0 && !p.stale.loaded {
		p.flush() // no VNI lock may be held while counting stale routes
		p.loadStale()
	}
	if max > 0 && p.heldRoutes() >= max {
		p.flush()
		p.refuse(limitRoutesPerPeer, "vni", r.VNI, "prefix", r.Prefix)
		return false
	}
	if max := p.srv.cfg.Limits.MaxVNIsPerPeer; max > 0 && len(p.announced) >= max {
		p.flush()
		p.refuse(limitVNIsPerPeer, "vni", r.VNI, "prefix", r.Prefix)
		return false
	}
	return true
}

// leaveVNIIfEmpty forgets st as a VNI p announces into once p holds no route
// there, and drops the VNI's state if nothing else holds it, so that
// announcing and withdrawing (or being refused) in many VNIs leaves nothing
// behind. No VNI lock may be held.
func (p *serverPeer) leaveVNIIfEmpty(vni route.VNI, st *vniState) {
	st.mu.Lock()
	held := st.routes.SourceLen(p.id)
	st.mu.Unlock()
	if held > 0 {
		return
	}
	p.mu.Lock()
	if p.announced[vni] == st {
		delete(p.announced, vni)
	}
	p.mu.Unlock()
	p.srv.dropIfEmpty(vni, st)
}

// handshakeTimeout returns the time a connection has from being accepted
// to completing the TLS (if any) and v1 handshakes.
func (s *Server) handshakeTimeout() time.Duration {
	if t := s.cfg.Limits.HandshakeTimeout; t > 0 {
		return t
	}
	return s.cfg.Keepalive * 5 / 2
}
