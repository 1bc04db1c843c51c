package routetable

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/metalbond/metalbond/route"
)

func mustRoute(t testing.TB, s string) route.Route {
	t.Helper()
	r, err := route.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestTable(t *testing.T) {
	tab := New()
	r1 := mustRoute(t, "23#10.0.0.0/24#2001:db8::1")
	r2 := mustRoute(t, "23#10.0.0.0/24#2001:db8::2#NAT#0#1023")
	r3 := mustRoute(t, "7#2001:db8:1::/64#2001:db8::1#LB")
	r4 := mustRoute(t, "100#::ffff:10.0.0.0/120#2001:db8::1")

	steps := []struct {
		name string
		do   func() bool
		want bool
	}{
		{"add r1 by 1", func() bool { return tab.Add(r1, 1) }, true},
		{"add r1 by 2", func() bool { return tab.Add(r1, 2) }, false},
		{"add r1 by 2 again", func() bool { return tab.Add(r1, 2) }, false},
		{"add r2 by 1", func() bool { return tab.Add(r2, 1) }, true},
		{"add r3 by 2", func() bool { return tab.Add(r3, 2) }, true},
		{"add r4 by 0", func() bool { return tab.Add(r4, 0) }, true},
		{"remove r4 by 1", func() bool { return tab.Remove(r4, 1) }, false},
		{"remove r3 in another VNI", func() bool { return tab.Remove(route.Route{VNI: 8, Prefix: r3.Prefix, NextHop: r3.NextHop}, 2) }, false},
	}
	for _, st := range steps {
		if got := st.do(); got != st.want {
			t.Fatalf("%s: got %t, want %t", st.name, got, st.want)
		}
	}
	if got, want := tab.Len(), 4; got != want {
		t.Errorf("Len() = %d, want %d", got, want)
	}
	if got, want := tab.VNIs(), []route.VNI{7, 23, 100}; !slices.Equal(got, want) {
		t.Errorf("VNIs() = %v, want %v", got, want)
	}
	if got, want := tab.Routes(23), []route.Route{r1, r2}; !slices.Equal(got, want) {
		t.Errorf("Routes(23) = %v, want %v", got, want)
	}
	if got := tab.Routes(24); got != nil {
		t.Errorf("Routes(24) = %v, want nil", got)
	}
	if got := tab.VNILen(23); got != 2 {
		t.Errorf("VNILen(23) = %d, want 2", got)
	}
	if got, want := tab.Holders(r1), []SourceID{1, 2}; !slices.Equal(got, want) {
		t.Errorf("Holders(r1) = %v, want %v", got, want)
	}
	if got := tab.Holders(route.Route{VNI: 24}); got != nil {
		t.Errorf("Holders of a missing route = %v", got)
	}
	if !tab.Has(r4) || tab.Has(route.Route{VNI: r4.VNI, Prefix: pfx("10.0.0.0/24"), NextHop: r4.NextHop}) {
		t.Errorf("Has: IPv4-mapped prefix confused with IPv4")
	}

	// RemoveSource calls gone without holding locks: gone may use the
	// table.
	var gone []route.Route
	tab.RemoveSource(2, func(r route.Route) {
		gone = append(gone, r)
		if tab.Has(r) {
			t.Errorf("gone(%s) but the table still has it", r)
		}
		tab.Len()
	})
	if want := []route.Route{r3}; !slices.Equal(gone, want) {
		t.Errorf("RemoveSource(2): gone %v, want %v", gone, want)
	}
	if got, want := tab.VNIs(), []route.VNI{23, 100}; !slices.Equal(got, want) {
		t.Errorf("VNIs() after RemoveSource = %v, want %v (empty shards are dropped)", got, want)
	}
	if !tab.Remove(r4, 0) || tab.VNILen(100) != 0 || tab.Has(r4) {
		t.Errorf("Remove(r4, 0) did not remove it")
	}
	tab.RemoveSource(1, nil)
	if tab.Len() != 0 || len(tab.VNIs()) != 0 {
		t.Errorf("table not empty: %d routes in %v", tab.Len(), tab.VNIs())
	}
	if !tab.Add(r1, 1) {
		t.Errorf("Add after emptying: not first")
	}
}

// TestTableConcurrent has goroutines add and remove routes, each as its own
// source, while others read. Each writer knows exactly what its source
// holds, so the final state is known; and for every route the number of
// first transitions minus the number of last ones must be 1 if the route
// exists and 0 otherwise, which fails if a transition is lost or doubled.
func TestTableConcurrent(t *testing.T) {
	const (
		writers = 8
		ops     = 3000
	)
	var universe []route.Route
	for vni := range route.VNI(3) {
		for i := range 40 {
			for _, nh := range []route.NextHop{std("2001:db8::1"), nat("2001:db8::1", 0, 1023)} {
				p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 0}), 24)
				universe = append(universe, route.Route{VNI: vni, Prefix: p, NextHop: nh})
			}
		}
	}

	// A VNI with two routes empties often: its shard is dropped and
	// created again while other goroutines use it.
	hot := []route.Route{
		{VNI: 9, Prefix: pfx("10.9.0.0/16"), NextHop: std("2001:db8::9")},
		{VNI: 9, Prefix: pfx("10.9.0.0/16"), NextHop: std("2001:db8::a")},
	}
	universe = append(universe, hot...)

	tab := New()
	type result struct {
		held map[route.Route]bool
		net  map[route.Route]int // firsts minus lasts
	}
	results := make([]result, writers)
	var wg, readers sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, vni := range tab.VNIs() {
					for _, r := range tab.Routes(vni) {
						tab.Holders(r)
					}
				}
				tab.Len()
			}
		}()
	}
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := SourceID(w)
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			res := result{held: map[route.Route]bool{}, net: map[route.Route]int{}}
			for range ops {
				r := universe[rng.IntN(len(universe))]
				if rng.IntN(3) == 0 {
					r = hot[rng.IntN(len(hot))]
				}
				switch x := rng.IntN(100); {
				case x < 55:
					if tab.Add(r, src) {
						res.net[r]++
					}
					res.held[r] = true
				case x < 99:
					if tab.Remove(r, src) {
						res.net[r]--
					}
					delete(res.held, r)
				default:
					tab.RemoveSource(src, func(r route.Route) { res.net[r]-- })
					clear(res.held)
				}
			}
			results[w] = res
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()

	want := map[route.Route][]SourceID{}
	net := map[route.Route]int{}
	for w, res := range results {
		for r := range res.held {
			want[r] = append(want[r], SourceID(w))
		}
		for r, n := range res.net {
			net[r] += n
		}
	}
	for _, r := range universe {
		hs := want[r]
		if got := tab.Holders(r); !slices.Equal(got, hs) {
			t.Errorf("Holders(%s) = %v, want %v", r, got, hs)
		}
		wantNet := 0
		if len(hs) > 0 {
			wantNet = 1
		}
		if net[r] != wantNet {
			t.Errorf("%s: firsts minus lasts = %d, want %d", r, net[r], wantNet)
		}
	}
	if tab.Len() != len(want) {
		t.Errorf("Len() = %d, want %d", tab.Len(), len(want))
	}
	for vni, ls := range tab.shards {
		if err := ls.s.check(); err != nil {
			t.Errorf("VNI %d: %v", vni, err)
		}
	}
}

func TestCountSources(t *testing.T) {
	tb := New()
	r1 := mustRoute(t, "1#10.0.1.0/24#2001:db8::1")
	r2 := mustRoute(t, "1#10.0.2.0/24#2001:db8::1")
	r3 := mustRoute(t, "2#10.0.3.0/24#2001:db8::1")
	tb.Add(r1, 1)
	tb.Add(r2, 1)
	tb.Add(r3, 1)
	tb.Add(r1, 2) // held by both
	tb.Add(r3, 3)
	for _, tc := range []struct {
		srcs []SourceID
		want int
	}{
		{nil, 0},
		{[]SourceID{1}, 3},
		{[]SourceID{2}, 1},
		{[]SourceID{2, 1}, 3},
		{[]SourceID{1, 2, 3}, 3},
		{[]SourceID{2, 3}, 2},
		{[]SourceID{4}, 0},
	} {
		if got := tb.CountSources(tc.srcs...); got != tc.want {
			t.Errorf("CountSources(%v) = %d, want %d", tc.srcs, got, tc.want)
		}
	}
}
