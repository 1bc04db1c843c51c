package bench

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"sync"

	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// Layout is the universe of routes of a scenario. Route g (0 <= g < Len)
// belongs to owner g/PerOwner (an announcing peer), lives in VNI
// VNIBase + owner%VNIs, goes to the IPv4 host prefix 10.0.0.0+g/32 and has
// the standard nexthop 2001:db8::1:owner. Every route is therefore distinct,
// and a receiver recovers g from the prefix alone.
//
// The UPDATE frames of all routes are encoded once, back to back in route
// order, so that an announcer writes a range of routes as one slice without
// copying, and so that a receiver verifies a received body by comparing it
// with the expected bytes.
//
// A Layout is immutable after NewLayout and safe for concurrent use.
type Layout struct {
	owners, perOwner, vnis int
	vniBase                route.VNI

	add    []byte  // ADD frames of routes 0..Len-1, back to back
	addOff []int32 // add[addOff[g]:addOff[g+1]] is the frame of route g

	removeOnce sync.Once
	remove     []byte // REMOVE frames, built on first use
	removeOff  []int32
}

// maxLayoutRoutes bounds a Layout to the 10.0.0.0/8 prefixes it uses.
const maxLayoutRoutes = 1 << 24

// prefixBase is the first prefix of a Layout: 10.0.0.0.
const prefixBase = 10 << 24

// NewLayout returns the layout of owners × perOwner routes spread over vnis
// VNIs starting at vniBase. It encodes every ADD frame up front.
func NewLayout(owners, perOwner, vnis int, vniBase route.VNI) *Layout {
	owners, perOwner, vnis = max(owners, 1), max(perOwner, 0), max(vnis, 1)
	if owners*perOwner > maxLayoutRoutes {
		panic("bench: layout larger than 10.0.0.0/8")
	}
	l := &Layout{owners: owners, perOwner: perOwner, vnis: vnis, vniBase: vniBase}
	l.add, l.addOff = l.encode(wire.ActionAdd)
	return l
}

func (l *Layout) encode(a wire.Action) ([]byte, []int32) {
	n := l.Len()
	buf := make([]byte, 0, n*52)
	off := make([]int32, n+1)
	for g := range n {
		buf = wire.AppendUpdate(buf, a, l.Route(g))
		off[g+1] = int32(len(buf))
	}
	return buf, off
}

// Len returns the number of routes.
func (l *Layout) Len() int { return l.owners * l.perOwner }

// Owners returns the number of announcing peers.
func (l *Layout) Owners() int { return l.owners }

// PerOwner returns the number of routes of each owner.
func (l *Layout) PerOwner() int { return l.perOwner }

// VNIs returns the number of VNIs.
func (l *Layout) VNIs() int { return l.vnis }

// VNIOf returns the VNI of owner c.
func (l *Layout) VNIOf(c int) route.VNI { return l.vniBase + route.VNI(c%l.vnis) }

// NextHopOf returns the nexthop of owner c's routes.
func (l *Layout) NextHopOf(c int) route.NextHop {
	a := [16]byte{0x20, 0x01, 0x0d, 0xb8, 11: 1}
	binary.BigEndian.PutUint32(a[12:], uint32(c))
	return route.NextHop{Address: netip.AddrFrom16(a)}
}

// Route returns route g.
func (l *Layout) Route(g int) route.Route {
	c := g / l.perOwner
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], prefixBase+uint32(g))
	return route.Route{
		VNI:     l.VNIOf(c),
		Prefix:  netip.PrefixFrom(netip.AddrFrom4(a), 32),
		NextHop: l.NextHopOf(c),
	}
}

// OwnerRoutes returns the range [lo, hi) of owner c's routes.
func (l *Layout) OwnerRoutes(c int) (lo, hi int) { return c * l.perOwner, (c + 1) * l.perOwner }

// VNISize returns the number of routes in the i-th VNI (VNIBase+i).
func (l *Layout) VNISize(i int) int {
	n := l.owners / l.vnis
	if i < l.owners%l.vnis {
		n++
	}
	return n * l.perOwner
}

// local returns the index of route g among the routes of its VNI.
func (l *Layout) local(g int) int {
	c := g / l.perOwner
	return (c/l.vnis)*l.perOwner + g%l.perOwner
}

// global is the inverse of local for the i-th VNI.
func (l *Layout) global(i, local int) int {
	c := (local/l.perOwner)*l.vnis + i
	return c*l.perOwner + local%l.perOwner
}

// AddFrames returns the ADD frames of routes [lo, hi), back to back. The
// slice aliases the Layout and must not be modified.
func (l *Layout) AddFrames(lo, hi int) []byte { return l.add[l.addOff[lo]:l.addOff[hi]] }

// RemoveFrames returns the REMOVE frames of routes [lo, hi), back to back.
// The first call encodes them all.
func (l *Layout) RemoveFrames(lo, hi int) []byte {
	l.removeOnce.Do(func() { l.remove, l.removeOff = l.encode(wire.ActionRemove) })
	return l.remove[l.removeOff[lo]:l.removeOff[hi]]
}

// addBody returns the body of route g's ADD frame.
func (l *Layout) addBody(g int) []byte {
	return l.add[l.addOff[g]+wire.HeaderLen : l.addOff[g+1]]
}

// matchKind classifies a received UPDATE.
type matchKind uint8

const (
	matchRoute   matchKind = iota // a route of the layout
	matchFence                    // a fence route (see Fence)
	matchForeign                  // anything else: never expected
)

// match identifies an UPDATE body. For a route of the layout it returns
// its number g; for a fence its number. The common case, a body encoded as
// proto.Marshal does (which is what v1 peers send), is recognised by
// comparing it with the expected bytes, which costs far less than decoding
// it. Anything else is decoded and compared as a route, so that a peer
// with another (valid) encoding is judged correctly too; an undecodable
// body is foreign.
func (l *Layout) match(body []byte) (kind matchKind, g int, add bool) {
	if g, add, ok := l.matchFast(body); ok {
		return matchRoute, g, add
	}
	u, err := wire.DecodeUpdate(body)
	if err != nil {
		return matchForeign, 0, false
	}
	add = u.Action == wire.ActionAdd
	if k, ok := fenceNumber(u.Route); ok {
		return matchFence, k, add
	}
	if g, ok := l.index(u.Route); ok {
		return matchRoute, g, add
	}
	return matchForeign, 0, add
}

// matchFast recognises the canonical encoding of a layout route: optional
// action (08 01), optional VNI (10 varint), then the destination
// (1a len 12 04 a b c d ...). It reads g from the prefix and accepts the
// body only if it equals the expected encoding byte for byte.
func (l *Layout) matchFast(body []byte) (g int, add bool, ok bool) {
	i, add := 0, true
	if len(body) >= 2 && body[0] == 0x08 {
		if body[1] != 1 {
			return 0, false, false
		}
		i, add = 2, false
	}
	rest := body[i:]
	j := 0
	if len(rest) > 0 && rest[0] == 0x10 {
		j = 1
		for j < len(rest) && j < 6 && rest[j] >= 0x80 {
			j++
		}
		j++
	}
	if len(rest) < j+8 || rest[j] != 0x1a || rest[j+2] != 0x12 || rest[j+3] != 4 {
		return 0, false, false
	}
	g = int(binary.BigEndian.Uint32(rest[j+4:]) - prefixBase)
	if g < 0 || g >= l.Len() || !bytes.Equal(rest, l.addBody(g)) {
		return 0, false, false
	}
	return g, add, true
}

// Fence returns fence route k in vni. Fences are routes outside every
// Layout (100.64.0.0/10 host prefixes) that a scenario announces after a
// batch of updates: the server handles a peer's messages in order and
// queues every subscriber's updates in order, so a subscriber that has
// received the fence has received everything sent before it. That turns
// "nothing more arrives" into an exact check with no waiting on timers.
func Fence(vni route.VNI, k int) route.Route {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], fenceBase+uint32(k))
	return route.Route{
		VNI:     vni,
		Prefix:  netip.PrefixFrom(netip.AddrFrom4(a), 32),
		NextHop: fenceNextHop,
	}
}

var fenceNextHop = route.NextHop{Address: netip.MustParseAddr("2001:db8:ffff::1")}

const fenceBase = 100<<24 | 64<<16 // 100.64.0.0

// fenceNumber reports whether r is a fence and which one.
func fenceNumber(r route.Route) (int, bool) {
	p := r.Prefix
	if !p.Addr().Is4() || p.Bits() != 32 {
		return 0, false
	}
	v := binary.BigEndian.Uint32(p.Addr().AsSlice())
	if v < fenceBase || v >= fenceBase+1<<22 || r.NextHop != fenceNextHop {
		return 0, false
	}
	return int(v - fenceBase), true
}

// fenceFrame returns the UPDATE frame adding or removing fence k in vni.
func fenceFrame(vni route.VNI, k int, add bool) []byte {
	a := wire.ActionAdd
	if !add {
		a = wire.ActionRemove
	}
	return wire.AppendUpdate(nil, a, Fence(vni, k))
}
