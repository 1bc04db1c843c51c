package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/metalbond/metalbond/route"
)

// Key layout under Config.Prefix (default "/metalbond/"):
//
//	<prefix>s/<server-id>               member record (JSON), under the server's lease
//	<prefix>r/<server-id>/<route>       one route, empty value, under the server's lease
//
// <route> is the binary encoding below. A route is its key: the value is
// empty, so a route costs one key and no value bytes. Keys sort by server,
// then VNI, address family, prefix length and prefix.
//
// Route encoding, big endian:
//
//	bytes 0-2     VNI (24 bits)
//	byte 3        flags: bit 0 set = IPv6 prefix, bit 1 set = IPv6 nexthop
//	              address; bits 4-7 are the format version, 0
//	byte 4        prefix length in bits
//	⌈bits/8⌉      the significant bytes of the prefix address (the prefix
//	              is masked, so the rest are zero and are left out)
//	4 or 16       nexthop address
//	1             nexthop type (the v1 wire value)
//	3             nexthop target VNI
//	4             NAT port range from, to (only for type NAT)
//
// An IPv4 /24 with an IPv6 standard nexthop takes 28 bytes, an IPv6 /64 33.
const (
	routesDir  = "r/"
	membersDir = "s/"

	flagPrefix6  = 1 << 0
	flagNextHop6 = 1 << 1
	flagsKnown   = flagPrefix6 | flagNextHop6

	// maxRouteKeyLen bounds an encoded route: flags, VNI, bits, 16 prefix
	// bytes, 16 address bytes, type, target VNI, NAT range.
	maxRouteKeyLen = 1 + 3 + 1 + 16 + 16 + 1 + 3 + 4
)

// errBadKey reports a route key this version cannot decode.
var errBadKey = errors.New("malformed route key")

// appendRoute appends the encoding of r, which must be valid, to b.
func appendRoute(b []byte, r route.Route) []byte {
	var flags byte
	pa, nh := r.Prefix.Addr(), r.NextHop.Address
	if !pa.Is4() {
		flags |= flagPrefix6
	}
	if !nh.Is4() {
		flags |= flagNextHop6
	}
	bits := r.Prefix.Bits()
	b = append(b, byte(r.VNI>>16), byte(r.VNI>>8), byte(r.VNI), flags, byte(bits))
	if pa.Is4() {
		a := pa.As4()
		b = append(b, a[:(bits+7)/8]...)
	} else {
		a := pa.As16()
		b = append(b, a[:(bits+7)/8]...)
	}
	if nh.Is4() {
		a := nh.As4()
		b = append(b, a[:]...)
	} else {
		a := nh.As16()
		b = append(b, a[:]...)
	}
	t := r.NextHop.TargetVNI
	b = append(b, byte(r.NextHop.Type), byte(t>>16), byte(t>>8), byte(t))
	if r.NextHop.Type == route.NextHopNAT {
		b = binary.BigEndian.AppendUint16(b, r.NextHop.NATPortFrom)
		b = binary.BigEndian.AppendUint16(b, r.NextHop.NATPortTo)
	}
	return b
}

// parseRoute decodes a route encoded by appendRoute. It accepts only the
// canonical encoding of a valid route, so that every route has exactly one
// key.
func parseRoute(b string) (route.Route, error) {
	var r route.Route
	if len(b) < 5 {
		return r, errBadKey
	}
	r.VNI = route.VNI(b[0])<<16 | route.VNI(b[1])<<8 | route.VNI(b[2])
	flags := b[3]
	if flags&^flagsKnown != 0 {
		return r, fmt.Errorf("%w: unknown format %#x", errBadKey, flags)
	}
	bits := int(b[4])
	b = b[5:]
	alen := 4
	if flags&flagPrefix6 != 0 {
		alen = 16
	}
	n := (bits + 7) / 8
	if bits > 8*alen || len(b) < n {
		return r, errBadKey
	}
	var a [16]byte
	copy(a[:], b[:n])
	b = b[n:]
	var addr netip.Addr
	if alen == 4 {
		addr = netip.AddrFrom4([4]byte(a[:4]))
	} else {
		addr = netip.AddrFrom16(a)
	}
	r.Prefix = netip.PrefixFrom(addr, bits)

	alen = 4
	if flags&flagNextHop6 != 0 {
		alen = 16
	}
	if len(b) < alen+4 {
		return r, errBadKey
	}
	if alen == 4 {
		r.NextHop.Address = netip.AddrFrom4([4]byte([]byte(b[:4])))
	} else {
		r.NextHop.Address = netip.AddrFrom16([16]byte([]byte(b[:16])))
	}
	b = b[alen:]
	r.NextHop.Type = route.NextHopType(b[0])
	r.NextHop.TargetVNI = route.VNI(b[1])<<16 | route.VNI(b[2])<<8 | route.VNI(b[3])
	b = b[4:]
	if r.NextHop.Type == route.NextHopNAT {
		if len(b) < 4 {
			return r, errBadKey
		}
		r.NextHop.NATPortFrom = uint16(b[0])<<8 | uint16(b[1])
		r.NextHop.NATPortTo = uint16(b[2])<<8 | uint16(b[3])
		b = b[4:]
	}
	if len(b) != 0 {
		return r, fmt.Errorf("%w: %d trailing bytes", errBadKey, len(b))
	}
	if err := r.Validate(); err != nil {
		return r, fmt.Errorf("%w: %w", errBadKey, err)
	}
	return r, nil
}

// keyspace builds and splits the keys of one cluster prefix.
type keyspace struct {
	prefix  string // ends in "/"
	routes  string // prefix + routesDir
	members string // prefix + membersDir
}

func newKeyspace(prefix string) keyspace {
	return keyspace{prefix: prefix, routes: prefix + routesDir, members: prefix + membersDir}
}

// routeDir returns the directory of one server's routes.
func (k keyspace) routeDir(id string) string { return k.routes + id + "/" }

// member returns the key of one server's member record.
func (k keyspace) member(id string) string { return k.members + id }

// keyKind classifies a key under the prefix.
type keyKind uint8

const (
	kindOther keyKind = iota
	kindRoute
	kindMember
)

// split classifies key and returns the server ID and, for a route key,
// the route's encoding.
func (k keyspace) split(key string) (kind keyKind, id, rest string) {
	if s, ok := strings.CutPrefix(key, k.routes); ok {
		id, rest, ok := strings.Cut(s, "/")
		if !ok || id == "" {
			return kindOther, "", ""
		}
		return kindRoute, id, rest
	}
	if id, ok := strings.CutPrefix(key, k.members); ok && id != "" && !strings.Contains(id, "/") {
		return kindMember, id, ""
	}
	return kindOther, "", ""
}
