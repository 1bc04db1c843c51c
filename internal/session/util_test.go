package session

import (
	"net/netip"

	"github.com/metalbond/metalbond/route"
)

func testRoute(i int) route.Route {
	return route.Route{
		VNI:     23,
		Prefix:  netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32),
		NextHop: route.NextHop{Address: netip.MustParseAddr("2001:db8::1")},
	}
}
