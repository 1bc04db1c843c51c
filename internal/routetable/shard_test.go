package routetable

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/metalbond/metalbond/route"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func std(addr string) route.NextHop {
	return route.NextHop{Address: netip.MustParseAddr(addr)}
}

func nat(addr string, from, to uint16) route.NextHop {
	return route.NextHop{Address: netip.MustParseAddr(addr), Type: route.NextHopNAT, NATPortFrom: from, NATPortTo: to}
}

func lb(addr string) route.NextHop {
	return route.NextHop{Address: netip.MustParseAddr(addr), Type: route.NextHopLoadBalancerTarget}
}

// mustCheck fails t if the invariants of s do not hold.
func mustCheck(t testing.TB, s *Shard) {
	t.Helper()
	if err := s.check(); err != nil {
		t.Fatal(err)
	}
}

func TestShardTransitions(t *testing.T) {
	const add, remove = true, false
	type step struct {
		add  bool
		p    string
		nh   route.NextHop
		src  SourceID
		want bool // first for add, last for remove
	}
	nh1, nh2 := std("2001:db8::1"), std("2001:db8::2")
	tests := []struct {
		name         string
		steps        []step
		wantLen      int
		wantPrefixes int
	}{
		{
			name:    "first add",
			steps:   []step{{add, "10.0.0.0/24", nh1, 1, true}},
			wantLen: 1, wantPrefixes: 1,
		},
		{
			name: "duplicate add from the same source",
			steps: []step{
				{add, "10.0.0.0/24", nh1, 1, true},
				{add, "10.0.0.0/24", nh1, 1, false},
				{remove, "10.0.0.0/24", nh1, 1, true},
			},
		},
		{
			name: "remove last holder then again",
			steps: []step{
				{add, "10.0.0.0/24", nh1, 1, true},
				{remove, "10.0.0.0/24", nh1, 1, true},
				{remove, "10.0.0.0/24", nh1, 1, false},
			},
		},
		{
			name: "remove not held",
			steps: []step{
				{remove, "10.0.0.0/24", nh1, 1, false},
				{add, "10.0.0.0/24", nh1, 1, true},
				{remove, "10.0.0.0/24", nh1, 2, false},
				{remove, "10.0.0.0/24", nh2, 1, false},
				{remove, "10.0.1.0/24", nh1, 1, false},
				{remove, "10.0.0.0/25", nh1, 1, false},
			},
			wantLen: 1, wantPrefixes: 1,
		},
		{
			name: "several holders",
			steps: []step{
				{add, "10.0.0.0/24", nh1, 1, true},
				{add, "10.0.0.0/24", nh1, 2, false},
				{add, "10.0.0.0/24", nh1, 3, false},
				{remove, "10.0.0.0/24", nh1, 2, false},
				{remove, "10.0.0.0/24", nh1, 1, false},
				{add, "10.0.0.0/24", nh1, 1, false},
				{remove, "10.0.0.0/24", nh1, 3, false},
				{remove, "10.0.0.0/24", nh1, 1, true},
			},
		},
		{
			name: "source 0 is valid",
			steps: []step{
				{add, "10.0.0.0/24", nh1, 0, true},
				{add, "10.0.0.0/24", nh1, 1, false},
				{remove, "10.0.0.0/24", nh1, 0, false},
				{remove, "10.0.0.0/24", nh1, 1, true},
			},
		},
		{
			name: "ECMP: one prefix, several nexthops",
			steps: []step{
				{add, "10.0.0.0/24", nh1, 1, true},
				{add, "10.0.0.0/24", nh2, 1, true},
				{add, "10.0.0.0/24", lb("2001:db8::3"), 2, true},
				{remove, "10.0.0.0/24", nh1, 1, true},
			},
			wantLen: 2, wantPrefixes: 1,
		},
		{
			name: "NAT nexthops differing only in port range",
			steps: []step{
				{add, "10.0.0.1/32", nat("2001:db8::1", 1000, 1999), 1, true},
				{add, "10.0.0.1/32", nat("2001:db8::1", 2000, 2999), 1, true},
				{add, "10.0.0.1/32", nat("2001:db8::1", 1000, 2999), 1, true},
				{remove, "10.0.0.1/32", nat("2001:db8::1", 2000, 2999), 1, true},
				{remove, "10.0.0.1/32", nat("2001:db8::1", 2000, 2999), 1, false},
			},
			wantLen: 2, wantPrefixes: 1,
		},
		{
			name: "nexthop type and target VNI make routes distinct",
			steps: []step{
				{add, "10.0.0.0/24", nh1, 1, true},
				{add, "10.0.0.0/24", lb("2001:db8::1"), 1, true},
				{add, "10.0.0.0/24", route.NextHop{Address: nh1.Address, TargetVNI: 7}, 1, true},
				{add, "10.0.0.0/24", nat("2001:db8::1", 0, 0), 1, true},
			},
			wantLen: 4, wantPrefixes: 1,
		},
		{
			name: "IPv4 and IPv6",
			steps: []step{
				{add, "10.0.0.0/8", nh1, 1, true},
				{add, "2001:db8::/32", nh1, 1, true},
				{add, "2001:db8::1/128", nh1, 1, true},
				{add, "0.0.0.0/0", nh1, 1, true},
				{add, "::/0", nh1, 1, true},
				{remove, "::/0", nh1, 1, true},
			},
			wantLen: 4, wantPrefixes: 4,
		},
		{
			name: "IPv4-mapped IPv6 is distinct from IPv4",
			steps: []step{
				{add, "10.0.0.0/8", nh1, 1, true},
				{add, "::ffff:10.0.0.0/104", nh1, 1, true},
				{add, "::ffff:10.0.0.0/8", nh1, 1, true},
				{remove, "10.0.0.0/8", nh1, 1, true},
				{remove, "10.0.0.0/8", nh1, 1, false},
			},
			wantLen: 2, wantPrefixes: 2,
		},
		{
			name: "IPv4-mapped nexthop address is distinct",
			steps: []step{
				{add, "10.0.0.0/8", std("192.0.2.1"), 1, true},
				{add, "10.0.0.0/8", std("::ffff:192.0.2.1"), 1, true},
			},
			wantLen: 2, wantPrefixes: 1,
		},
		{
			name: "prefix length makes routes distinct",
			steps: []step{
				{add, "10.0.0.0/8", nh1, 1, true},
				{add, "10.0.0.0/16", nh1, 1, true},
				{add, "10.0.0.0/32", nh1, 1, true},
			},
			wantLen: 3, wantPrefixes: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewShard(23)
			for i, st := range tt.steps {
				var got bool
				if st.add {
					got = s.Add(pfx(st.p), st.nh, st.src)
				} else {
					got = s.Remove(pfx(st.p), st.nh, st.src)
				}
				if got != st.want {
					op := "Remove"
					if st.add {
						op = "Add"
					}
					t.Fatalf("step %d: %s(%s, %s, %d) = %t, want %t", i, op, st.p, st.nh, st.src, got, st.want)
				}
				mustCheck(t, s)
			}
			if got := s.Len(); got != tt.wantLen {
				t.Errorf("Len() = %d, want %d", got, tt.wantLen)
			}
			if got := s.Prefixes(); got != tt.wantPrefixes {
				t.Errorf("Prefixes() = %d, want %d", got, tt.wantPrefixes)
			}
		})
	}
}

func TestShardHolders(t *testing.T) {
	s := NewShard(1)
	p, nh := pfx("10.0.0.0/24"), std("2001:db8::1")
	for _, src := range []SourceID{5, 0, 9} {
		s.Add(p, nh, src)
	}
	h := s.Holders(p, nh)
	if h.Len() != 3 || !h.Has(0) || !h.Has(5) || !h.Has(9) || h.Has(1) {
		t.Errorf("Holders: Len %d, Has(0,5,9,1) = %t %t %t %t", h.Len(), h.Has(0), h.Has(5), h.Has(9), h.Has(1))
	}
	var got []SourceID
	h.Each(func(src SourceID) { got = append(got, src) })
	slices.Sort(got)
	if !slices.Equal(got, []SourceID{0, 5, 9}) {
		t.Errorf("Each: %v", got)
	}
	for _, h := range []Holders{{}, s.Holders(p, std("2001:db8::2")), s.Holders(pfx("10.0.0.0/25"), nh)} {
		if h.Len() != 0 || h.Has(0) {
			t.Errorf("Holders of a missing route: Len %d, Has(0) %t", h.Len(), h.Has(0))
		}
		h.Each(func(src SourceID) { t.Errorf("Each of a missing route: %d", src) })
	}
	if got := s.SourceLen(5); got != 1 {
		t.Errorf("SourceLen(5) = %d, want 1", got)
	}
	if got := s.SourceLen(6); got != 0 {
		t.Errorf("SourceLen(6) = %d, want 0", got)
	}
}

func TestShardRemoveSource(t *testing.T) {
	type rt struct {
		p  netip.Prefix
		nh route.NextHop
	}
	a := rt{pfx("10.0.0.0/24"), std("2001:db8::1")}
	b := rt{pfx("10.0.0.0/24"), std("2001:db8::2")}
	c := rt{pfx("2001:db8:1::/64"), std("2001:db8::1")}
	d := rt{pfx("10.0.1.0/24"), nat("2001:db8::3", 0, 1023)}
	held := map[SourceID][]rt{
		1: {a, b, c},
		2: {a, d},
		3: {c},
		0: {d},
	}
	tests := []struct {
		name     string
		remove   []SourceID
		wantGone []rt
		wantLen  int
	}{
		{"unknown source", []SourceID{7}, nil, 4},
		{"sole holder of some", []SourceID{1}, []rt{b}, 3},
		{"twice", []SourceID{1, 1}, []rt{b}, 3},
		{"source 0", []SourceID{0}, nil, 4},
		{"last holders", []SourceID{1, 2}, []rt{b, a}, 2},
		{"all", []SourceID{3, 1, 0, 2}, []rt{b, a, c, d}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewShard(1)
			for src, rts := range held {
				for _, r := range rts {
					s.Add(r.p, r.nh, src)
				}
			}
			var gone []rt
			for _, src := range tt.remove {
				s.RemoveSource(src, func(p netip.Prefix, nh route.NextHop) {
					gone = append(gone, rt{p, nh})
				})
				mustCheck(t, s)
				if n := s.SourceLen(src); n != 0 {
					t.Errorf("SourceLen(%d) = %d after RemoveSource", src, n)
				}
			}
			cmp := func(x, y rt) int {
				return route.Route{Prefix: x.p, NextHop: x.nh}.Compare(route.Route{Prefix: y.p, NextHop: y.nh})
			}
			slices.SortFunc(gone, cmp)
			slices.SortFunc(tt.wantGone, cmp)
			if !slices.Equal(gone, tt.wantGone) {
				t.Errorf("gone %v, want %v", gone, tt.wantGone)
			}
			if s.Len() != tt.wantLen {
				t.Errorf("Len() = %d, want %d", s.Len(), tt.wantLen)
			}
			for src, rts := range held {
				if slices.Contains(tt.remove, src) {
					continue
				}
				for _, r := range rts {
					if !s.Holders(r.p, r.nh).Has(src) {
						t.Errorf("source %d lost %s via %s", src, r.p, r.nh)
					}
				}
			}
		})
	}

	s := NewShard(1)
	s.Add(a.p, a.nh, 1)
	s.RemoveSource(1, nil) // a nil gone is allowed
	if s.Len() != 0 {
		t.Errorf("Len() = %d after RemoveSource(1, nil)", s.Len())
	}
}

func TestShardRange(t *testing.T) {
	s := NewShard(1)
	want := map[route.Route]bool{}
	for i := range 10 {
		r := route.Route{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 0}), 24), NextHop: std("2001:db8::1")}
		s.Add(r.Prefix, r.NextHop, SourceID(i))
		s.Add(r.Prefix, r.NextHop, 100)
		want[r] = true
	}
	got := map[route.Route]bool{}
	s.Range(func(p netip.Prefix, nh route.NextHop, h Holders) bool {
		r := route.Route{Prefix: p, NextHop: nh}
		if got[r] {
			t.Errorf("Range: %s twice", r)
		}
		got[r] = true
		if i := SourceID(p.Addr().As4()[2]); h.Len() != 2 || !h.Has(i) || !h.Has(100) {
			t.Errorf("Range: %s: holders Len %d, Has(%d) %t", r, h.Len(), i, h.Has(i))
		}
		return true
	})
	if len(got) != len(want) {
		t.Errorf("Range visited %d routes, want %d", len(got), len(want))
	}
	for _, stop := range []int{1, 3, 10} {
		n := 0
		s.Range(func(netip.Prefix, route.NextHop, Holders) bool {
			n++
			return n < stop
		})
		if n != stop {
			t.Errorf("Range stopping after %d visited %d", stop, n)
		}
	}
	NewShard(1).Range(func(netip.Prefix, route.NextHop, Holders) bool {
		t.Error("Range of an empty shard called fn")
		return true
	})
}

func TestShardNextHops(t *testing.T) {
	s := NewShard(1)
	p := pfx("10.0.0.0/24")
	nhs := []route.NextHop{
		nat("2001:db8::1", 2000, 2999),
		std("2001:db8::2"),
		nat("2001:db8::1", 1000, 1999),
		lb("2001:db8::1"),
		std("2001:db8::1"),
	}
	for i, nh := range nhs {
		s.Add(p, nh, SourceID(i))
	}
	s.Add(pfx("10.0.0.0/25"), std("2001:db8::9"), 50)
	s.Add(pfx("::ffff:10.0.0.0/120"), std("2001:db8::9"), 50)
	s.Add(p, std("2001:db8::2"), 9) // second holder: no duplicate nexthop

	want := slices.Clone(nhs)
	slices.SortFunc(want, route.NextHop.Compare)
	if got := s.NextHops(p); !slices.Equal(got, want) {
		t.Errorf("NextHops(%s) = %v, want %v", p, got, want)
	}
	if got := s.NextHops(pfx("10.0.1.0/24")); got != nil {
		t.Errorf("NextHops of a missing prefix = %v", got)
	}
	// Remove the chain head, a middle and the tail, in turn.
	for len(want) > 0 {
		i := len(want) / 2
		for src, nh := range nhs {
			if nh == want[i] {
				s.RemoveSource(SourceID(src), nil)
			}
		}
		s.Remove(p, want[i], 9)
		want = slices.Delete(want, i, i+1)
		mustCheck(t, s)
		if got := s.NextHops(p); !slices.Equal(got, want) {
			t.Fatalf("NextHops(%s) = %v, want %v", p, got, want)
		}
	}
	if s.Prefixes() != 2 {
		t.Errorf("Prefixes() = %d, want 2", s.Prefixes())
	}
}

func TestPrefixKey(t *testing.T) {
	prefixes := []netip.Prefix{
		{},
		pfx("0.0.0.0/0"),
		pfx("10.0.0.0/8"),
		pfx("10.0.0.1/8"), // host bits are kept as given
		pfx("255.255.255.255/32"),
		pfx("::/0"),
		pfx("::ffff:10.0.0.0/104"),
		pfx("::ffff:10.0.0.0/8"),
		pfx("2001:db8::/32"),
		pfx("2001:db8::1/128"),
		netip.PrefixFrom(netip.MustParseAddr("10.0.0.0"), 33),   // invalid length
		netip.PrefixFrom(netip.MustParseAddr("2001:db8::"), -1), // invalid length
		netip.PrefixFrom(netip.MustParseAddr("fe80::1%eth0"), 64),
	}
	keys := map[prefixKey]netip.Prefix{}
	for _, p := range prefixes {
		k := keyOf(p)
		if got := k.prefix(); got != p {
			t.Errorf("keyOf(%s).prefix() = %s", p, got)
		}
		if q, dup := keys[k]; dup {
			t.Errorf("%s and %s share a key", p, q)
		}
		keys[k] = p
	}
}

func TestShardShrinks(t *testing.T) {
	s := NewShard(1)
	const n = 5000
	for i := range n {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
		s.Add(p, std("2001:db8::1"), SourceID(i%7))
		s.Add(p, std("2001:db8::2"), SourceID(10+i%5))
	}
	mustCheck(t, s)
	bigRoutes, bigHolds, bigIndex := s.routes.capacity(), s.holds.capacity(), len(s.byRoute.slots)
	for src := range SourceID(7) {
		s.RemoveSource(src, nil)
		mustCheck(t, s)
	}
	if s.Len() != n {
		t.Fatalf("Len() = %d, want %d", s.Len(), n)
	}
	for i := range n - 10 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
		if !s.Remove(p, std("2001:db8::2"), SourceID(10+i%5)) {
			t.Fatalf("Remove(%s) = false", p)
		}
	}
	mustCheck(t, s)
	if s.routes.capacity() >= bigRoutes/4 || s.holds.capacity() >= bigHolds/4 || len(s.byRoute.slots) >= bigIndex/4 {
		t.Errorf("no shrinking: routes cap %d (was %d), holds cap %d (was %d), index %d (was %d)",
			s.routes.capacity(), bigRoutes, s.holds.capacity(), bigHolds, len(s.byRoute.slots), bigIndex)
	}
	for src := range SourceID(5) {
		s.RemoveSource(10+src, nil)
	}
	if s.Len() != 0 || s.routes.chunks != nil || s.holds.chunks != nil || s.sources != nil || s.byRoute.slots != nil || s.nexthops.ids != nil {
		t.Errorf("empty shard keeps memory: %+v", s)
	}
	mustCheck(t, s)
}
