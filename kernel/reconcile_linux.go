//go:build linux

package kernel

// Reconciliation: comparing the kernel with what we installed and
// repairing the difference.

import (
	"slices"

	"golang.org/x/sys/unix"
)

// reconcile compares the kernel with what we installed and repairs the
// difference: missing or altered nexthop objects and routes are queued for
// reinstallation, leftover objects in our id block are deleted. Called with
// ioMu held; the apply rounds that follow do the reinstalling.
func (i *Installer) reconcile() {
	if err := i.reconcileOnce(); err != nil {
		i.log.Warn("reconciliation failed", "err", err)
		return
	}
	i.reconciles.Add(1)
}

func (i *Installer) reconcileOnce() error {
	knh, err := i.dumpNexthops()
	if err != nil {
		return err
	}
	repairs := i.reconcileObjects(knh)
	repairs += i.deleteLeftovers(knh)
	clear(i.foreign)
	for id := range knh {
		if _, ok := i.byID[id]; !ok {
			i.foreign[id] = struct{}{}
		}
	}
	// Routes: dumped after the objects were put right, as deleting an
	// object also deletes the routes through it.
	n, err := i.reconcileRoutes()
	if err != nil {
		return err
	}
	repairs += n
	if repairs > 0 {
		i.repairs.Add(uint64(repairs))
		i.log.Info("reconciliation found drift", "repairs", repairs)
	}
	i.publish()
	return nil
}

// reconcileObjects compares our objects with the kernel's: a missing one is
// recreated by the next apply round, an altered one is put right in place.
// It returns the number of repairs.
func (i *Installer) reconcileObjects(knh map[uint32]kernelNexthop) int {
	repairs := 0
	var fix []*nhObject
	for id, o := range i.byID {
		if !o.created {
			continue
		}
		kn, ok := knh[id]
		switch {
		case ok && kn.proto == i.proto && (o.stray || i.matches(o, kn)):
			continue // a stray object cannot be put right, only replaced
		case ok && kn.proto == i.proto:
			fix = append(fix, o)
		case ok: // the id now belongs to someone else
			delete(i.byID, id)
			o.id, o.created = 0, false
		default:
			o.created = false
		}
		repairs++
	}
	if len(fix) == 0 {
		return repairs
	}
	slices.SortFunc(fix, func(a, b *nhObject) int { return len(a.members) - len(b.members) }) // singles first
	i.b.reset()
	for _, o := range fix {
		i.appendObject(o, true)
	}
	errs, err := i.c.exec(&i.b)
	for n, o := range fix {
		if err != nil || errs[n] != nil {
			o.created = false // routes through it get queued by reconcileRoutes
		}
	}
	return repairs
}

// deleteLeftovers deletes the objects of our protocol in our id block that
// we do not know (left by an earlier process of ours, or created although
// the kernel's answer was lost) and no one else uses. Objects outside our
// block are never deleted here: they may be another installer's, created
// an instant before the route that will use them.
func (i *Installer) deleteLeftovers(knh map[uint32]kernelNexthop) int {
	cands := make(map[uint32]struct{})
	for id, kn := range knh {
		if _, known := i.byID[id]; !known && kn.proto == i.proto && i.inBlock(id) {
			cands[id] = struct{}{}
		}
	}
	if len(cands) == 0 {
		return 0
	}
	free, err := i.unusedElsewhere(cands, knh)
	if err != nil {
		i.log.Warn("cannot check leftover nexthop objects", "err", err)
		return 0
	}
	n, err := i.deleteNexthops(knh, func(kn kernelNexthop) bool {
		_, ok := free[kn.id]
		return ok
	})
	if err != nil {
		i.log.Warn("cannot delete leftover nexthop object", "err", err)
	}
	for id := range free {
		delete(knh, id) // gone, not foreign
	}
	return n
}

// reconcileRoutes compares our routes with the kernel's and queues the
// ones that differ. It returns the number of repairs.
func (i *Installer) reconcileRoutes() (int, error) {
	kr, err := i.dumpRoutes()
	if err != nil {
		return 0, err
	}
	repairs := 0
	var dirty []key
	for k, o := range i.installed {
		nhid, ok := kr[k]
		if ok && o != unknownObj && o.created && nhid == o.id {
			continue
		}
		if ok && o == unknownObj && i.keptAsFound(k) {
			continue // adopted as found; applyRound would keep it anyway
		}
		if ok {
			i.installed[k] = unknownObj // exists but wrong: replace or delete it
		} else {
			delete(i.installed, k)
			// An adopted route is reinstalled as adopted (a link flap
			// takes it away too), unless its form is unknown.
			i.mu.Lock()
			if st, ok := i.stale[k]; ok && st == nil {
				delete(i.stale, k)
			}
			i.mu.Unlock()
		}
		i.releaseObj(o)
		dirty = append(dirty, k)
		repairs++
		i.log.Debug("route drifted; repairing", "table", k.table, "prefix", k.prefix)
	}
	for k := range kr {
		if _, ok := i.installed[k]; !ok {
			i.installed[k] = unknownObj
			dirty = append(dirty, k)
			repairs++
		}
	}
	i.markDirty(dirty)
	return repairs, nil
}

func (i *Installer) matches(o *nhObject, kn kernelNexthop) bool {
	if len(o.members) == 0 {
		return len(kn.group) == 0 && kn.encap == unix.LWTUNNEL_ENCAP_IP6 &&
			kn.dst == o.addrs[0] && int(kn.oif) == i.ifindex
	}
	if !kn.weights || len(kn.group) != len(o.members) {
		return false
	}
	for n, m := range o.members {
		if kn.group[n] != m.id {
			return false
		}
	}
	return true
}
