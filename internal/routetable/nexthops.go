package routetable

import "github.com/metalbond/metalbond/route"

// nexthopSet interns the nexthops of one Shard: each distinct nexthop in use
// gets a small ID, and routes store the ID. IDs are reference-counted by the
// routes that use them and reused once free.
type nexthopSet struct {
	ids  map[route.NextHop]uint32
	ents []nexthopEnt // indexed by ID
	free []uint32     // unused IDs

	// last is the ID most recently looked up, if lastOK: updates tend to
	// come in runs with one nexthop, and the comparison is cheaper than
	// the map lookup.
	last   uint32
	lastOK bool
}

type nexthopEnt struct {
	nh   route.NextHop
	refs uint32 // routes using this ID; 0 if the ID is free
}

// lookup returns the ID of nh, if any route uses it.
func (ns *nexthopSet) lookup(nh route.NextHop) (uint32, bool) {
	if ns.lastOK && ns.ents[ns.last].nh == nh {
		return ns.last, true
	}
	id, ok := ns.ids[nh]
	if ok {
		ns.last, ns.lastOK = id, true
	}
	return id, ok
}

// acquire returns the ID of nh, interning it if needed, and counts one
// more reference to it.
func (ns *nexthopSet) acquire(nh route.NextHop) uint32 {
	id, ok := ns.lookup(nh)
	if !ok {
		if n := len(ns.free); n > 0 {
			id = ns.free[n-1]
			ns.free = ns.free[:n-1]
		} else {
			id = uint32(len(ns.ents))
			ns.ents = append(ns.ents, nexthopEnt{})
		}
		ns.ents[id].nh = nh
		if ns.ids == nil {
			ns.ids = make(map[route.NextHop]uint32)
		}
		ns.ids[nh] = id
		ns.last, ns.lastOK = id, true
	}
	ns.ents[id].refs++
	return id
}

// release drops one reference to id and frees the ID with its last one.
func (ns *nexthopSet) release(id uint32) {
	e := &ns.ents[id]
	if e.refs--; e.refs > 0 {
		return
	}
	delete(ns.ids, e.nh)
	if len(ns.ids) == 0 {
		// Go maps do not shrink: start afresh once nothing is in use.
		*ns = nexthopSet{}
		return
	}
	e.nh = route.NextHop{}
	ns.free = append(ns.free, id)
	if ns.last == id {
		ns.lastOK = false
	}
}

// get returns the nexthop with ID id.
func (ns *nexthopSet) get(id uint32) route.NextHop { return ns.ents[id].nh }
