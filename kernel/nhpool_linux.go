//go:build linux

package kernel

// The nexthop pool: nexthop objects shared by routes, reference counted,
// created in batches and deleted when no route uses them.

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// nhObject is one kernel nexthop object of ours: a single encap nexthop
// (one address) or a group of singles (several addresses). Objects are
// shared by all routes with the same addresses and reference counted.
type nhObject struct {
	id      uint32
	addrs   []netip.Addr
	members []*nhObject // singles of a group, in order
	refs    int         // installed or planned routes, plus groups containing it
	created bool        // believed to exist in the kernel
	err     error       // why the last creation failed
	// stray marks an adopted object in a form we do not create (another
	// device, other weights, a duplicate): never handed out by acquire,
	// kept only while routes point at it.
	stray bool
	// adopted marks an object New found (not created by this process).
	// Another installer may use it too (after its tables were split
	// between installers), so it is deleted only if unusedElsewhere.
	adopted bool
}

// unknownObj stands for a kernel route of ours that points to something we
// did not create (found by reconciliation); it is never reference counted.
var unknownObj = &nhObject{}

// createObjects creates the given nexthop objects (and members of groups)
// that do not exist yet: all singles in one batch, then the groups whose
// members exist. Groups wait for their members' answers so that a group
// never refers to an id that turned out to belong to someone else.
func (i *Installer) createObjects(objs []*nhObject) {
	var singles, groups []*nhObject
	seen := make(map[*nhObject]bool)
	for _, o := range objs {
		if len(o.members) == 0 {
			if !o.created && !seen[o] {
				seen[o] = true
				singles = append(singles, o)
			}
			continue
		}
		if seen[o] {
			continue
		}
		seen[o] = true
		groups = append(groups, o)
		for _, m := range o.members {
			if !m.created && !seen[m] {
				seen[m] = true
				singles = append(singles, m)
			}
		}
	}
	i.createBatch(singles)
	ready := groups[:0]
	for _, g := range groups {
		ok := true
		for _, m := range g.members {
			if !m.created {
				g.err, ok = fmt.Errorf("nexthop %s: %w", m.addrs[0], m.err), false
				break
			}
		}
		if ok {
			ready = append(ready, g)
		}
	}
	i.createBatch(ready)
}

func (i *Installer) createBatch(objs []*nhObject) {
	if len(objs) == 0 {
		return
	}
	if i.ifindex == 0 {
		for _, o := range objs {
			o.err = fmt.Errorf("tunnel device %q does not exist", i.cfg.Device)
		}
		return
	}
	i.b.reset()
	sent := objs[:0:0]
	for _, o := range objs {
		if o.id == 0 {
			if o.id = i.allocID(); o.id == 0 {
				i.failures.Add(1)
				o.err = errors.New("no free nexthop object id")
				continue
			}
			i.byID[o.id] = o
		}
		sent = append(sent, o)
		i.appendObject(o, false)
	}
	errs, err := i.c.exec(&i.b)
	for n, o := range sent {
		e := err
		if e == nil {
			e = errs[n]
		}
		if e == nil {
			o.created, o.err = true, nil
			continue
		}
		i.failures.Add(1)
		o.err = e
		if errors.Is(e, unix.EEXIST) {
			// Someone else holds the id: take another next time. If the
			// holder is a leftover of ours in our block, reconciliation
			// removes it.
			i.foreign[o.id] = struct{}{}
			delete(i.byID, o.id)
			o.id = 0
		}
	}
}

// appendObject appends the creation (or, with replace, the replacement) of
// o to the batch.
func (i *Installer) appendObject(o *nhObject, replace bool) {
	if len(o.members) == 0 {
		i.b.newNexthop(o.id, i.ifindex, o.addrs[0], i.proto, replace)
		return
	}
	ids := make([]uint32, len(o.members))
	for n, m := range o.members {
		ids[n] = m.id
	}
	i.b.newGroup(o.id, ids, i.proto, replace)
}

// allocID returns a nexthop id that is neither ours nor known to be in
// use, from our block first, then from the shared range; 0 if all are
// taken.
func (i *Installer) allocID() uint32 {
	total := 0
	for _, r := range i.idRanges {
		total += int(r.last-r.first) + 1
	}
	for range total {
		id := i.nextID
		i.nextID = i.nextInRanges(id)
		if _, ok := i.byID[id]; ok {
			continue
		}
		if _, ok := i.foreign[id]; ok {
			continue
		}
		return id
	}
	return 0
}

// nextInRanges returns the id after id in idRanges, wrapping around.
func (i *Installer) nextInRanges(id uint32) uint32 {
	for n, r := range i.idRanges {
		if r.has(id) {
			if id < r.last {
				return id + 1
			}
			return i.idRanges[(n+1)%len(i.idRanges)].first
		}
	}
	return i.idRanges[0].first
}

// objKey is the identity of the object for addrs: their bytes in order.
func objKey(addrs []netip.Addr) string {
	b := make([]byte, 0, 16*len(addrs))
	for _, a := range addrs {
		a16 := a.As16()
		b = append(b, a16[:]...)
	}
	return string(b)
}

// acquire returns the object for addrs, making it if needed, with one more
// reference.
func (i *Installer) acquire(addrs []netip.Addr) *nhObject {
	k := objKey(addrs)
	o := i.objs[k]
	if o == nil {
		o = &nhObject{addrs: addrs}
		if len(addrs) > 1 {
			for _, a := range addrs {
				o.members = append(o.members, i.acquire([]netip.Addr{a}))
			}
		}
		i.objs[k] = o
	}
	o.refs++
	return o
}

func (i *Installer) releaseObj(o *nhObject) {
	if o == nil || o == unknownObj {
		return
	}
	o.refs--
	if o.refs == 0 {
		i.gc[o] = struct{}{}
	}
}

// forget drops an object that no longer exists in the kernel.
func (i *Installer) forget(o *nhObject) {
	delete(i.gc, o)
	if i.objs[objKey(o.addrs)] == o {
		delete(i.objs, objKey(o.addrs))
	}
	if o.id != 0 && i.byID[o.id] == o {
		delete(i.byID, o.id)
	}
	for _, m := range o.members {
		i.releaseObj(m)
	}
}

// collectGarbage deletes objects no route uses any more: groups first, as
// they hold references on their members.
func (i *Installer) collectGarbage() {
	for pass := 0; pass < 2 && len(i.gc) > 0; pass++ {
		i.collectPass(pass == 0)
	}
}

// collectPass deletes the unused groups, or the unused singles. An adopted
// object that another installer still uses is forgotten instead.
func (i *Installer) collectPass(groups bool) {
	var del, adopted []*nhObject
	for o := range i.gc {
		switch {
		case o.refs != 0:
			delete(i.gc, o)
		case groups != (len(o.members) > 0):
		case !o.created:
			i.forget(o)
		case o.adopted:
			adopted = append(adopted, o)
		default:
			del = append(del, o)
		}
	}
	if len(adopted) > 0 {
		free, err := i.freeAdopted(adopted)
		if err != nil {
			// They stay in gc for the next round.
			i.log.Warn("cannot check whether adopted nexthop objects are used elsewhere", "err", err)
		}
		for _, o := range adopted {
			if _, ok := free[o.id]; ok {
				del = append(del, o)
			} else if err == nil {
				i.log.Info("adopted nexthop object is used by another installer; left in place", "id", o.id)
				i.forget(o)
			}
		}
	}
	if len(del) == 0 {
		return
	}
	i.b.reset()
	for _, o := range del {
		i.b.deleteNexthop(o.id)
	}
	errs, err := i.c.exec(&i.b)
	for n, o := range del {
		e := err
		if e == nil {
			e = errs[n]
		}
		if e == nil || gone(e) {
			i.forget(o)
			continue
		}
		// Stays in gc for the next round; reconciliation would also
		// find it.
		i.log.Warn("cannot delete unused nexthop object", "id", o.id, "err", e)
	}
}

// freeAdopted returns the ids of those adopted objects that no one else
// uses (see unusedElsewhere).
func (i *Installer) freeAdopted(objs []*nhObject) (map[uint32]struct{}, error) {
	knh, err := i.dumpNexthops()
	if err != nil {
		return nil, err
	}
	cands := make(map[uint32]struct{}, len(objs))
	for _, o := range objs {
		cands[o.id] = struct{}{}
	}
	return i.unusedElsewhere(cands, knh)
}

// deleteNexthops deletes the kernel nexthop objects that match: groups
// first, then singles. It returns how many are gone.
func (i *Installer) deleteNexthops(knh map[uint32]kernelNexthop, match func(kernelNexthop) bool) (int, error) {
	count := 0
	var failed error
	for _, groups := range []bool{true, false} {
		i.b.reset()
		var ids []uint32
		for id, kn := range knh {
			if match(kn) && (len(kn.group) > 0) == groups {
				i.b.deleteNexthop(id)
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			continue
		}
		errs, err := i.c.exec(&i.b)
		if err != nil {
			return count, err
		}
		for n, e := range errs {
			if e == nil || gone(e) {
				count++
			} else if failed == nil {
				failed = fmt.Errorf("delete nexthop object %d: %w", ids[n], e)
			}
		}
	}
	return count, failed
}
