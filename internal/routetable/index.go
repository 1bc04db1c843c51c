package routetable

// index is an open-addressing hash set of positions in Shard.routes, with
// linear probing. A slot holds position+1; 0 marks an empty slot. The index
// stores no keys and no hashes: probes compare against the route records,
// and resizing and deletion recompute hashes from them (see Shard.hashOf).
// len(slots) is zero or a power of two, and the index is at most 3/4 full,
// so every probe sequence ends at an empty slot.
type index struct {
	slots []uint32
	n     int // occupied slots

	// prefixOnly selects the hash: prefix only (true), or prefix and
	// nexthop ID (false).
	prefixOnly bool
}

const minIndexSize = 8

// home returns the first slot to probe for hash h.
func (x *index) home(h uint64) int { return int(h & uint64(len(x.slots)-1)) }

// next returns the slot after i, wrapping around.
func (x *index) next(i int) int { return (i + 1) & (len(x.slots) - 1) }

// hashOf returns the hash of the route at position pos for index x.
func (s *Shard) hashOf(x *index, pos uint32) uint64 {
	e := s.routes.at(pos)
	h := s.hashPrefix(&e.key)
	if x.prefixOnly {
		return h
	}
	return routeHash(h, e.nh)
}

// indexInsert adds position pos, with hash h, to x. pos must not be in x.
func (s *Shard) indexInsert(x *index, h uint64, pos uint32) {
	if (x.n+1)*4 > len(x.slots)*3 {
		s.indexResize(x, max(minIndexSize, 2*len(x.slots)))
	}
	i := x.home(h)
	for x.slots[i] != 0 {
		i = x.next(i)
	}
	x.slots[i] = pos + 1
	x.n++
}

// indexSlot returns the slot of x that holds position pos, which has hash
// h. pos must be in x.
func (s *Shard) indexSlot(x *index, h uint64, pos uint32) int {
	i := x.home(h)
	for x.slots[i] != pos+1 {
		i = x.next(i)
	}
	return i
}

// indexDelete empties slot i of x and shifts later entries of the probe
// run back, so that no tombstones are needed. It may shrink x, which
// invalidates slot numbers.
func (s *Shard) indexDelete(x *index, i int) {
	x.slots[i] = 0
	x.n--
	mask := len(x.slots) - 1
	for j := x.next(i); x.slots[j] != 0; j = x.next(j) {
		home := x.home(s.hashOf(x, x.slots[j]-1))
		// The entry at j may fill the hole at i unless its home lies
		// cyclically in (i, j]: it must stay reachable from home.
		if (j-home)&mask >= (j-i)&mask {
			x.slots[i], x.slots[j] = x.slots[j], 0
			i = j
		}
	}
	if len(x.slots) > minIndexSize && x.n*8 < len(x.slots) {
		s.indexResize(x, len(x.slots)/2)
	}
}

// indexResize rebuilds x with size slots (a power of two that fits x.n).
func (s *Shard) indexResize(x *index, size int) {
	old := x.slots
	x.slots = make([]uint32, size)
	for _, v := range old {
		if v == 0 {
			continue
		}
		i := x.home(s.hashOf(x, v-1))
		for x.slots[i] != 0 {
			i = x.next(i)
		}
		x.slots[i] = v
	}
}
