package routetable

import (
	"encoding/binary"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/metalbond/metalbond/route"
)

// typicalRoute returns route j of source src, shaped like what a
// hypervisor announces: one nexthop address per source, with one route in
// 25 through a NAT gateway instead; prefixes 60% IPv4 /32, 20% IPv4 /24,
// 10% IPv6 /128 and 10% IPv6 /64, spread over vnis VNIs. Routes are
// distinct for distinct (src, j) with src < 2^14 and j < 2^10.
func typicalRoute(src, j, vnis int) route.Route {
	g := uint32(src)<<10 | uint32(j)
	var p netip.Prefix
	switch j % 10 {
	case 0, 1, 2, 3, 4, 5:
		p = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(g >> 16), byte(g >> 8), byte(g)}), 32)
	case 6, 7:
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], g<<8)
		p = netip.PrefixFrom(netip.AddrFrom4(a), 24)
	case 8:
		a := [16]byte{0: 0xfd, 15: byte(g), 14: byte(g >> 8), 13: byte(g >> 16)}
		p = netip.PrefixFrom(netip.AddrFrom16(a), 128)
	case 9:
		a := [16]byte{0: 0xfd, 1: 1, 7: byte(g), 6: byte(g >> 8), 5: byte(g >> 16)}
		p = netip.PrefixFrom(netip.AddrFrom16(a), 64)
	}
	var nh route.NextHop
	if j%25 == 3 {
		a := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 15: byte(src % 8)}
		from := uint16(src/8%64) * 1024
		nh = route.NextHop{Address: netip.AddrFrom16(a), Type: route.NextHopNAT, NATPortFrom: from, NATPortTo: from + 1023}
	} else {
		a := [16]byte{0x20, 0x01, 0x0d, 0xb8, 6: byte(src >> 8), 7: byte(src), 15: 1}
		nh = route.NextHop{Address: netip.AddrFrom16(a)}
	}
	return route.Route{VNI: route.VNI(j / 10 % vnis), Prefix: p, NextHop: nh}
}

// shardRoutes returns n typical routes of one VNI, 1000 per source.
func shardRoutes(n int) []route.Route {
	rs := make([]route.Route, n)
	for i := range rs {
		rs[i] = typicalRoute(i/1000, i%1000, 1)
	}
	return rs
}

func BenchmarkShardAdd(b *testing.B) {
	rs := shardRoutes(1 << 17)
	s := NewShard(0)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%len(rs) == 0 && i > 0 {
			b.StopTimer()
			s = NewShard(0)
			b.StartTimer()
		}
		r := &rs[i%len(rs)]
		if !s.Add(r.Prefix, r.NextHop, SourceID(i%len(rs)/1000)) {
			b.Fatal("not first")
		}
	}
}

func BenchmarkShardRemove(b *testing.B) {
	rs := shardRoutes(1 << 17)
	s := NewShard(0)
	fill := func() {
		for i, r := range rs {
			s.Add(r.Prefix, r.NextHop, SourceID(i/1000))
		}
	}
	fill()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%len(rs) == 0 && i > 0 {
			b.StopTimer()
			fill()
			b.StartTimer()
		}
		r := &rs[i%len(rs)]
		if !s.Remove(r.Prefix, r.NextHop, SourceID(i%len(rs)/1000)) {
			b.Fatal("not last")
		}
	}
}

func BenchmarkShardHolders(b *testing.B) {
	rs := shardRoutes(1 << 17)
	s := NewShard(0)
	for i, r := range rs {
		s.Add(r.Prefix, r.NextHop, SourceID(i/1000))
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r := &rs[i%len(rs)]
		if s.Holders(r.Prefix, r.NextHop).Len() != 1 {
			b.Fatal("missing")
		}
	}
}

// BenchmarkRemoveSource withdraws the 1000 routes of one source from
// shards of different sizes. The work per route does not depend on the
// size of the shard; the time does somewhat, through cache misses.
func BenchmarkRemoveSource(b *testing.B) {
	for _, tt := range []struct {
		name    string
		sources int
	}{{"shard=10k", 10}, {"shard=1M", 1000}} {
		b.Run(tt.name, func(b *testing.B) {
			rs := shardRoutes(tt.sources * 1000)
			s := NewShard(0)
			for i, r := range rs {
				s.Add(r.Prefix, r.NextHop, SourceID(i/1000))
			}
			b.ReportAllocs()
			gone := 0
			for i := 0; b.Loop(); i++ {
				src := i % tt.sources
				s.RemoveSource(SourceID(src), func(netip.Prefix, route.NextHop) { gone++ })
				b.StopTimer()
				for _, r := range rs[src*1000 : (src+1)*1000] {
					s.Add(r.Prefix, r.NextHop, SourceID(src))
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(gone), "ns/route")
		})
	}
}

// BenchmarkMemory fills a Table with 1,000,000 routes from 1,000 sources
// (1,000 routes each, in 10 VNIs) and reports the heap it uses per route.
// With holders=2 every route is held by a second source as well, as in a
// client connected to two route servers.
func BenchmarkMemory(b *testing.B) {
	const sources, perSource, vnis = 1000, 1000, 10
	for _, holders := range []int{1, 2} {
		b.Run("holders="+string(rune('0'+holders)), func(b *testing.B) {
			var perRoute, perAdd float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				start := time.Now()
				tab := New()
				for h := range holders {
					for src := range sources {
						for j := range perSource {
							tab.Add(typicalRoute(src, j, vnis), SourceID(h*sources+src))
						}
					}
				}
				perAdd = float64(time.Since(start).Nanoseconds()) / float64(holders*sources*perSource)
				runtime.GC()
				runtime.ReadMemStats(&after)
				if n := tab.Len(); n != sources*perSource {
					b.Fatalf("Len() = %d", n)
				}
				perRoute = float64(after.HeapAlloc-before.HeapAlloc) / float64(sources*perSource)
				runtime.KeepAlive(tab)
			}
			b.ReportMetric(perRoute, "B/route")
			b.ReportMetric(perAdd, "ns/add")
		})
	}
}
