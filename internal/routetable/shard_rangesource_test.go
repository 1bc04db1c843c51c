package routetable

import (
	"net/netip"
	"testing"

	"github.com/metalbond/metalbond/route"
)

func TestRangeSource(t *testing.T) {
	s := NewShard(1)
	nh := route.NextHop{Address: netip.MustParseAddr("2001:db8::1")}
	want := map[netip.Prefix]bool{}
	for i := range 100 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 0}), 24)
		s.Add(p, nh, 7)
		if i%2 == 0 {
			s.Add(p, nh, 8)
		}
		want[p] = true
	}
	got := map[netip.Prefix]bool{}
	s.RangeSource(7, func(p netip.Prefix, n route.NextHop) bool {
		if n != nh || got[p] {
			t.Fatalf("bad or repeated route %v %v", p, n)
		}
		got[p] = true
		return true
	})
	if len(got) != len(want) {
		t.Fatalf("RangeSource(7) gave %d routes, want %d", len(got), len(want))
	}
	n := 0
	s.RangeSource(8, func(netip.Prefix, route.NextHop) bool { n++; return n < 10 })
	if n != 10 {
		t.Fatalf("early stop after %d calls, want 10", n)
	}
	s.RangeSource(9, func(netip.Prefix, route.NextHop) bool { t.Fatal("called for unknown source"); return false })
}
