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

// removeOurs deletes every route of ours in the mapped tables and every
// nexthop object of ours, and forgets what was installed: all desired
// routes become dirty again. Called with ioMu held (or before Run).
func (i *Installer) removeOurs() (routes, nexthops int, err error) {
	kr, err := i.dumpRoutes()
	if err != nil {
		return 0, 0, err
	}
	i.b.reset()
	ks := make([]key, 0, len(kr))
	for k := range kr {
		i.b.deleteRoute(k, i.proto)
		ks = append(ks, k)
	}
	errs, err := i.c.exec(&i.b)
	if err != nil {
		return 0, 0, err
	}
	var failed error
	for n, e := range errs {
		if e == nil || gone(e) {
			routes++
		} else if failed == nil {
			failed = fmt.Errorf("delete route %s in table %d: %w", ks[n].prefix, ks[n].table, e)
		}
	}
	knh, err := i.dumpNexthops()
	if err != nil {
		return routes, 0, err
	}
	n, err := i.deleteNexthops(knh, func(kn kernelNexthop) bool { return kn.proto == i.proto })
	nexthops += n
	if err != nil && failed == nil {
		failed = err
	}
	for id, kn := range knh {
		if kn.proto != i.proto {
			i.foreign[id] = struct{}{}
		}
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

// adoptOurs takes over what an earlier installer left in the kernel: the
// routes of ours in the mapped tables count as installed but unconfirmed
// (see Synced), and every nexthop object of ours as created by us, shared
// and reference counted like our own. An object in a form we create (an
// encap ip6 single on our device, or a group of such singles with weight
// 1) serves later AddRoute calls for the same addresses, so that a route
// re-added with the same nexthops needs no kernel change at all; the
// others are "stray" and live only as long as routes point at them.
// Objects no route of ours uses are deleted in the first apply round.
// Called before Run.
func (i *Installer) adoptOurs() (routes, nexthops int, err error) {
	knh, err := i.dumpNexthops()
	if err != nil {
		return 0, 0, err
	}
	// Singles before groups, which refer to them; each in id order, so
	// that of two equal objects the older one is the one reused.
	ids := slices.Sorted(maps.Keys(knh))
	for _, groups := range []bool{false, true} {
		for _, id := range ids {
			kn := knh[id]
			if kn.proto != i.proto {
				i.foreign[id] = struct{}{}
				continue
			}
			if (len(kn.group) > 0) != groups {
				continue
			}
			o := &nhObject{id: id, created: true}
			var addrs []netip.Addr
			usable := true
			if groups {
				usable = kn.weights && len(kn.group) > 1
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
			} else {
				usable = kn.encap == unix.LWTUNNEL_ENCAP_IP6 && int(kn.oif) == i.ifindex &&
					kn.dst.Is6() && kn.dst.Zone() == ""
				addrs = []netip.Addr{kn.dst}
			}
			if usable && i.objs[objKey(addrs)] == nil {
				o.addrs = addrs
				i.objs[objKey(addrs)] = o
			} else {
				o.stray = true
			}
			i.byID[id] = o
		}
	}

	kr, err := i.dumpRoutes()
	if err != nil {
		return 0, 0, err
	}
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
	for _, o := range i.byID {
		if o.refs == 0 {
			i.gc[o] = struct{}{}
		}
	}
	i.mu.Lock()
	i.adopting, i.adoptUntil, i.stale = true, time.Now().Add(i.cfg.AdoptGrace), stale
	i.mu.Unlock()
	i.publish()
	return len(kr), len(i.byID), nil
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
