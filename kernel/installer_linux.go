//go:build linux

package kernel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metalbond/metalbond/route"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const (
	// roundSize is the number of changed prefixes one apply round takes.
	roundSize = 8192
	// linkSettle lets a burst of link events pass before reconciling.
	linkSettle = 100 * time.Millisecond
	// nexthopIDBase is where our nexthop object ids start; ids taken by
	// others are skipped, see allocID.
	nexthopIDBase = 0x4d420000
)

// Installer keeps Linux routing tables in line with the routes it is told
// about. AddRoute, RemoveRoute, Synced, Flush and Stats are safe for
// concurrent use; Run must run (once) for changes to reach the kernel.
type Installer struct {
	cfg    Config
	log    *slog.Logger
	proto  uint8
	tables []uint32 // mapped tables, sorted, each once
	ns     netns.NsHandle
	handle *netlink.Handle

	kick      chan struct{} // capacity 1: the desired state changed
	closing   chan struct{} // closed by Close
	closeOnce sync.Once
	runWG     sync.WaitGroup

	failures   atomic.Uint64
	retries    atomic.Uint64
	repairs    atomic.Uint64
	reconciles atomic.Uint64
	ignored    atomic.Uint64
	nRoutes    atomic.Int64 // published by the worker
	nNexthops  atomic.Int64
	nFailing   atomic.Int64

	mu         sync.Mutex // guards the following
	want       desiredSet
	gen        uint64        // changes accepted so far
	appliedGen uint64        // changes sent to the kernel at least once
	appliedCh  chan struct{} // closed (and replaced) when appliedGen grows
	running    bool
	closed     bool
	// adopting is set from New (with Config.AdoptGrace > 0) until Synced
	// or the grace time ends. stale holds, per adopted route, the
	// underlay addresses found in the kernel that AddRoute has not
	// confirmed yet (sorted; nil when the route was found in a form we
	// do not create). Until adoption ends, the kernel route of such a key
	// keeps them besides the desired ones, see applyRound.
	adopting   bool
	adoptUntil time.Time
	stale      map[key][]netip.Addr

	ioMu      sync.Mutex // serialises kernel I/O; guards the following
	c         *conn
	ifindex   int
	linkUp    bool
	installed map[key]*nhObject // what we put into the kernel
	objs      map[string]*nhObject
	byID      map[uint32]*nhObject
	foreign   map[uint32]struct{} // nexthop ids in use by others
	nextID    uint32
	gc        map[*nhObject]struct{} // objects whose refs dropped to 0
	retry     map[key]*retryState
	minDue    time.Time // earliest due of a retry not yet queued
	b         batch
}

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
}

// unknownObj stands for a kernel route of ours that points to something we
// did not create (found by reconciliation); it is never reference counted.
var unknownObj = &nhObject{}

type retryState struct {
	attempt int
	due     time.Time
	queued  bool // moved back to the dirty set, waiting for its round
	err     error
}

// New checks the device and the privilege to change routes and returns an
// Installer ready for Run. The routes carrying our protocol in the mapped
// tables, and the nexthop objects carrying it, are adopted (see
// Config.AdoptGrace and Synced) or, with a negative AdoptGrace, removed.
func New(cfg Config) (*Installer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	i := &Installer{
		cfg:       cfg,
		log:       cfg.Logger,
		proto:     uint8(cfg.Protocol),
		ns:        netns.None(),
		kick:      make(chan struct{}, 1),
		closing:   make(chan struct{}),
		want:      newDesiredSet(),
		appliedCh: make(chan struct{}),
		installed: make(map[key]*nhObject),
		objs:      make(map[string]*nhObject),
		byID:      make(map[uint32]*nhObject),
		foreign:   make(map[uint32]struct{}),
		nextID:    nexthopIDBase,
		gc:        make(map[*nhObject]struct{}),
		retry:     make(map[key]*retryState),
	}
	for _, t := range cfg.Tables {
		i.tables = append(i.tables, uint32(t))
	}
	slices.Sort(i.tables)
	i.tables = slices.Compact(i.tables)
	if err := i.open(); err != nil {
		i.release()
		return nil, err
	}
	if cfg.AdoptGrace < 0 {
		routes, nexthops, err := i.removeOurs()
		if err != nil {
			i.release()
			return nil, fmt.Errorf("kernel: remove stale routes: %w", err)
		}
		i.log.Info("route installer ready", "device", cfg.Device, "tables", i.tables,
			"protocol", cfg.Protocol, "stale_routes", routes, "stale_nexthops", nexthops)
		return i, nil
	}
	routes, nexthops, err := i.adoptOurs()
	if err != nil {
		i.release()
		return nil, fmt.Errorf("kernel: adopt existing routes: %w", err)
	}
	i.log.Info("route installer ready", "device", cfg.Device, "tables", i.tables,
		"protocol", cfg.Protocol, "adopted_routes", routes, "adopted_nexthops", nexthops,
		"adopt_grace", cfg.AdoptGrace)
	return i, nil
}

// open sets up the netlink handles and checks the device and privilege.
func (i *Installer) open() error {
	var err error
	if nsSet(i.cfg.NetNS) {
		fd, err := unix.FcntlInt(uintptr(i.cfg.NetNS), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("kernel: network namespace handle: %w", err)
		}
		i.ns = netns.NsHandle(fd)
		i.handle, err = netlink.NewHandleAt(i.ns)
		if err != nil {
			return fmt.Errorf("kernel: netlink in namespace: %w", err)
		}
	} else if i.handle, err = netlink.NewHandle(); err != nil {
		return fmt.Errorf("kernel: netlink: %w", err)
	}
	link, err := i.handle.LinkByName(i.cfg.Device)
	if err != nil {
		if errors.As(err, &netlink.LinkNotFoundError{}) {
			return fmt.Errorf("kernel: tunnel device %q does not exist; create it with: "+
				"ip link add %[1]s type ip6tnl mode any external && ip link set up dev %[1]s", i.cfg.Device)
		}
		return fmt.Errorf("kernel: look up device %q: %w", i.cfg.Device, err)
	}
	i.ifindex = link.Attrs().Index
	i.linkUp = link.Attrs().RawFlags&(unix.IFF_UP|unix.IFF_RUNNING) == unix.IFF_UP|unix.IFF_RUNNING
	if !i.linkUp {
		i.log.Warn("tunnel device is down; routes will be installed once it is up", "device", i.cfg.Device)
	}
	if i.c, err = dial(i.ns); err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	return i.checkPrivilege()
}

// checkPrivilege asks the kernel to delete nexthop id 0, which can never
// exist: the kernel checks CAP_NET_ADMIN first (EPERM), then whether it
// knows nexthop objects at all (EOPNOTSUPP), and only then the id (EINVAL).
func (i *Installer) checkPrivilege() error {
	i.b.reset()
	i.b.deleteNexthop(0)
	errs, err := i.c.exec(&i.b)
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	switch {
	case errors.Is(errs[0], unix.EPERM), errors.Is(errs[0], unix.EACCES):
		return fmt.Errorf("kernel: not permitted to change routes (needs CAP_NET_ADMIN, e.g. run as root): %w", errs[0])
	case errors.Is(errs[0], unix.EOPNOTSUPP):
		return fmt.Errorf("kernel: this kernel has no nexthop objects (Linux 5.3 or later is needed): %w", errs[0])
	}
	return nil
}

// release closes what open opened.
func (i *Installer) release() {
	if i.c != nil {
		i.c.close()
		i.c = nil
	}
	if i.handle != nil {
		i.handle.Close()
		i.handle = nil
	}
	if nsSet(i.ns) {
		i.ns.Close()
		i.ns = netns.None()
	}
}

// AddRoute records that r should be in the kernel. It never waits for the
// kernel; Run applies the change. Routes of an unmapped VNI, and IPv6
// routes with IPv4Only, are ignored. It returns an error only for a route
// that cannot be installed at all (its nexthop is not an IPv6 address) or
// after Close.
func (i *Installer) AddRoute(r route.Route) error { return i.change(r, true) }

// RemoveRoute records that r should no longer be in the kernel; removing the
// last nexthop of a prefix deletes its route. Like AddRoute it never waits.
func (i *Installer) RemoveRoute(r route.Route) error { return i.change(r, false) }

func (i *Installer) change(r route.Route, add bool) error {
	table, ok := i.cfg.Tables[r.VNI]
	if !ok {
		i.ignored.Add(1)
		i.log.Debug("no routing table for VNI; route ignored", "vni", r.VNI, "prefix", r.Prefix, "nexthop", r.NextHop)
		return nil
	}
	if !r.Prefix.IsValid() {
		return fmt.Errorf("kernel: route %s: invalid prefix", r)
	}
	if i.cfg.IPv4Only && !r.Prefix.Addr().Is4() {
		i.ignored.Add(1)
		i.log.Debug("IPv6 prefix ignored (IPv4 only)", "vni", r.VNI, "prefix", r.Prefix, "nexthop", r.NextHop)
		return nil
	}
	if a := r.NextHop.Address; !a.Is6() || a.Zone() != "" {
		return fmt.Errorf("kernel: route %s: nexthop %s is not an IPv6 address, which encap ip6 needs", r, a)
	}
	k := key{table: uint32(table), prefix: r.Prefix.Masked()}
	h := hop{vni: r.VNI, nh: r.NextHop}
	i.mu.Lock()
	if i.closed {
		i.mu.Unlock()
		return ErrClosed
	}
	var changed bool
	if add {
		changed = i.want.add(k, h)
		if len(i.stale) > 0 {
			i.confirm(k, h.nh.Address)
		}
	} else {
		changed = i.want.remove(k, h)
	}
	if changed {
		i.gen++
	}
	i.mu.Unlock()
	if changed {
		i.log.Debug("route changed", "add", add, "vni", r.VNI, "prefix", r.Prefix, "nexthop", r.NextHop, "table", table)
		select {
		case i.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

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

// Flush waits until every change accepted before the call has been sent to
// the kernel at least once (refused ones are then retried in the
// background, see Stats.Failing), or until ctx is done. It needs Run.
func (i *Installer) Flush(ctx context.Context) error {
	i.mu.Lock()
	target := i.gen
	for i.appliedGen < target {
		ch := i.appliedCh
		i.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-i.closing:
			return ErrClosed
		}
		i.mu.Lock()
	}
	i.mu.Unlock()
	return nil
}

// Stats returns a snapshot of the installer's state and counters.
func (i *Installer) Stats() Stats {
	i.mu.Lock()
	desired, pending, unconfirmed := len(i.want.routes), len(i.want.dirty), len(i.stale)
	i.mu.Unlock()
	return Stats{
		Desired:     desired,
		Routes:      int(i.nRoutes.Load()),
		Nexthops:    int(i.nNexthops.Load()),
		Pending:     pending,
		Failing:     int(i.nFailing.Load()),
		Unconfirmed: unconfirmed,
		Failures:    i.failures.Load(),
		Retries:     i.retries.Load(),
		Repairs:     i.repairs.Load(),
		Reconciles:  i.reconciles.Load(),
		Ignored:     i.ignored.Load(),
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

// Run applies changes to the kernel until ctx is done or Close is called,
// then returns nil. Besides changes it reacts to the retry timer, to the
// reconciliation period and to state changes of the device. Only one Run
// may be active at a time.
func (i *Installer) Run(ctx context.Context) error {
	i.mu.Lock()
	switch {
	case i.closed:
		i.mu.Unlock()
		return ErrClosed
	case i.running:
		i.mu.Unlock()
		return errors.New("kernel: Run is already running")
	}
	i.running = true
	i.runWG.Add(1)
	i.mu.Unlock()
	defer func() {
		i.mu.Lock()
		i.running = false
		i.mu.Unlock()
		i.runWG.Done()
	}()

	links, stopLinks := i.subscribeLinks()
	defer stopLinks()

	var tick <-chan time.Time
	if d := i.cfg.ReconcileInterval; d > 0 {
		t := time.NewTicker(d)
		defer t.Stop()
		tick = t.C
	}
	var grace <-chan time.Time
	i.mu.Lock()
	adopting, until := i.adopting, i.adoptUntil
	i.mu.Unlock()
	if adopting {
		t := time.NewTimer(time.Until(until))
		defer t.Stop()
		grace = t.C
	}
	retryTimer := time.NewTimer(time.Hour)
	retryTimer.Stop()
	defer retryTimer.Stop()
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()

	stopped := func() bool {
		select {
		case <-ctx.Done():
			return true
		case <-i.closing:
			return true
		default:
			return false
		}
	}
	reconcile := true // once at start: covers what happened since New
	for {
		i.ioMu.Lock()
		if reconcile {
			i.reconcile()
			reconcile = false
		}
		i.promoteDue(time.Now())
		for more := true; more && !stopped(); {
			more = i.applyRound()
		}
		if !i.minDue.IsZero() {
			retryTimer.Reset(time.Until(i.minDue))
		}
		i.ioMu.Unlock()

		select {
		case <-ctx.Done():
			return nil
		case <-i.closing:
			return nil
		case <-i.kick:
		case <-retryTimer.C:
		case <-tick:
			reconcile = true
		case <-grace:
			grace = nil
			i.endAdoption("grace time expired")
		case u, ok := <-links:
			if !ok {
				links = nil
				i.log.Warn("device events stopped; relying on periodic reconciliation", "device", i.cfg.Device)
				continue
			}
			if i.linkEvent(u) {
				settle.Reset(linkSettle)
			}
		case <-settle.C:
			i.ioMu.Lock()
			i.resetBackoff()
			i.ioMu.Unlock()
			reconcile = true
		}
	}
}

// subscribeLinks subscribes to link events in our namespace. The returned
// stop function ends the subscription and waits for its goroutine.
func (i *Installer) subscribeLinks() (<-chan netlink.LinkUpdate, func()) {
	ch := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	opts := netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) {
			select {
			case <-done: // the socket closing is how the subscription ends
			default:
				i.log.Warn("device events", "device", i.cfg.Device, "err", err)
			}
		},
	}
	if nsSet(i.ns) {
		ns := i.ns
		opts.Namespace = &ns
	}
	if err := netlink.LinkSubscribeWithOptions(ch, done, opts); err != nil {
		close(done)
		i.log.Warn("cannot watch device events; relying on periodic reconciliation", "device", i.cfg.Device, "err", err)
		return nil, func() {}
	}
	return ch, func() {
		close(done)
		for range ch { // the library closes ch when its reader ends
		}
	}
}

// linkEvent records a state change of our device and reports whether it
// calls for reconciliation.
func (i *Installer) linkEvent(u netlink.LinkUpdate) bool {
	if u.Link == nil || u.Attrs().Name != i.cfg.Device {
		return false
	}
	i.ioMu.Lock()
	defer i.ioMu.Unlock()
	if u.Header.Type == unix.RTM_DELLINK {
		if i.ifindex == int(u.Index) {
			i.log.Error("tunnel device deleted; routes will be installed when it is back", "device", i.cfg.Device)
			i.ifindex, i.linkUp = 0, false
		}
		return true
	}
	up := u.Flags&unix.IFF_UP != 0 && u.Flags&unix.IFF_RUNNING != 0
	if int(u.Index) == i.ifindex && up == i.linkUp {
		return false
	}
	if int(u.Index) != i.ifindex {
		i.log.Info("tunnel device (re)created", "device", i.cfg.Device, "index", u.Index)
	}
	i.ifindex, i.linkUp = int(u.Index), up
	i.log.Info("tunnel device state changed", "device", i.cfg.Device, "up", up)
	return true
}

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

type refusal struct {
	k   key
	err error
}

// gone reports whether a delete failed only because the object was
// already gone, which counts as success.
func gone(err error) bool {
	return errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT)
}

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
	for _, o := range objs {
		if o.id == 0 {
			o.id = i.allocID()
			i.byID[o.id] = o
		}
		if len(o.members) == 0 {
			i.b.newNexthop(o.id, i.ifindex, o.addrs[0], i.proto, false)
			continue
		}
		ids := make([]uint32, len(o.members))
		for n, m := range o.members {
			ids[n] = m.id
		}
		i.b.newGroup(o.id, ids, i.proto, false)
	}
	errs, err := i.c.exec(&i.b)
	for n, o := range objs {
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
			// holder is a leftover of ours, reconciliation removes it.
			i.foreign[o.id] = struct{}{}
			delete(i.byID, o.id)
			o.id = 0
		}
	}
}

// allocID returns a nexthop id that is neither ours nor known to be used by
// someone else.
func (i *Installer) allocID() uint32 {
	for {
		id := i.nextID
		i.nextID++
		if i.nextID == 0 {
			i.nextID = 1
		}
		if _, ok := i.byID[id]; ok {
			continue
		}
		if _, ok := i.foreign[id]; ok {
			continue
		}
		return id
	}
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
		i.b.reset()
		var del []*nhObject
		for o := range i.gc {
			if o.refs != 0 {
				delete(i.gc, o)
				continue
			}
			if (pass == 0) != (len(o.members) > 0) {
				continue
			}
			if !o.created {
				i.forget(o)
				continue
			}
			i.b.deleteNexthop(o.id)
			del = append(del, o)
		}
		if len(del) == 0 {
			continue
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
}

// succeeded clears the retry state of k.
func (i *Installer) succeeded(k key) { delete(i.retry, k) }

// refuse schedules refused prefixes for a retry with backoff and reports
// them: one Warn line per batch, Debug per prefix.
func (i *Installer) refuse(rs []refusal) {
	if len(rs) == 0 {
		return
	}
	now := time.Now()
	for _, r := range rs {
		i.failures.Add(1)
		st := i.retry[r.k]
		if st == nil {
			st = &retryState{}
			i.retry[r.k] = st
		}
		st.attempt++
		st.queued = false
		st.err = r.err
		st.due = now.Add(backoff(st.attempt))
		if i.minDue.IsZero() || st.due.Before(i.minDue) {
			i.minDue = st.due
		}
		i.log.Debug("kernel refused route", "table", r.k.table, "prefix", r.k.prefix, "attempt", st.attempt, "err", r.err)
	}
	i.log.Warn("kernel refused routes; will retry", "count", len(rs), "table", rs[0].k.table,
		"prefix", rs[0].k.prefix, "err", rs[0].err)
}

// backoff returns the delay before retry number attempt, with ±10% jitter.
func backoff(attempt int) time.Duration {
	d := retryMin
	for n := 1; n < attempt && d < retryMax; n++ {
		d *= 2
	}
	d = min(d, retryMax)
	return d - d/10 + rand.N(d/5+1)
}

// promoteDue moves refused prefixes whose retry is due back into the dirty
// set. Called with ioMu held.
func (i *Installer) promoteDue(now time.Time) {
	if i.minDue.IsZero() || now.Before(i.minDue) {
		return
	}
	i.minDue = time.Time{}
	var due []key
	for k, st := range i.retry {
		if st.queued {
			continue
		}
		if st.due.After(now) {
			if i.minDue.IsZero() || st.due.Before(i.minDue) {
				i.minDue = st.due
			}
			continue
		}
		st.queued = true
		due = append(due, k)
	}
	if len(due) == 0 {
		return
	}
	i.retries.Add(uint64(len(due)))
	i.mu.Lock()
	for _, k := range due {
		i.want.dirty[k] = struct{}{}
	}
	i.mu.Unlock()
}

// resetBackoff makes every refused prefix due now (the device came back).
func (i *Installer) resetBackoff() {
	now := time.Now()
	for _, st := range i.retry {
		st.attempt = 0
		if !st.queued {
			st.due = now
			i.minDue = now
		}
	}
}

func (i *Installer) publish() {
	i.nRoutes.Store(int64(len(i.installed)))
	i.nNexthops.Store(int64(len(i.byID)))
	i.nFailing.Store(int64(len(i.retry)))
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

// dumpRoutes lists the routes carrying our protocol in the mapped tables.
func (i *Installer) dumpRoutes() (map[key]uint32, error) {
	out := make(map[key]uint32)
	for _, t := range i.tables {
		for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
			err := i.dumpRetry(routeDumpReq(fam, t, i.proto), func() { clear(out) }, func(typ uint16, data []byte) {
				if typ != unix.RTM_NEWROUTE {
					return
				}
				r, ok := parseRoute(data)
				if ok && r.table == t && r.proto == i.proto {
					out[key{table: t, prefix: r.prefix}] = r.nhid
				}
			})
			if err != nil {
				return nil, fmt.Errorf("list routes of table %d: %w", t, err)
			}
		}
	}
	return out, nil
}

// dumpNexthops lists all nexthop objects of the namespace.
func (i *Installer) dumpNexthops() (map[uint32]kernelNexthop, error) {
	out := make(map[uint32]kernelNexthop)
	err := i.dumpRetry(nexthopDumpReq(), func() { clear(out) }, func(typ uint16, data []byte) {
		if typ != unix.RTM_NEWNEXTHOP {
			return
		}
		if n, ok := parseNexthop(data); ok {
			out[n.id] = n
		}
	})
	if err != nil {
		return nil, fmt.Errorf("list nexthop objects: %w", err)
	}
	return out, nil
}

// dumpRetry runs a dump, starting over (after reset) when the kernel says a
// concurrent change interrupted it. A kernel without nexthop objects has
// none to dump.
func (i *Installer) dumpRetry(req []byte, reset func(), fn func(uint16, []byte)) error {
	var err error
	for try := 0; try < 5; try++ {
		err = i.c.dump(req, fn)
		if !errors.Is(err, errDumpInterrupted) {
			return err
		}
		reset()
	}
	return err
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

// reconcile compares the kernel with what we installed and repairs the
// difference: missing or altered nexthop objects and routes are queued for
// reinstallation, foreign-looking objects of ours are deleted. Called with
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
	clear(i.foreign)
	for id, kn := range knh {
		if kn.proto != i.proto {
			i.foreign[id] = struct{}{}
		}
	}
	repairs := 0

	// Objects: a missing one is recreated by the next apply round; an
	// altered one is put right in place.
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
	slices.SortFunc(fix, func(a, b *nhObject) int { return len(a.members) - len(b.members) }) // singles first
	if len(fix) > 0 {
		i.b.reset()
		for _, o := range fix {
			if len(o.members) == 0 {
				i.b.newNexthop(o.id, i.ifindex, o.addrs[0], i.proto, true)
				continue
			}
			ids := make([]uint32, len(o.members))
			for n, m := range o.members {
				ids[n] = m.id
			}
			i.b.newGroup(o.id, ids, i.proto, true)
		}
		errs, err := i.c.exec(&i.b)
		for n, o := range fix {
			if err != nil || errs[n] != nil {
				o.created = false // routes through it get queued below
			}
		}
	}
	// Objects of ours that we do not know (leftovers, lost answers).
	n, err := i.deleteNexthops(knh, func(kn kernelNexthop) bool {
		_, known := i.byID[kn.id]
		return kn.proto == i.proto && !known
	})
	repairs += n
	if err != nil {
		i.log.Warn("cannot delete unknown nexthop object", "err", err)
	}

	// Routes: dumped after the objects were put right, as deleting an
	// object also deletes the routes through it.
	kr, err := i.dumpRoutes()
	if err != nil {
		return err
	}
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
	if repairs > 0 {
		i.repairs.Add(uint64(repairs))
		i.log.Info("reconciliation found drift", "repairs", repairs)
	}
	i.publish()
	return nil
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

// Cleanup removes every route and nexthop object of ours from the kernel
// (--cleanup at exit). Call it after Run has returned: a running Run would
// reinstall the desired routes at its next round.
func (i *Installer) Cleanup() error {
	i.ioMu.Lock()
	defer i.ioMu.Unlock()
	if i.c == nil {
		return ErrClosed
	}
	routes, nexthops, err := i.removeOurs()
	i.log.Info("removed our routes", "routes", routes, "nexthops", nexthops)
	if err != nil {
		return fmt.Errorf("kernel: cleanup: %w", err)
	}
	return nil
}

// Close stops Run, waits for it to return and releases the netlink sockets.
// It leaves the kernel routes in place; see Cleanup.
func (i *Installer) Close() error {
	i.closeOnce.Do(func() {
		i.mu.Lock()
		i.closed = true
		i.mu.Unlock()
		close(i.closing)
	})
	i.runWG.Wait()
	i.ioMu.Lock()
	defer i.ioMu.Unlock()
	i.release()
	return nil
}
