//go:build linux

package kernel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	locks  []int // sockets claiming our tables, see lockTables

	// Nexthop ids: our block (if hasBlock) and where allocID looks.
	block    idRange
	hasBlock bool
	idRanges []idRange

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
	foreign   map[uint32]struct{}    // nexthop ids in use, not by us
	nextID    uint32                 // where allocID looks next
	gc        map[*nhObject]struct{} // objects whose refs dropped to 0
	retry     map[key]*retryState
	minDue    time.Time // earliest due of a retry not yet queued
	b         batch
}

// New claims the mapped tables in the network namespace, checks the device
// and the privilege to change routes, and returns an Installer ready for
// Run. It fails with ErrTableInUse if another installer (in this or another
// process) holds one of the tables. The routes carrying our protocol in the
// mapped tables, and the nexthop objects they use, are adopted (see
// Config.AdoptGrace and Synced) or, with a negative AdoptGrace, removed.
// Routes and nexthop objects of other installers are left alone; see
// docs/kernel.md, "Several installers on one host".
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
		gc:        make(map[*nhObject]struct{}),
		retry:     make(map[key]*retryState),
	}
	for _, t := range cfg.Tables {
		i.tables = append(i.tables, uint32(t))
	}
	slices.Sort(i.tables)
	i.tables = slices.Compact(i.tables)
	i.setIDRanges()
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
	if err := i.lockTables(); err != nil {
		return err
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
	i.unlockTables()
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

func (i *Installer) publish() {
	i.nRoutes.Store(int64(len(i.installed)))
	i.nNexthops.Store(int64(len(i.byID)))
	i.nFailing.Store(int64(len(i.retry)))
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
