//go:build linux

package kernel

// Apply rounds: bringing changed prefixes to the kernel in pipelined batches.

import (
	"errors"
	"net/netip"

	"golang.org/x/sys/unix"
)

// applyRound takes up to roundSize changed prefixes and brings them to the
// kernel. It reports whether more are waiting. Called with ioMu held.
func (i *Installer) applyRound() bool {
	type work struct {
		k     key
		addrs []netip.Addr
	}
	i.mu.Lock()
	todo := make([]work, 0, min(len(i.want.dirty), roundSize))
	all := len(i.want.dirty) <= roundSize
	for k := range i.want.dirty {
		addrs := i.want.addrs(k)
		if !all {
			delete(i.want.dirty, k)
		}
		if st, ok := i.stale[k]; ok {
			if st == nil && addrs == nil {
				// Adopted as found, in a form we do not create, and not
				// confirmed: stays as it is until adoption ends.
				i.succeeded(k)
				continue
			}
			// An adopted route keeps its unconfirmed nexthops until
			// adoption ends: re-learning a multipath route one nexthop
			// at a time must not narrow it on the way.
			addrs = union(addrs, st)
		}
		todo = append(todo, work{k, addrs})
		if !all && len(todo) == roundSize {
			break
		}
	}
	if all && len(todo) > 0 {
		// A fresh map instead of deleting every key: a map drained by
		// deletes keeps its size and gets slower to probe.
		i.want.dirty = make(map[key]struct{})
	}
	more := len(i.want.dirty) > 0
	gen := i.gen
	i.mu.Unlock()

	var ops []routeOp
	for _, w := range todo {
		cur := i.installed[w.k]
		if len(w.addrs) == 0 {
			if cur == nil {
				i.succeeded(w.k)
				continue
			}
			ops = append(ops, routeOp{k: w.k, old: cur})
			continue
		}
		obj := i.acquire(w.addrs)
		if cur == obj && obj.created {
			i.releaseObj(obj)
			i.succeeded(w.k)
			continue
		}
		ops = append(ops, routeOp{k: w.k, obj: obj, old: cur})
	}
	i.execRoutes(ops)
	if !more {
		i.collectGarbage()
	}
	i.publish()
	if !more {
		i.mu.Lock()
		if gen > i.appliedGen {
			i.appliedGen = gen
			close(i.appliedCh)
			i.appliedCh = make(chan struct{})
		}
		i.mu.Unlock()
	}
	return more
}

// routeOp is one route to replace (obj set) or delete (obj nil).
type routeOp struct {
	k   key
	obj *nhObject // new target; holds a reference until the op is done
	old *nhObject // what is installed now, or nil
}

// execRoutes creates the nexthop objects the ops need, then sends the route
// changes in one pipelined batch and records the outcome of each.
func (i *Installer) execRoutes(ops []routeOp) {
	if len(ops) == 0 {
		return
	}
	var objs []*nhObject
	for _, op := range ops {
		if op.obj != nil && !op.obj.created {
			objs = append(objs, op.obj)
		}
	}
	i.createObjects(objs)

	i.b.reset()
	sent := make([]int, 0, len(ops)) // indices into ops, in batch order
	var refused []refusal
	for n, op := range ops {
		switch {
		case op.obj == nil:
			i.b.deleteRoute(op.k, i.proto)
		case op.obj.created:
			i.b.replaceRoute(op.k, i.proto, op.obj.id)
		default:
			i.releaseObj(op.obj)
			refused = append(refused, refusal{op.k, op.obj.err})
			continue
		}
		sent = append(sent, n)
	}
	errs, err := i.c.exec(&i.b)
	for n, idx := range sent {
		op := ops[idx]
		e := err
		if e == nil {
			e = errs[n]
		}
		if op.obj == nil {
			if e == nil || gone(e) {
				delete(i.installed, op.k)
				i.releaseObj(op.old)
				i.succeeded(op.k)
				continue
			}
		} else if e == nil {
			i.installed[op.k] = op.obj
			if op.old != nil {
				i.releaseObj(op.old)
			}
			i.succeeded(op.k)
			continue
		} else {
			i.releaseObj(op.obj)
		}
		refused = append(refused, refusal{op.k, e})
	}
	i.refuse(refused)
}

// gone reports whether a delete failed only because the object was
// already gone, which counts as success.
func gone(err error) bool {
	return errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT)
}

// markDirty queues keys for the next apply round.
func (i *Installer) markDirty(ks []key) {
	if len(ks) == 0 {
		return
	}
	i.mu.Lock()
	for _, k := range ks {
		i.want.dirty[k] = struct{}{}
	}
	i.mu.Unlock()
}
