package routetable

import (
	"net/netip"
	"slices"
	"sync"

	"github.com/metalbond/metalbond/route"
)

// Table is a set of Shards keyed by VNI, with locking of its own: one mutex
// per Shard and a read-write mutex for the set. It is safe for concurrent
// use. Each method sees one VNI atomically; methods that span VNIs (Len,
// VNIs, RemoveSource) visit them one after the other.
//
// Empty Shards are dropped. The zero Table is not usable: call New.
type Table struct {
	mu     sync.RWMutex // guards shards; taken before any lockedShard.mu
	shards map[route.VNI]*lockedShard
}

type lockedShard struct {
	mu sync.Mutex // guards the following
	s  *Shard
	// dead is set when the shard, empty, has been dropped from the
	// Table. Writers then retry with the Table's current shard.
	dead bool
}

// New returns an empty Table.
func New() *Table {
	return &Table{shards: make(map[route.VNI]*lockedShard)}
}

// Add records that src holds r. It reports whether r is new: it had no
// holder before. Adding a route that src already holds changes nothing and
// returns false.
func (t *Table) Add(r route.Route, src SourceID) (first bool) {
	for {
		ls := t.shard(r.VNI, true)
		ls.mu.Lock()
		if !ls.dead {
			first = ls.s.Add(r.Prefix, r.NextHop, src)
			ls.mu.Unlock()
			return first
		}
		ls.mu.Unlock()
	}
}

// Remove records that src no longer holds r. It reports whether src was its
// last holder, so that r is gone. Removing a route that src does not hold
// changes nothing and returns false.
func (t *Table) Remove(r route.Route, src SourceID) (last bool) {
	ls := t.shard(r.VNI, false)
	if ls == nil {
		return false
	}
	ls.mu.Lock()
	last = ls.s.Remove(r.Prefix, r.NextHop, src)
	empty := ls.s.Len() == 0
	ls.mu.Unlock()
	if empty {
		t.dropIfEmpty(r.VNI, ls)
	}
	return last
}

// RemoveSource withdraws every route that src holds, in every VNI. For
// each route that disappears because src was its last holder, it calls
// gone, if not nil, without holding any lock: gone may use t. Routes that
// src adds while RemoveSource runs may survive it.
func (t *Table) RemoveSource(src SourceID, gone func(route.Route)) {
	var routes []route.Route
	for _, ls := range t.snapshot() {
		routes = routes[:0]
		ls.mu.Lock()
		vni := ls.s.VNI()
		ls.s.RemoveSource(src, func(p netip.Prefix, nh route.NextHop) {
			if gone != nil {
				routes = append(routes, route.Route{VNI: vni, Prefix: p, NextHop: nh})
			}
		})
		empty := ls.s.Len() == 0
		ls.mu.Unlock()
		if empty {
			t.dropIfEmpty(vni, ls)
		}
		for _, r := range routes {
			gone(r)
		}
	}
}

// Len returns the number of routes in t.
func (t *Table) Len() int {
	n := 0
	for _, ls := range t.snapshot() {
		ls.mu.Lock()
		n += ls.s.Len()
		ls.mu.Unlock()
	}
	return n
}

// CountSources returns the number of routes held by at least one of srcs,
// each route counted once. It costs O(VNIs) for one source, and O(routes of
// the sources after the first) for more.
func (t *Table) CountSources(srcs ...SourceID) int {
	n := 0
	for _, ls := range t.snapshot() {
		ls.mu.Lock()
		for i, src := range srcs {
			if i == 0 {
				n += ls.s.SourceLen(src)
				continue
			}
			ls.s.RangeSource(src, func(p netip.Prefix, nh route.NextHop) bool {
				h := ls.s.Holders(p, nh)
				if !slices.ContainsFunc(srcs[:i], h.Has) {
					n++
				}
				return true
			})
		}
		ls.mu.Unlock()
	}
	return n
}

// VNIs returns the VNIs that have routes, in increasing order.
func (t *Table) VNIs() []route.VNI {
	var vnis []route.VNI
	for _, ls := range t.snapshot() {
		ls.mu.Lock()
		if ls.s.Len() > 0 {
			vnis = append(vnis, ls.s.VNI())
		}
		ls.mu.Unlock()
	}
	slices.Sort(vnis)
	return vnis
}

// VNILen returns the number of routes in vni.
func (t *Table) VNILen(vni route.VNI) int {
	ls := t.shard(vni, false)
	if ls == nil {
		return 0
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.s.Len()
}

// Routes returns the routes of vni, sorted with route.Route.Compare.
func (t *Table) Routes(vni route.VNI) []route.Route {
	ls := t.shard(vni, false)
	if ls == nil {
		return nil
	}
	ls.mu.Lock()
	var routes []route.Route
	if n := ls.s.Len(); n > 0 {
		routes = make([]route.Route, 0, n)
	}
	ls.s.Range(func(p netip.Prefix, nh route.NextHop, _ Holders) bool {
		routes = append(routes, route.Route{VNI: vni, Prefix: p, NextHop: nh})
		return true
	})
	ls.mu.Unlock()
	slices.SortFunc(routes, route.Route.Compare)
	return routes
}

// Has reports whether r is in t.
func (t *Table) Has(r route.Route) bool {
	ls := t.shard(r.VNI, false)
	if ls == nil {
		return false
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.s.Holders(r.Prefix, r.NextHop).Len() > 0
}

// Holders returns the sources that hold r, in increasing order, or nil if r
// is not in t.
func (t *Table) Holders(r route.Route) []SourceID {
	ls := t.shard(r.VNI, false)
	if ls == nil {
		return nil
	}
	var srcs []SourceID
	ls.mu.Lock()
	ls.s.Holders(r.Prefix, r.NextHop).Each(func(src SourceID) { srcs = append(srcs, src) })
	ls.mu.Unlock()
	slices.Sort(srcs)
	return srcs
}

// shard returns the shard of vni, creating it if create is set; otherwise
// it returns nil if there is none.
func (t *Table) shard(vni route.VNI, create bool) *lockedShard {
	t.mu.RLock()
	ls := t.shards[vni]
	t.mu.RUnlock()
	if ls != nil || !create {
		return ls
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if ls = t.shards[vni]; ls == nil {
		ls = &lockedShard{s: NewShard(vni)}
		t.shards[vni] = ls
	}
	return ls
}

// snapshot returns the current shards.
func (t *Table) snapshot() []*lockedShard {
	t.mu.RLock()
	defer t.mu.RUnlock()
	shards := make([]*lockedShard, 0, len(t.shards))
	for _, ls := range t.shards {
		shards = append(shards, ls)
	}
	return shards
}

// dropIfEmpty removes ls, the shard of vni, from t if it is still empty.
func (t *Table) dropIfEmpty(vni route.VNI, ls *lockedShard) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if !ls.dead && ls.s.Len() == 0 && t.shards[vni] == ls {
		ls.dead = true
		delete(t.shards, vni)
	}
}
