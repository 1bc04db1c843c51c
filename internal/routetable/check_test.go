package routetable

import (
	"fmt"
	"slices"
)

// check verifies the internal invariants of s: the indexes, the prefix
// chains, the holder and source lists and the nexthop reference counts.
func (s *Shard) check() error {
	n := uint32(s.routes.len())

	// Every route is in byRoute, once, and found by lookup.
	if err := s.checkIndex(&s.byRoute, s.routes.len()); err != nil {
		return fmt.Errorf("byRoute: %w", err)
	}
	for pos := range n {
		e := s.routes.at(pos)
		if got := s.findRoute(&e.key, e.nh, s.hashPrefix(&e.key)); got != pos {
			return fmt.Errorf("route %d (%s): findRoute = %d", pos, e.key.prefix(), got)
		}
	}

	// Prefix chains: byPrefix points at each chain head; chains cover
	// every route once and hold one prefix each.
	chained := 0
	for _, v := range s.byPrefix.slots {
		if v == 0 {
			continue
		}
		head := v - 1
		if head >= n {
			return fmt.Errorf("byPrefix: position %d out of range", head)
		}
		key := s.routes.at(head).key
		if got := s.findPrefix(&key, s.hashPrefix(&key)); got != head {
			return fmt.Errorf("prefix %s: findPrefix = %d, want %d", key.prefix(), got, head)
		}
		prev := none
		for pos := head; pos != none; pos = s.routes.at(pos).next {
			if pos >= n {
				return fmt.Errorf("prefix %s: chain position %d out of range", key.prefix(), pos)
			}
			e := s.routes.at(pos)
			if e.key != key || e.prev != prev {
				return fmt.Errorf("prefix %s: chain broken at %d", key.prefix(), pos)
			}
			prev = pos
			if chained++; chained > s.routes.len() {
				return fmt.Errorf("prefix %s: chain loops", key.prefix())
			}
		}
	}
	if err := s.checkIndex(&s.byPrefix, s.byPrefix.n); err != nil {
		return fmt.Errorf("byPrefix: %w", err)
	}
	if chained != s.routes.len() {
		return fmt.Errorf("prefix chains hold %d routes, want %d", chained, s.routes.len())
	}

	// Holder lists: non-empty, distinct sources, back links right,
	// every hold on exactly one list.
	onRoute := 0
	for pos := range n {
		var srcs []SourceID
		for h := s.routes.at(pos).holds; h != none; h = s.holds.at(h).next {
			if int(h) >= s.holds.len() {
				return fmt.Errorf("route %d: hold %d out of range", pos, h)
			}
			if s.holds.at(h).route != pos {
				return fmt.Errorf("route %d: hold %d points to route %d", pos, h, s.holds.at(h).route)
			}
			if slices.Contains(srcs, s.holds.at(h).src) {
				return fmt.Errorf("route %d: source %d holds it twice", pos, s.holds.at(h).src)
			}
			srcs = append(srcs, s.holds.at(h).src)
			onRoute++
		}
		if len(srcs) == 0 {
			return fmt.Errorf("route %d: no holder", pos)
		}
	}
	if onRoute != s.holds.len() {
		return fmt.Errorf("holder lists hold %d holds, want %d", onRoute, s.holds.len())
	}

	// Source lists.
	onSource := 0
	for src, sl := range s.sources {
		if sl.n == 0 {
			return fmt.Errorf("source %d: empty list kept", src)
		}
		prev, count := none, uint32(0)
		for h := sl.head; h != none; h = s.holds.at(h).srcNext {
			if int(h) >= s.holds.len() {
				return fmt.Errorf("source %d: hold %d out of range", src, h)
			}
			d := s.holds.at(h)
			if d.src != src || d.srcPrev != prev {
				return fmt.Errorf("source %d: list broken at hold %d", src, h)
			}
			prev = h
			if count++; count > sl.n {
				return fmt.Errorf("source %d: list longer than %d", src, sl.n)
			}
		}
		if count != sl.n {
			return fmt.Errorf("source %d: list has %d holds, count says %d", src, count, sl.n)
		}
		onSource += int(count)
	}
	if onSource != s.holds.len() {
		return fmt.Errorf("source lists hold %d holds, want %d", onSource, s.holds.len())
	}

	// Nexthop references.
	refs := make([]uint32, len(s.nexthops.ents))
	for pos := range n {
		id := s.routes.at(pos).nh
		if int(id) >= len(refs) {
			return fmt.Errorf("route %d: nexthop ID %d out of range", pos, id)
		}
		refs[id]++
	}
	used := 0
	for id, e := range s.nexthops.ents {
		if e.refs != refs[id] {
			return fmt.Errorf("nexthop %d (%s): %d refs, want %d", id, e.nh, e.refs, refs[id])
		}
		if e.refs > 0 {
			used++
			if got, ok := s.nexthops.ids[e.nh]; !ok || got != uint32(id) {
				return fmt.Errorf("nexthop %d (%s): ids map says %d, %t", id, e.nh, got, ok)
			}
		}
	}
	if used != len(s.nexthops.ids) || used+len(s.nexthops.free) != len(s.nexthops.ents) {
		return fmt.Errorf("nexthops: %d used, %d in map, %d free, %d IDs", used, len(s.nexthops.ids), len(s.nexthops.free), len(s.nexthops.ents))
	}
	return nil
}

// checkIndex checks that x holds want distinct, valid positions and
// respects its size rules.
func (s *Shard) checkIndex(x *index, want int) error {
	seen := make(map[uint32]bool)
	for _, v := range x.slots {
		if v == 0 {
			continue
		}
		if int(v-1) >= s.routes.len() || seen[v] {
			return fmt.Errorf("bad or repeated position %d", v-1)
		}
		seen[v] = true
	}
	if len(seen) != want || x.n != want {
		return fmt.Errorf("%d entries, n = %d, want %d", len(seen), x.n, want)
	}
	if size := len(x.slots); size&(size-1) != 0 || x.n*4 > size*3 {
		return fmt.Errorf("size %d with %d entries", size, x.n)
	}
	return nil
}

// capacity returns the number of records s has room for.
func (s *slab[T]) capacity() int {
	n := 0
	for _, c := range s.chunks {
		n += cap(c)
	}
	return n
}
