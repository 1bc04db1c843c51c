package routetable

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"slices"

	"github.com/metalbond/metalbond/route"
)

// SourceID identifies a source of routes, typically a peer session. IDs are
// assigned by the caller; 0 is a valid ID.
type SourceID uint32

// none marks the end of a list, or a missing record.
const none = ^uint32(0)

// routeEnt is one route. Positions in Shard.routes link the records; none
// ends a list.
type routeEnt struct {
	key   prefixKey
	nh    uint32 // nexthop ID in Shard.nexthops
	next  uint32 // next route with the same prefix
	prev  uint32 // previous route with the same prefix; none for the one byPrefix points at
	holds uint32 // first hold of this route; a stored route always has one
}

// holdEnt records that a source holds a route.
type holdEnt struct {
	route   uint32 // position in Shard.routes
	src     SourceID
	next    uint32 // next hold of the same route
	srcNext uint32 // next hold of the same source
	srcPrev uint32 // previous hold of the same source; none for the list head
}

// sourceList is the list of holds of one source.
type sourceList struct {
	head uint32 // first hold
	n    uint32 // length
}

// Shard holds the routes of one VNI and, for every route, the sources that
// hold it. A route exists while at least one source holds it.
//
// A Shard is not safe for concurrent use; a route server guards each Shard
// with a mutex of its own. The zero Shard is not usable: call NewShard.
//
// A Shard stores fewer than 2³² routes, and as many (route, source) pairs:
// positions in it are 32-bit.
type Shard struct {
	vni        route.VNI
	k0, k1, k2 uint64 // random secrets of hashPrefix

	routes   slab[routeEnt] // dense: removal moves the last record into the hole
	holds    slab[holdEnt]  // dense, likewise
	byRoute  index          // (prefix, nexthop ID) -> route
	byPrefix index          // prefix -> first route of its chain
	nexthops nexthopSet
	sources  map[SourceID]sourceList // sources that hold at least one route
}

// NewShard returns an empty Shard for the routes of vni.
func NewShard(vni route.VNI) *Shard {
	return &Shard{
		vni:      vni,
		k0:       rand.Uint64() | 1,
		k1:       rand.Uint64() | 1,
		k2:       rand.Uint64() | 1,
		byPrefix: index{prefixOnly: true},
	}
}

// VNI returns the VNI whose routes s holds.
func (s *Shard) VNI() route.VNI { return s.vni }

// Len returns the number of routes in s.
func (s *Shard) Len() int { return s.routes.len() }

// Prefixes returns the number of distinct prefixes in s.
func (s *Shard) Prefixes() int { return s.byPrefix.n }

// SourceLen returns the number of routes that src holds in s.
func (s *Shard) SourceLen(src SourceID) int { return int(s.sources[src].n) }

// Add records that src holds the route (p, nh). It reports whether the
// route is new: it had no holder before. Adding a route that src already
// holds changes nothing and returns false.
//
// p and nh are stored as given; callers validate and mask them first (see
// route.Route.Validate). The zone of p's address is ignored, as netip.Prefix
// carries none.
func (s *Shard) Add(p netip.Prefix, nh route.NextHop, src SourceID) (first bool) {
	k := keyOf(p)
	hp := s.hashPrefix(&k)
	if id, ok := s.nexthops.lookup(nh); ok {
		if pos := s.findRoute(&k, id, hp); pos != none {
			if s.findHold(pos, src) == none {
				s.addHold(pos, src)
			}
			return false
		}
	}

	id := s.nexthops.acquire(nh)
	pos := uint32(s.routes.len())
	e := routeEnt{key: k, nh: id, next: none, prev: none, holds: none}
	head := s.findPrefix(&k, hp)
	if head != none {
		// Link in behind the head, which byPrefix keeps pointing at.
		e.prev, e.next = head, s.routes.at(head).next
		if e.next != none {
			s.routes.at(e.next).prev = pos
		}
		s.routes.at(head).next = pos
	}
	s.routes.push(e)
	if head == none {
		s.indexInsert(&s.byPrefix, hp, pos)
	}
	s.indexInsert(&s.byRoute, routeHash(hp, id), pos)
	s.addHold(pos, src)
	return true
}

// Remove records that src no longer holds the route (p, nh). It reports
// whether src was its last holder, so that the route is gone. Removing a
// route that src does not hold changes nothing and returns false.
func (s *Shard) Remove(p netip.Prefix, nh route.NextHop, src SourceID) (last bool) {
	pos := s.lookup(p, nh)
	if pos == none {
		return false
	}
	h := s.findHold(pos, src)
	if h == none {
		return false
	}
	s.dropHold(h)
	if s.routes.at(pos).holds != none {
		return false
	}
	s.dropRoute(pos)
	return true
}

// RemoveSource withdraws every route that src holds, at a cost in
// proportion to the number of those routes. For each route that disappears
// because src was its last holder, it calls gone, if not nil; gone must not
// modify s.
func (s *Shard) RemoveSource(src SourceID, gone func(p netip.Prefix, nh route.NextHop)) {
	for {
		sl, ok := s.sources[src]
		if !ok {
			return
		}
		pos := s.holds.at(sl.head).route
		s.dropHold(sl.head)
		if s.routes.at(pos).holds != none {
			continue
		}
		e := s.routes.at(pos)
		p, nh := e.key.prefix(), s.nexthops.get(e.nh)
		s.dropRoute(pos)
		if gone != nil {
			gone(p, nh)
		}
	}
}

// RangeSource calls fn for each route src holds, in no particular order,
// until fn returns false. fn must not modify the shard. It costs
// O(routes of src).
func (s *Shard) RangeSource(src SourceID, fn func(p netip.Prefix, nh route.NextHop) bool) {
	sl, ok := s.sources[src]
	if !ok {
		return
	}
	for h := sl.head; h != none; h = s.holds.at(h).srcNext {
		e := s.routes.at(s.holds.at(h).route)
		if !fn(e.key.prefix(), s.nexthops.get(e.nh)) {
			return
		}
	}
}

// Range calls fn for every route in s, in no particular order, until fn
// returns false. h is valid only during the call. fn must not modify s.
func (s *Shard) Range(fn func(p netip.Prefix, nh route.NextHop, h Holders) bool) {
	for _, chunk := range s.routes.chunks {
		for i := range chunk {
			e := &chunk[i]
			if !fn(e.key.prefix(), s.nexthops.get(e.nh), Holders{s, e.holds}) {
				return
			}
		}
	}
}

// Holders returns the sources that hold the route (p, nh); it is empty if
// the route is not in s. The result is valid until s changes.
func (s *Shard) Holders(p netip.Prefix, nh route.NextHop) Holders {
	pos := s.lookup(p, nh)
	if pos == none {
		return Holders{}
	}
	return Holders{s, s.routes.at(pos).holds}
}

// NextHops returns the nexthops of the routes to p, sorted with
// route.NextHop.Compare, or nil if there are none. It costs one hash lookup
// plus time in proportion to the number of nexthops of p, and allocates the
// result.
func (s *Shard) NextHops(p netip.Prefix) []route.NextHop {
	k := keyOf(p)
	var nhs []route.NextHop
	for pos := s.findPrefix(&k, s.hashPrefix(&k)); pos != none; pos = s.routes.at(pos).next {
		nhs = append(nhs, s.nexthops.get(s.routes.at(pos).nh))
	}
	slices.SortFunc(nhs, route.NextHop.Compare)
	return nhs
}

// Holders is a read-only view of the sources that hold one route. It is
// valid only during the callback that received it, or until the Shard it
// came from changes, and is subject to that Shard's locking. The zero
// Holders is empty.
type Holders struct {
	s    *Shard
	head uint32 // first hold; meaningless if s is nil
}

// Has reports whether src holds the route.
func (h Holders) Has(src SourceID) bool {
	for i := h.first(); i != none; i = h.s.holds.at(i).next {
		if h.s.holds.at(i).src == src {
			return true
		}
	}
	return false
}

// Len returns the number of sources that hold the route.
func (h Holders) Len() int {
	n := 0
	for i := h.first(); i != none; i = h.s.holds.at(i).next {
		n++
	}
	return n
}

// Each calls fn for every source that holds the route, in no particular
// order.
func (h Holders) Each(fn func(SourceID)) {
	for i := h.first(); i != none; i = h.s.holds.at(i).next {
		fn(h.s.holds.at(i).src)
	}
}

func (h Holders) first() uint32 {
	if h.s == nil {
		return none
	}
	return h.head
}

// hashPrefix returns the hash of k under the secrets of s.
func (s *Shard) hashPrefix(k *prefixKey) uint64 {
	// Two 64-bit halves and the 2-byte tail, each mixed with a secret of
	// the Shard (wyhash-style multiply-fold): a few nanoseconds, against
	// tens for maphash.Bytes on 18 bytes.
	a := binary.LittleEndian.Uint64(k[0:8]) ^ s.k0
	b := binary.LittleEndian.Uint64(k[8:16]) ^ s.k1
	c := uint64(k[16]) | uint64(k[17])<<8
	return mix(mix(a, b), c^s.k2)
}

// mix is the 128-bit multiply-fold of wyhash.
func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b^0xe7037ed1a0b428db)
	return hi ^ lo
}

// routeHash derives the hash of a (prefix, nexthop ID) pair from the hash
// of the prefix. The final mixing steps (those of MurmurHash3's 64-bit
// finalizer) are a bijection, so nexthops of one prefix never collide and
// spread over the whole index rather than clustering.
func routeHash(hp uint64, nh uint32) uint64 {
	x := hp + (uint64(nh)+1)*0x9e3779b97f4a7c15
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// lookup returns the position of the route (p, nh), or none.
func (s *Shard) lookup(p netip.Prefix, nh route.NextHop) uint32 {
	id, ok := s.nexthops.lookup(nh)
	if !ok {
		return none
	}
	k := keyOf(p)
	return s.findRoute(&k, id, s.hashPrefix(&k))
}

// findRoute returns the position of the route (k, nexthop id), where hp is
// the hash of k, or none.
func (s *Shard) findRoute(k *prefixKey, id uint32, hp uint64) uint32 {
	x := &s.byRoute
	if x.n == 0 {
		return none
	}
	for i := x.home(routeHash(hp, id)); ; i = x.next(i) {
		v := x.slots[i]
		if v == 0 {
			return none
		}
		if e := s.routes.at(v - 1); e.nh == id && e.key == *k {
			return v - 1
		}
	}
}

// findPrefix returns the position of the first route to k, where hp is the
// hash of k, or none.
func (s *Shard) findPrefix(k *prefixKey, hp uint64) uint32 {
	x := &s.byPrefix
	if x.n == 0 {
		return none
	}
	for i := x.home(hp); ; i = x.next(i) {
		v := x.slots[i]
		if v == 0 {
			return none
		}
		if s.routes.at(v-1).key == *k {
			return v - 1
		}
	}
}

// findHold returns the position of the hold of the route at pos by src, or
// none.
func (s *Shard) findHold(pos uint32, src SourceID) uint32 {
	for h := s.routes.at(pos).holds; h != none; h = s.holds.at(h).next {
		if s.holds.at(h).src == src {
			return h
		}
	}
	return none
}

// addHold records that src holds the route at pos; it must not hold it yet.
func (s *Shard) addHold(pos uint32, src SourceID) {
	sl, ok := s.sources[src]
	if !ok {
		sl.head = none
		if s.sources == nil {
			s.sources = make(map[SourceID]sourceList)
		}
	}
	h := s.holds.push(holdEnt{
		route:   pos,
		src:     src,
		next:    s.routes.at(pos).holds,
		srcNext: sl.head,
		srcPrev: none,
	})
	s.routes.at(pos).holds = h
	if sl.head != none {
		s.holds.at(sl.head).srcPrev = h
	}
	sl.head = h
	sl.n++
	s.sources[src] = sl
}

// dropHold unlinks the hold at position h from its route and its source
// and frees the position: the last hold moves there.
func (s *Shard) dropHold(h uint32) {
	d := *s.holds.at(h)
	s.relinkHold(d.route, h, d.next)
	sl := s.sources[d.src]
	if d.srcPrev != none {
		s.holds.at(d.srcPrev).srcNext = d.srcNext
	} else {
		sl.head = d.srcNext
	}
	if d.srcNext != none {
		s.holds.at(d.srcNext).srcPrev = d.srcPrev
	}
	if sl.n--; sl.n == 0 {
		delete(s.sources, d.src)
	} else {
		s.sources[d.src] = sl
	}

	// Nothing links to h any more. Move the last hold into it, read
	// only now, after the unlinking above may have changed it.
	last := uint32(s.holds.len() - 1)
	if h != last {
		m := *s.holds.at(last)
		*s.holds.at(h) = m
		s.relinkHold(m.route, last, h)
		if m.srcPrev != none {
			s.holds.at(m.srcPrev).srcNext = h
		} else {
			ml := s.sources[m.src]
			ml.head = h
			s.sources[m.src] = ml
		}
		if m.srcNext != none {
			s.holds.at(m.srcNext).srcPrev = h
		}
	}
	s.holds.pop()
}

// relinkHold replaces the link to hold from in the holder list of the route
// at pos by a link to hold to. The cost is in proportion to the number of
// holders of the route, small in practice.
func (s *Shard) relinkHold(pos, from, to uint32) {
	p := &s.routes.at(pos).holds
	for *p != from {
		p = &s.holds.at(*p).next
	}
	*p = to
}

// dropRoute removes the route at pos, which has no holds left, from the
// indexes and its prefix chain, and frees the position: the last route
// moves there.
func (s *Shard) dropRoute(pos uint32) {
	d := *s.routes.at(pos)
	hp := s.hashPrefix(&d.key)
	s.indexDelete(&s.byRoute, s.indexSlot(&s.byRoute, routeHash(hp, d.nh), pos))
	if d.prev != none {
		s.routes.at(d.prev).next = d.next
	} else {
		i := s.indexSlot(&s.byPrefix, hp, pos)
		if d.next != none {
			s.byPrefix.slots[i] = d.next + 1 // same prefix, same hash
		} else {
			s.indexDelete(&s.byPrefix, i)
		}
	}
	if d.next != none {
		s.routes.at(d.next).prev = d.prev
	}
	s.nexthops.release(d.nh)

	last := uint32(s.routes.len() - 1)
	if pos != last {
		m := *s.routes.at(last)
		*s.routes.at(pos) = m
		mh := s.hashPrefix(&m.key)
		s.byRoute.slots[s.indexSlot(&s.byRoute, routeHash(mh, m.nh), last)] = pos + 1
		if m.prev != none {
			s.routes.at(m.prev).next = pos
		} else {
			s.byPrefix.slots[s.indexSlot(&s.byPrefix, mh, last)] = pos + 1
		}
		if m.next != none {
			s.routes.at(m.next).prev = pos
		}
		for h := m.holds; h != none; h = s.holds.at(h).next {
			s.holds.at(h).route = pos
		}
	}
	s.routes.pop()
	if s.routes.len() == 0 {
		// Release what does not shrink by itself: Go maps, and the
		// minimum index size.
		s.byRoute.slots, s.byPrefix.slots = nil, nil
		s.sources = nil
	}
}
