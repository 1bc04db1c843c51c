// Package route defines the values MetalBond distributes: virtual network
// identifiers (VNI), destination prefixes and the nexthops that reach them,
// together with parsers for the command-line syntax that deployments use
// (VNI#PREFIX#NEXTHOP[#TYPE][#FROM#TO] and VNI#TABLE).
//
// All types are small comparable values: they can be used as map keys and
// copied freely, and are safe for concurrent use.
package route

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// VNI identifies a virtual network. VNIs are 24-bit values (as in VXLAN);
// see MaxVNI.
type VNI uint32

// MaxVNI is the largest valid VNI.
const MaxVNI VNI = 1<<24 - 1

// Valid reports whether v fits in 24 bits.
func (v VNI) Valid() bool { return v <= MaxVNI }

func (v VNI) String() string { return strconv.FormatUint(uint64(v), 10) }

// ParseVNI parses a decimal VNI and checks that it fits in 24 bits.
func ParseVNI(s string) (VNI, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || VNI(n) > MaxVNI {
		return 0, fmt.Errorf("invalid VNI %q: want a number from 0 to %d", s, MaxVNI)
	}
	return VNI(n), nil
}

// NextHopType says how traffic reaches a nexthop. The numeric values are
// those of the v1 wire format.
type NextHopType uint8

const (
	// NextHopStandard is a plain encapsulation endpoint.
	NextHopStandard NextHopType = 0
	// NextHopNAT is a NAT gateway that owns a slice of ports (NATPortFrom..NATPortTo).
	NextHopNAT NextHopType = 1
	// NextHopLoadBalancerTarget is one target of a load-balanced prefix.
	NextHopLoadBalancerTarget NextHopType = 2
)

// String returns the command-line name of t: STD, NAT or LB.
func (t NextHopType) String() string {
	switch t {
	case NextHopStandard:
		return "STD"
	case NextHopNAT:
		return "NAT"
	case NextHopLoadBalancerTarget:
		return "LB"
	}
	return "NextHopType(" + strconv.Itoa(int(t)) + ")"
}

// Valid reports whether t is one of the defined types.
func (t NextHopType) Valid() bool { return t <= NextHopLoadBalancerTarget }

// ParseNextHopType parses STD, NAT or LB (case-insensitive).
func ParseNextHopType(s string) (NextHopType, error) {
	switch strings.ToUpper(s) {
	case "STD", "STANDARD":
		return NextHopStandard, nil
	case "NAT":
		return NextHopNAT, nil
	case "LB", "LOADBALANCER_TARGET":
		return NextHopLoadBalancerTarget, nil
	}
	return 0, fmt.Errorf("invalid nexthop type %q: want STD, LB or NAT", s)
}

// NextHop is the whole nexthop of a route: two routes to one prefix with
// different nexthops (another address, type or NAT port slice) coexist.
type NextHop struct {
	// Address is the underlay address that reaches the destination
	// (IPv6 in practice).
	Address netip.Addr
	// TargetVNI is the VNI on the far side, if it differs.
	TargetVNI VNI
	Type      NextHopType
	// NATPortFrom and NATPortTo bound the port slice of a NAT nexthop;
	// both are zero for other types.
	NATPortFrom uint16
	NATPortTo   uint16
}

// Validate checks the nexthop and returns an error naming the bad field.
func (n NextHop) Validate() error {
	if !n.Address.IsValid() {
		return errors.New("nexthop address: missing")
	}
	if n.Address.Zone() != "" {
		return fmt.Errorf("nexthop address %s: zones are not allowed", n.Address)
	}
	if !n.TargetVNI.Valid() {
		return fmt.Errorf("nexthop target VNI %d: exceeds 24 bits", n.TargetVNI)
	}
	if !n.Type.Valid() {
		return fmt.Errorf("nexthop type %d: unknown", n.Type)
	}
	if n.Type == NextHopNAT {
		if n.NATPortFrom > n.NATPortTo {
			return fmt.Errorf("NAT port range %d-%d: start after end", n.NATPortFrom, n.NATPortTo)
		}
	} else if n.NATPortFrom != 0 || n.NATPortTo != 0 {
		return fmt.Errorf("NAT port range %d-%d: only allowed for type NAT, not %s", n.NATPortFrom, n.NATPortTo, n.Type)
	}
	return nil
}

// ValidateUnderlay checks that n's address can be an underlay address.
// The MetalBond underlay is IPv6: a client encapsulates IP-in-IPv6 towards
// the nexthop (ip6tnl, `encap ip6 dst`), so an IPv4 address, or an
// IPv4-mapped IPv6 address, cannot be reached. Clients refuse to announce
// such a nexthop and servers refuse to accept one (docs/protocol.md).
func (n NextHop) ValidateUnderlay() error {
	switch a := n.Address; {
	case a.Is4():
		return fmt.Errorf("nexthop %s is an IPv4 address; the underlay is IPv6", a)
	case a.Is4In6():
		return fmt.Errorf("nexthop %s is an IPv4-mapped address; the underlay is IPv6", a)
	}
	return nil
}

// String formats n in command-line syntax: ADDRESS[#TYPE[#FROM#TO]].
// The type is omitted for standard nexthops. The command-line syntax has no
// place for TargetVNI, so String does not show it.
func (n NextHop) String() string {
	s := n.Address.String()
	switch n.Type {
	case NextHopStandard:
	case NextHopNAT:
		s += "#NAT#" + strconv.Itoa(int(n.NATPortFrom)) + "#" + strconv.Itoa(int(n.NATPortTo))
	default:
		s += "#" + n.Type.String()
	}
	return s
}

// Compare orders nexthops by address, type, target VNI and port range.
// It returns -1, 0 or +1.
func (n NextHop) Compare(o NextHop) int {
	if c := n.Address.Compare(o.Address); c != 0 {
		return c
	}
	switch {
	case n.Type != o.Type:
		return cmpInt(int(n.Type), int(o.Type))
	case n.TargetVNI != o.TargetVNI:
		return cmpInt(int(n.TargetVNI), int(o.TargetVNI))
	case n.NATPortFrom != o.NATPortFrom:
		return cmpInt(int(n.NATPortFrom), int(o.NATPortFrom))
	}
	return cmpInt(int(n.NATPortTo), int(o.NATPortTo))
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Route is one announcement: destination Prefix in virtual network VNI is
// reached through NextHop.
type Route struct {
	VNI     VNI
	Prefix  netip.Prefix
	NextHop NextHop
}

// Validate checks every field of r and returns an error naming the bad one.
// A prefix with host bits set is invalid; use Prefix.Masked.
func (r Route) Validate() error {
	if !r.VNI.Valid() {
		return fmt.Errorf("VNI %d: exceeds 24 bits", r.VNI)
	}
	if !r.Prefix.IsValid() {
		return errors.New("prefix: missing or invalid")
	}
	if r.Prefix.Addr().Zone() != "" {
		return fmt.Errorf("prefix %s: zones are not allowed", r.Prefix)
	}
	if r.Prefix != r.Prefix.Masked() {
		return fmt.Errorf("prefix %s: host bits set (want %s)", r.Prefix, r.Prefix.Masked())
	}
	return r.NextHop.Validate()
}

// String formats r in the command-line syntax accepted by Parse (which
// cannot express NextHop.TargetVNI: it is lost in the round trip).
func (r Route) String() string {
	return r.VNI.String() + "#" + r.Prefix.String() + "#" + r.NextHop.String()
}

// Compare orders routes by VNI, prefix and nexthop. It returns -1, 0 or +1.
func (r Route) Compare(o Route) int {
	if r.VNI != o.VNI {
		return cmpInt(int(r.VNI), int(o.VNI))
	}
	if c := r.Prefix.Addr().Compare(o.Prefix.Addr()); c != 0 {
		return c
	}
	if r.Prefix.Bits() != o.Prefix.Bits() {
		return cmpInt(r.Prefix.Bits(), o.Prefix.Bits())
	}
	return r.NextHop.Compare(o.NextHop)
}

// Parse parses a route in command-line syntax:
//
//	VNI#PREFIX#NEXTHOP[#STD|#LB|#NAT#FROM#TO]
//
// for example 23#10.0.23.0/24#2001:db8::1 or
// 23#10.0.24.0/24#2001:db8::2#NAT#1000#2000. Errors name the bad part.
func Parse(s string) (Route, error) {
	parts := strings.Split(s, "#")
	if len(parts) < 3 || len(parts) > 6 {
		return Route{}, fmt.Errorf("invalid route %q: want VNI#PREFIX#NEXTHOP[#STD|LB|NAT][#FROM#TO]", s)
	}
	var r Route
	var err error
	if r.VNI, err = ParseVNI(parts[0]); err != nil {
		return Route{}, fmt.Errorf("route %q: %w", s, err)
	}
	if r.Prefix, err = netip.ParsePrefix(parts[1]); err != nil {
		return Route{}, fmt.Errorf("route %q: invalid prefix %q", s, parts[1])
	}
	if r.Prefix != r.Prefix.Masked() {
		return Route{}, fmt.Errorf("route %q: prefix %s has host bits set (did you mean %s?)", s, r.Prefix, r.Prefix.Masked())
	}
	if r.NextHop.Address, err = netip.ParseAddr(parts[2]); err != nil {
		return Route{}, fmt.Errorf("route %q: invalid nexthop address %q", s, parts[2])
	}
	if len(parts) > 3 {
		if r.NextHop.Type, err = ParseNextHopType(parts[3]); err != nil {
			return Route{}, fmt.Errorf("route %q: %w", s, err)
		}
	}
	switch {
	case r.NextHop.Type == NextHopNAT && len(parts) != 6:
		return Route{}, fmt.Errorf("route %q: a NAT nexthop needs a port range: #NAT#FROM#TO", s)
	case r.NextHop.Type != NextHopNAT && len(parts) > 4:
		return Route{}, fmt.Errorf("route %q: a port range is only allowed for NAT nexthops", s)
	case len(parts) == 6:
		if r.NextHop.NATPortFrom, err = parsePort(parts[4]); err != nil {
			return Route{}, fmt.Errorf("route %q: %w", s, err)
		}
		if r.NextHop.NATPortTo, err = parsePort(parts[5]); err != nil {
			return Route{}, fmt.Errorf("route %q: %w", s, err)
		}
	}
	if err := r.Validate(); err != nil {
		return Route{}, fmt.Errorf("route %q: %w", s, err)
	}
	return r, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("invalid port %q: want 0 to 65535", s)
	}
	return uint16(n), nil
}

// TableMapping maps a VNI to a Linux routing table: routes received for
// VNI are installed into Table.
type TableMapping struct {
	VNI   VNI
	Table int
}

// TableMain is the number of Linux's main routing table.
const TableMain = 254

// ParseTableMapping parses VNI#TABLE, for example 23#100. Table 0 stands
// for the main table (TableMain), as in deployed configurations, where
// VNI#0 installs into the main table.
func ParseTableMapping(s string) (TableMapping, error) {
	vni, table, ok := strings.Cut(s, "#")
	if !ok {
		return TableMapping{}, fmt.Errorf("invalid table mapping %q: want VNI#TABLE", s)
	}
	v, err := ParseVNI(vni)
	if err != nil {
		return TableMapping{}, fmt.Errorf("table mapping %q: %w", s, err)
	}
	t, err := strconv.ParseUint(table, 10, 32)
	if err != nil {
		return TableMapping{}, fmt.Errorf("table mapping %q: invalid table %q: want a number from 0 (main) to %d", s, table, uint32(1<<32-1))
	}
	if t == 0 {
		t = TableMain
	}
	return TableMapping{VNI: v, Table: int(t)}, nil
}

func (m TableMapping) String() string { return m.VNI.String() + "#" + strconv.Itoa(m.Table) }
