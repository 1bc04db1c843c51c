//go:build linux

package kernel

// Adoption: taking over the routes and nexthop objects an earlier process
// left in our tables, and ending adoption (Synced or the grace time).

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// confirm records that AddRoute has confirmed address a of the adopted
// route k. Called with mu held.
func (i *Installer) confirm(k key, a netip.Addr) {
	st, ok := i.stale[k]
	if !ok {
		return
	}
	n, found := slices.BinarySearchFunc(st, a, netip.Addr.Compare)
	switch {
	case st == nil || found && len(st) == 1:
		// Found in a form we do not create (from now on it is what is
		// desired), or its last unconfirmed address.
		delete(i.stale, k)
	case found:
		i.stale[k] = slices.Delete(st, n, n+1)
	}
}

// Synced tells the installer that the client has a complete view: every
// route the servers have was passed to AddRoute before the call. Adopted
// routes not re-added since New are then removed, and nexthop objects no
// route uses any more are deleted, as Run's next round. Only the first
// call does anything, and none after the grace time (Config.AdoptGrace)
// has ended adoption. Synced implements metalbond.SyncNotifier; like
// AddRoute it never waits for the kernel.
func (i *Installer) Synced() { i.endAdoption("synced") }

// endAdoption ends adoption: the routes still unconfirmed become ordinary
// undesired routes, which the next apply round deletes.
func (i *Installer) endAdoption(reason string) {
	i.mu.Lock()
	if !i.adopting || i.closed {
		i.mu.Unlock()
		return
	}
	i.adopting = false
	removed := 0
	for k := range i.stale {
		i.want.dirty[k] = struct{}{}
		if _, ok := i.want.routes[k]; !ok {
			removed++
		}
	}
	n := len(i.stale)
	i.stale = nil
	if n > 0 {
		i.gen++ // Flush after Synced waits for the removal
	}
	i.mu.Unlock()
	i.log.Info("adoption of existing routes ended", "reason", reason,
		"routes_removed", removed, "routes_shrunk", n-removed)
	select {
	case i.kick <- struct{}{}:
	default:
	}
}

// removeOurs deletes every route of ours in the mapped tables and the
// nexthop objects of ours no one else uses (those we created or adopted,
// those our routes pointed at, and leftovers in our id block), and forgets
// what was installed: all desired routes become dirty again. Called with
// ioMu held (or before Run).
func (i *Installer) removeOurs() (routes, nexthops int, err error) {
	kr, err := i.dumpRoutes()
	if err != nil {
		return 0, 0, err
	}
	knh, err := i.dumpNexthops()
	if err != nil {
		return 0, 0, err
	}
	cands := i.referenced(kr, knh)
	for id := range i.byID {
		cands[id] = struct{}{}
	}
	routes, failed := i.deleteRoutes(kr)
	nexthops, err = i.deleteOurObjects(cands)
	if failed == nil {
		failed = err
	}
	clear(i.installed)
	clear(i.objs)
	clear(i.byID)
	clear(i.gc)
	clear(i.retry)
	i.minDue = time.Time{}
	i.mu.Lock()
	i.want.markAll()
	i.adopting, i.stale = false, nil
	i.mu.Unlock()
	i.publish()
	return routes, nexthops, failed
}

// deleteRoutes deletes the routes kr and returns how many are gone and
// the first failure.
func (i *Installer) deleteRoutes(kr map[key]uint32) (int, error) {
	i.b.reset()
	ks := make([]key, 0, len(kr))
	for k := range kr {
		i.b.deleteRoute(k, i.proto)
		ks = append(ks, k)
	}
	errs, err := i.c.exec(&i.b)
	if err != nil {
		return 0, err
	}
	routes := 0
	var failed error
	for n, e := range errs {
		if e == nil || gone(e) {
			routes++
		} else if failed == nil {
			failed = fmt.Errorf("delete route %s in table %d: %w", ks[n].prefix, ks[n].table, e)
		}
	}
	return routes, failed
}

// deleteOurObjects deletes those of cands, and of the objects of ours in
// our id block, that no one else uses, and rebuilds the foreign ids.
func (i *Installer) deleteOurObjects(cands map[uint32]struct{}) (int, error) {
	knh, err := i.dumpNexthops()
	if err != nil {
		return 0, err
	}
	for id, kn := range knh {
		if kn.proto == i.proto && i.inBlock(id) {
			cands[id] = struct{}{}
		}
	}
	free, err := i.unusedElsewhere(cands, knh)
	if err != nil {
		return 0, err
	}
	n, err := i.deleteNexthops(knh, func(kn kernelNexthop) bool {
		_, ok := free[kn.id]
		return ok
	})
	for id := range knh {
		if _, ok := free[id]; !ok {
			i.foreign[id] = struct{}{}
		}
	}
	return n, err
}

// adoptOurs takes over what an earlier installer left in our tables: the
// routes of ours there count as installed but unconfirmed (see Synced),
// and the nexthop objects of ours they point at (and the members of those
// groups) as created by us, shared and reference counted like our own.
// Objects no route in our tables uses are not ours to take: they may be
// another installer's (see owner_linux.go); leftovers in our own id block
// are collected by reconciliation. Called before Run.
func (i *Installer) adoptOurs() (routes, nexthops int, err error) {
	knh, err := i.dumpNexthops()
	if err != nil {
		return 0, 0, err
	}
	kr, err := i.dumpRoutes()
	if err != nil {
		return 0, 0, err
	}
	i.adoptObjects(knh, i.referenced(kr, knh))
	stale := make(map[key][]netip.Addr, len(kr))
	for k, nhid := range kr {
		o := i.byID[nhid]
		if o == nil {
			o = unknownObj // a route without an object of ours
		} else {
			o.refs++
		}
		i.installed[k] = o
		var addrs []netip.Addr
		if o != unknownObj && !o.stray {
			addrs = slices.Clone(o.addrs)
			slices.SortFunc(addrs, netip.Addr.Compare)
			addrs = slices.Compact(addrs)
		}
		stale[k] = addrs
	}
	i.mu.Lock()
	i.adopting, i.adoptUntil, i.stale = true, time.Now().Add(i.cfg.AdoptGrace), stale
	i.mu.Unlock()
	i.publish()
	return len(kr), len(i.byID), nil
}

// referenced returns the ids of the objects of our protocol that the routes
// kr point at, and of the members of those groups.
func (i *Installer) referenced(kr map[key]uint32, knh map[uint32]kernelNexthop) map[uint32]struct{} {
	out := make(map[uint32]struct{})
	for _, nhid := range kr {
		kn, ok := knh[nhid]
		if !ok || kn.proto != i.proto {
			continue
		}
		out[nhid] = struct{}{}
		for _, m := range kn.group {
			if knh[m].proto == i.proto {
				out[m] = struct{}{}
			}
		}
	}
	return out
}

// adoptObjects takes the objects mine as ours; every other id in knh is
// foreign. An object in a form we create (an encap ip6 single on our
// device, or a group of such singles with weight 1) serves later AddRoute
// calls for the same addresses, so that a route re-added with the same
// nexthops needs no kernel change at all; the others are "stray" and live
// only as long as routes point at them.
func (i *Installer) adoptObjects(knh map[uint32]kernelNexthop, mine map[uint32]struct{}) {
	// Singles before groups, which refer to them; each in id order, so
	// that of two equal objects the older one is the one reused.
	ids := slices.Sorted(maps.Keys(knh))
	for _, groups := range []bool{false, true} {
		for _, id := range ids {
			kn := knh[id]
			if _, ok := mine[id]; !ok {
				i.foreign[id] = struct{}{}
				continue
			}
			if (len(kn.group) > 0) != groups {
				continue
			}
			o := &nhObject{id: id, created: true, adopted: true}
			addrs, usable := i.adoptedForm(o, kn)
			if usable && i.objs[objKey(addrs)] == nil {
				o.addrs = addrs
				i.objs[objKey(addrs)] = o
			} else {
				o.stray = true
			}
			i.byID[id] = o
		}
	}
}

// adoptedForm links an adopted group o to its members and returns the
// addresses of o and whether it has a form we create.
func (i *Installer) adoptedForm(o *nhObject, kn kernelNexthop) ([]netip.Addr, bool) {
	if len(kn.group) == 0 {
		usable := kn.encap == unix.LWTUNNEL_ENCAP_IP6 && int(kn.oif) == i.ifindex &&
			kn.dst.Is6() && kn.dst.Zone() == ""
		return []netip.Addr{kn.dst}, usable
	}
	var addrs []netip.Addr
	usable := kn.weights && len(kn.group) > 1
	for _, mid := range kn.group {
		m := i.byID[mid]
		if m == nil || len(m.members) > 0 || m.stray {
			usable = false
		}
		if m == nil {
			continue // not ours; nothing to count
		}
		m.refs++
		o.members = append(o.members, m)
		if len(m.addrs) == 1 {
			addrs = append(addrs, m.addrs[0])
		}
	}
	return addrs, usable
}

// keptAsFound reports whether k is an adopted route in a form we do not
// create that has not been confirmed yet.
func (i *Installer) keptAsFound(k key) bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	st, ok := i.stale[k]
	return ok && st == nil
}

// union returns the sorted union of two sorted address lists, in a new
// slice.
func union(a, b []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(a)+len(b))
	out = append(append(out, a...), b...)
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}
