package kernel

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/metalbond/metalbond/route"
)

// key identifies one kernel route: a prefix in a table.
type key struct {
	table  uint32
	prefix netip.Prefix
}

// hop is one route's contribution to a key. The VNI is part of it because
// several VNIs may map to one table.
type hop struct {
	vni route.VNI
	nh  route.NextHop
}

func cmpHop(a, b hop) int {
	if c := a.nh.Compare(b.nh); c != 0 {
		return c
	}
	return cmp.Compare(a.vni, b.vni)
}

// desiredSet is the state the kernel should be in, and the keys changed
// since the worker last looked. It does no I/O and is not safe for
// concurrent use (Installer.mu guards it).
type desiredSet struct {
	routes map[key][]hop // sorted by cmpHop; never empty
	dirty  map[key]struct{}
}

func newDesiredSet() desiredSet {
	return desiredSet{routes: make(map[key][]hop), dirty: make(map[key]struct{})}
}

// add records h for k and reports whether that changed anything.
func (d *desiredSet) add(k key, h hop) bool {
	hs := d.routes[k]
	n, found := slices.BinarySearchFunc(hs, h, cmpHop)
	if found {
		return false
	}
	d.routes[k] = slices.Insert(hs, n, h)
	d.dirty[k] = struct{}{}
	return true
}

// remove forgets h for k and reports whether that changed anything.
func (d *desiredSet) remove(k key, h hop) bool {
	hs := d.routes[k]
	n, found := slices.BinarySearchFunc(hs, h, cmpHop)
	if !found {
		return false
	}
	if len(hs) == 1 {
		delete(d.routes, k)
	} else {
		d.routes[k] = slices.Delete(hs, n, n+1)
	}
	d.dirty[k] = struct{}{}
	return true
}

// markAll marks every desired key dirty.
func (d *desiredSet) markAll() {
	for k := range d.routes {
		d.dirty[k] = struct{}{}
	}
}

// addrs returns the underlay addresses that k should be routed to, in
// kernel order: sorted by route.NextHop.Compare (which orders by address
// first), each address once. Nexthops that differ only in type, target VNI
// or NAT port range share one encapsulation, so one kernel nexthop.
func (d *desiredSet) addrs(k key) []netip.Addr {
	hs := d.routes[k]
	if len(hs) == 0 {
		return nil
	}
	out := make([]netip.Addr, 0, len(hs))
	for _, h := range hs {
		if n := len(out); n == 0 || out[n-1] != h.nh.Address {
			out = append(out, h.nh.Address)
		}
	}
	return out
}
