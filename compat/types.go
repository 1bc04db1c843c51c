package compat

import (
	"fmt"
	"net/netip"
	"strconv"

	"github.com/metalbond/metalbond/compat/pb"
	"github.com/metalbond/metalbond/route"
)

// VNI identifies a virtual network. Valid VNIs fit in 24 bits.
type VNI uint32

// IPVersion is the address family of a Destination.
type IPVersion uint8

// The address families.
const (
	IPV4 IPVersion = 4
	IPV6 IPVersion = 6
)

// Destination is a prefix in a virtual network.
//
// IPVersion may be left zero: it is taken from Prefix. Destinations given
// to a Client always have it set. A Prefix with host bits set (10.0.0.1/24)
// is accepted and announced as its network (10.0.0.0/24).
type Destination struct {
	IPVersion IPVersion
	Prefix    netip.Prefix
}

func (d Destination) String() string { return d.Prefix.String() }

// NextHop is how a Destination is reached: the underlay address of the
// hypervisor (or NAT gateway, or load-balancer target) behind it.
// NATPortRangeFrom and NATPortRangeTo are set for Type NextHopType_NAT only.
type NextHop struct {
	TargetAddress    netip.Addr
	TargetVNI        uint32
	Type             pb.NextHopType
	NATPortRangeFrom uint16
	NATPortRangeTo   uint16
}

func (h NextHop) String() string {
	s := h.TargetAddress.String()
	if h.TargetVNI != 0 {
		s += " (VNI " + strconv.FormatUint(uint64(h.TargetVNI), 10) + ")"
	}
	switch h.Type {
	case pb.NextHopType_STANDARD:
	case pb.NextHopType_NAT:
		s += fmt.Sprintf(" NAT %d-%d", h.NATPortRangeFrom, h.NATPortRangeTo)
	default:
		s += " " + h.Type.String()
	}
	return s
}

// ConnectionState is the state of the session to a peer.
type ConnectionState uint8

// The session states, in the order a session goes through them. RETRY is
// the wait between a failed or ended session and the next attempt.
const (
	CONNECTING ConnectionState = iota
	HELLO_SENT
	HELLO_RECEIVED
	ESTABLISHED
	RETRY
	CLOSED
)

var stateNames = [...]string{"CONNECTING", "HELLO_SENT", "HELLO_RECEIVED", "ESTABLISHED", "RETRY", "CLOSED"}

// String returns the state's name, for example ESTABLISHED.
func (s ConnectionState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "ConnectionState(" + strconv.Itoa(int(s)) + ")"
}

// parseState maps a metalbond.PeerInfo state name to a ConnectionState.
func parseState(name string) (ConnectionState, bool) {
	for i, n := range stateNames {
		if n == name {
			return ConnectionState(i), true
		}
	}
	return 0, false
}

// toRoute converts the compat form of a route to ours, checking it. The
// prefix is masked (the existing library accepted host bits).
func toRoute(vni VNI, dest Destination, hop NextHop) (route.Route, error) {
	if !dest.Prefix.IsValid() {
		return route.Route{}, fmt.Errorf("destination %v: invalid prefix", dest.Prefix)
	}
	want := IPV6
	if dest.Prefix.Addr().Is4() {
		want = IPV4
	}
	if dest.IPVersion != 0 && dest.IPVersion != want {
		return route.Route{}, fmt.Errorf("destination %s: IPVersion %d does not match the prefix (want %d)", dest.Prefix, dest.IPVersion, want)
	}
	if hop.Type < 0 || hop.Type > pb.NextHopType_LOADBALANCER_TARGET {
		return route.Route{}, fmt.Errorf("nexthop %s: unknown type %d", hop.TargetAddress, hop.Type)
	}
	r := route.Route{
		VNI:    route.VNI(vni),
		Prefix: dest.Prefix.Masked(),
		NextHop: route.NextHop{
			Address:     hop.TargetAddress,
			TargetVNI:   route.VNI(hop.TargetVNI),
			Type:        route.NextHopType(hop.Type),
			NATPortFrom: hop.NATPortRangeFrom,
			NATPortTo:   hop.NATPortRangeTo,
		},
	}
	if err := r.Validate(); err != nil {
		return route.Route{}, fmt.Errorf("route %d#%s#%s: %w", vni, dest.Prefix, hop, err)
	}
	return r, nil
}

// fromRoute converts one of our routes to the compat form.
func fromRoute(r route.Route) (VNI, Destination, NextHop) {
	d := Destination{IPVersion: IPV6, Prefix: r.Prefix}
	if r.Prefix.Addr().Is4() {
		d.IPVersion = IPV4
	}
	return VNI(r.VNI), d, NextHop{
		TargetAddress:    r.NextHop.Address,
		TargetVNI:        uint32(r.NextHop.TargetVNI),
		Type:             pb.NextHopType(r.NextHop.Type),
		NATPortRangeFrom: r.NextHop.NATPortFrom,
		NATPortRangeTo:   r.NextHop.NATPortTo,
	}
}

// Client is told about the routes a MetalBond learns: AddRoute when a route
// appears, RemoveRoute when the last server withdrew it.
//
// MetalBond calls a Client from one goroutine, never concurrently, in the
// order the changes happened, and once per route however many servers sent
// it (AddRoutesForVni asks for AddRoute again). No lock of MetalBond is held
// during a call: a Client may call MetalBond's methods, except Shutdown. A
// returned error is logged; the route is not retried.
type Client interface {
	AddRoute(vni VNI, dest Destination, hop NextHop) error
	RemoveRoute(vni VNI, dest Destination, hop NextHop) error
}

// CleanupClient is a Client with a Cleanup method, which Shutdown calls
// after the last AddRoute or RemoveRoute call.
type CleanupClient interface {
	Client
	Cleanup() error
}

// DummyClient accepts every route and does nothing with it, for programs
// that only announce.
type DummyClient struct{}

// NewDummyClient returns a DummyClient.
func NewDummyClient() *DummyClient { return &DummyClient{} }

// AddRoute does nothing.
func (*DummyClient) AddRoute(VNI, Destination, NextHop) error { return nil }

// RemoveRoute does nothing.
func (*DummyClient) RemoveRoute(VNI, Destination, NextHop) error { return nil }

// installer adapts a Client to metalbond.Installer.
type installer struct{ c Client }

func (i installer) AddRoute(r route.Route) error {
	vni, d, h := fromRoute(r)
	return i.c.AddRoute(vni, d, h)
}

func (i installer) RemoveRoute(r route.Route) error {
	vni, d, h := fromRoute(r)
	return i.c.RemoveRoute(vni, d, h)
}

// Stopped implements metalbond.StopNotifier: a CleanupClient is cleaned up.
func (i installer) Stopped() error {
	if cc, ok := i.c.(CleanupClient); ok {
		return cc.Cleanup()
	}
	return nil
}
