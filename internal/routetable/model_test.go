package routetable

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/metalbond/metalbond/route"
)

// model is the obvious implementation of a Table: a map from route to the
// set of its holders.
type model map[route.Route]map[SourceID]bool

// TestModel runs random operations on a Table and on a model and compares
// every observable result, plus the internal invariants, after each batch.
func TestModel(t *testing.T) {
	tests := []struct {
		name                           string
		vnis, prefixes, nexthops, srcs int
		ops, batch                     int
	}{
		// Few values: many holders per route, ECMP and key collisions.
		{"dense", 2, 12, 6, 5, 20000, 100},
		// More values: index growth and shrinking.
		{"sparse", 3, 3000, 40, 30, 60000, 2000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(tt.prefixes)))
			prefixes := randomPrefixes(rng, tt.prefixes)
			nexthops := randomNextHops(rng, tt.nexthops)
			randomRoute := func() route.Route {
				return route.Route{
					VNI:     route.VNI(rng.IntN(tt.vnis)),
					Prefix:  prefixes[rng.IntN(len(prefixes))],
					NextHop: nexthops[rng.IntN(len(nexthops))],
				}
			}

			tab, m := New(), model{}
			for done := 0; done < tt.ops; done += tt.batch {
				// Alternate growing and shrinking phases, so the
				// table also empties out now and then.
				addShare := 0.7
				if done/(tt.ops/6)%2 == 1 {
					addShare = 0.25
				}
				for range tt.batch {
					src := SourceID(rng.IntN(tt.srcs))
					switch x := rng.Float64(); {
					case x < addShare:
						r := randomRoute()
						want := len(m[r]) == 0
						if m[r] == nil {
							m[r] = map[SourceID]bool{}
						}
						m[r][src] = true
						if got := tab.Add(r, src); got != want {
							t.Fatalf("Add(%s, %d) = %t, want %t", r, src, got, want)
						}
					case x < 0.995:
						r := randomRoute()
						if rng.IntN(2) == 0 {
							// Pick a route src holds, if any.
							for held, hs := range m {
								if hs[src] {
									r = held
									break
								}
							}
						}
						want := m[r][src] && len(m[r]) == 1
						delete(m[r], src)
						if len(m[r]) == 0 {
							delete(m, r)
						}
						if got := tab.Remove(r, src); got != want {
							t.Fatalf("Remove(%s, %d) = %t, want %t", r, src, got, want)
						}
					default:
						var want []route.Route
						for r, hs := range m {
							if hs[src] {
								if delete(hs, src); len(hs) == 0 {
									delete(m, r)
									want = append(want, r)
								}
							}
						}
						var got []route.Route
						tab.RemoveSource(src, func(r route.Route) { got = append(got, r) })
						slices.SortFunc(got, route.Route.Compare)
						slices.SortFunc(want, route.Route.Compare)
						if !slices.Equal(got, want) {
							t.Fatalf("RemoveSource(%d): gone %v, want %v", src, got, want)
						}
					}
				}
				if err := compare(tab, m, prefixes, tt.srcs); err != nil {
					t.Fatalf("after %d ops: %v", done+tt.batch, err)
				}
			}
		})
	}
}

// compare checks every observable result of tab against m.
func compare(tab *Table, m model, prefixes []netip.Prefix, srcs int) error {
	if tab.Len() != len(m) {
		return fmt.Errorf("Len() = %d, want %d", tab.Len(), len(m))
	}
	byVNI := map[route.VNI][]route.Route{}
	for r := range m {
		byVNI[r.VNI] = append(byVNI[r.VNI], r)
	}
	var vnis []route.VNI
	for vni := range byVNI {
		vnis = append(vnis, vni)
	}
	slices.Sort(vnis)
	if got := tab.VNIs(); !slices.Equal(got, vnis) {
		return fmt.Errorf("VNIs() = %v, want %v", got, vnis)
	}
	tab.mu.RLock()
	defer tab.mu.RUnlock()
	if len(tab.shards) != len(vnis) {
		return fmt.Errorf("%d shards for %d VNIs", len(tab.shards), len(vnis))
	}
	for _, vni := range vnis {
		want := byVNI[vni]
		slices.SortFunc(want, route.Route.Compare)
		if got := tab.Routes(vni); !slices.Equal(got, want) {
			return fmt.Errorf("Routes(%d): %d routes, want %d", vni, len(got), len(want))
		}
		if got := tab.VNILen(vni); got != len(want) {
			return fmt.Errorf("VNILen(%d) = %d, want %d", vni, got, len(want))
		}
		for _, r := range want {
			var hs []SourceID
			for src := range m[r] {
				hs = append(hs, src)
			}
			slices.Sort(hs)
			if got := tab.Holders(r); !slices.Equal(got, hs) {
				return fmt.Errorf("Holders(%s) = %v, want %v", r, got, hs)
			}
			if !tab.Has(r) {
				return fmt.Errorf("Has(%s) = false", r)
			}
		}

		s := tab.shards[vni].s
		if err := s.check(); err != nil {
			return fmt.Errorf("VNI %d: %w", vni, err)
		}
		seen := 0
		var err error
		s.Range(func(p netip.Prefix, nh route.NextHop, h Holders) bool {
			seen++
			hs := m[route.Route{VNI: vni, Prefix: p, NextHop: nh}]
			if h.Len() != len(hs) {
				err = fmt.Errorf("Range: %s %s: %d holders, want %d", p, nh, h.Len(), len(hs))
			}
			h.Each(func(src SourceID) {
				if !hs[src] {
					err = fmt.Errorf("Range: %s %s: unexpected holder %d", p, nh, src)
				}
			})
			return err == nil
		})
		if err != nil {
			return err
		}
		if seen != len(want) {
			return fmt.Errorf("Range(%d) visited %d routes, want %d", vni, seen, len(want))
		}
		perPrefix := map[netip.Prefix][]route.NextHop{}
		perSource := map[SourceID]int{}
		for _, r := range want {
			perPrefix[r.Prefix] = append(perPrefix[r.Prefix], r.NextHop)
			for src := range m[r] {
				perSource[src]++
			}
		}
		if s.Prefixes() != len(perPrefix) {
			return fmt.Errorf("VNI %d: Prefixes() = %d, want %d", vni, s.Prefixes(), len(perPrefix))
		}
		for _, p := range prefixes {
			want := perPrefix[p]
			slices.SortFunc(want, route.NextHop.Compare)
			if got := s.NextHops(p); !slices.Equal(got, want) {
				return fmt.Errorf("VNI %d: NextHops(%s) = %v, want %v", vni, p, got, want)
			}
		}
		for src := range SourceID(srcs) {
			if got := s.SourceLen(src); got != perSource[src] {
				return fmt.Errorf("VNI %d: SourceLen(%d) = %d, want %d", vni, src, got, perSource[src])
			}
		}
	}
	return nil
}

// randomPrefixes returns n distinct prefixes: IPv4, IPv6 and IPv4-mapped
// IPv6 with the same bytes as IPv4 ones, and one address with several
// lengths.
func randomPrefixes(rng *rand.Rand, n int) []netip.Prefix {
	seen := map[netip.Prefix]bool{}
	var ps []netip.Prefix
	add := func(p netip.Prefix) {
		if p = p.Masked(); !seen[p] && len(ps) < n {
			seen[p] = true
			ps = append(ps, p)
		}
	}
	for len(ps) < n {
		var a4 [4]byte
		a4[0] = 10
		a4[1] = byte(rng.IntN(4))
		a4[2] = byte(rng.IntN(256))
		a4[3] = byte(rng.IntN(256))
		switch rng.IntN(4) {
		case 0:
			add(netip.PrefixFrom(netip.AddrFrom4(a4), 32))
		case 1:
			add(netip.PrefixFrom(netip.AddrFrom4(a4), 24))
			add(netip.PrefixFrom(netip.AddrFrom4(a4), 16))
		case 2:
			add(netip.PrefixFrom(netip.AddrFrom4(a4), 32))
			add(netip.PrefixFrom(netip.AddrFrom16(netip.AddrFrom4(a4).As16()), 128))
		case 3:
			var a6 [16]byte
			a6[0], a6[1], a6[2], a6[3] = 0x20, 0x01, 0x0d, 0xb8
			a6[15] = byte(rng.IntN(256))
			a6[7] = byte(rng.IntN(16))
			add(netip.PrefixFrom(netip.AddrFrom16(a6), 64+64*rng.IntN(2)))
		}
	}
	return ps
}

// randomNextHops returns n distinct nexthops of every type, NAT ones
// differing only in their port range among them.
func randomNextHops(rng *rand.Rand, n int) []route.NextHop {
	seen := map[route.NextHop]bool{}
	var nhs []route.NextHop
	for len(nhs) < n {
		var a [16]byte
		a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
		a[15] = byte(rng.IntN(n/3 + 1))
		nh := route.NextHop{Address: netip.AddrFrom16(a)}
		switch rng.IntN(4) {
		case 1:
			nh.Type = route.NextHopNAT
			nh.NATPortFrom = uint16(rng.IntN(4)) * 1024
			nh.NATPortTo = nh.NATPortFrom + 1023
		case 2:
			nh.Type = route.NextHopLoadBalancerTarget
		case 3:
			nh.TargetVNI = route.VNI(rng.IntN(3))
		}
		if !seen[nh] {
			seen[nh] = true
			nhs = append(nhs, nh)
		}
	}
	return nhs
}
