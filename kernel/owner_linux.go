//go:build linux

package kernel

// Ownership: what in a network namespace belongs to this installer, so that
// several installers (one client per VNI, say) can share a host and a
// tunnel device without touching each other's routes and nexthop objects.
//
//   - Tables: each mapped table is claimed with an abstract unix socket
//     bound in the namespace (tableLockName). The kernel refuses a second
//     bind of the name, and releases it when the holder exits, however it
//     exits. A second installer for the same table fails in New.
//   - Routes: those of our protocol in our tables, as before.
//   - Nexthop objects: the ones this process created, the ones our routes
//     point at (adopted in New), and, for cleaning up leftovers, unknown
//     objects of our protocol in our id block (idRanges). An object is
//     deleted only if no route of our protocol in another table uses it and
//     no group we keep contains it (unusedElsewhere), unless this process
//     created it.

import (
	"errors"
	"fmt"
	"slices"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// sharedIDs is the id range for installers without a block of their own
// (lowest table above 0xFFFF) and for those whose block is full. Table 0
// does not exist, so no block overlaps it.
var sharedIDs = idRange{first: 1, last: 0xFFFF}

// idRange is an inclusive range of nexthop object ids.
type idRange struct{ first, last uint32 }

func (r idRange) has(id uint32) bool { return id >= r.first && id <= r.last }

// idBlock returns the block of nexthop ids owned by the installer whose
// lowest table is table: table<<16 to table<<16 | 0xFFFF. Only the owner
// of that table creates ids there, as the table lock guarantees, so an
// unknown object of our protocol in the block is a leftover of an earlier
// process of ours. Tables above 0xFFFF have no block (ok false).
func idBlock(table uint32) (r idRange, ok bool) {
	if table == 0 || table > 0xFFFF {
		return idRange{}, false
	}
	return idRange{first: table << 16, last: table<<16 | 0xFFFF}, true
}

// setIDRanges chooses where allocID looks: our block first, then the
// shared range.
func (i *Installer) setIDRanges() {
	low := i.tables[0]
	if b, ok := idBlock(low); ok {
		i.block, i.hasBlock = b, true
		i.idRanges = []idRange{b, sharedIDs}
		i.nextID = b.first
		return
	}
	i.idRanges = []idRange{sharedIDs}
	i.nextID = sharedIDs.first + low%(sharedIDs.last-sharedIDs.first) // spread the blockless ones
}

// inBlock reports whether id lies in our own block.
func (i *Installer) inBlock(id uint32) bool { return i.hasBlock && i.block.has(id) }

// tableLockName is the abstract unix socket name that claims table in a
// network namespace; `ss -xlp | grep metalbond` shows who holds it.
func tableLockName(table uint32) string { return fmt.Sprintf("@metalbond/route-table/%d", table) }

// lockTables claims every table in the namespace, or fails naming the
// first one another installer holds.
func (i *Installer) lockTables() error {
	for _, t := range i.tables {
		fd, err := socketIn(i.ns, unix.AF_UNIX, unix.SOCK_STREAM, 0)
		if err != nil {
			return fmt.Errorf("kernel: claim routing table %d: %w", t, err)
		}
		i.locks = append(i.locks, fd)
		err = unix.Bind(fd, &unix.SockaddrUnix{Name: tableLockName(t)})
		if errors.Is(err, unix.EADDRINUSE) {
			return i.tableInUse(t)
		}
		if err == nil {
			// Listening lets a refused installer ask who holds it.
			err = unix.Listen(fd, 1)
		}
		if err != nil {
			return fmt.Errorf("kernel: claim routing table %d: %w", t, err)
		}
	}
	return nil
}

// tableInUse builds the error for a table another installer holds, with
// the holder's process id when the kernel tells it.
func (i *Installer) tableInUse(t uint32) error {
	holder := "another process"
	if pid := lockHolder(i.ns, t); pid > 0 {
		holder = fmt.Sprintf("process %d", pid)
	}
	return fmt.Errorf("%w: routing table %d is installed by %s in this network namespace "+
		"(abstract socket %s); give each client its own tables with --install-routes VNI#TABLE",
		ErrTableInUse, t, holder, tableLockName(t))
}

// lockHolder returns the process id of the holder of table's lock, or 0.
func lockHolder(ns netns.NsHandle, table uint32) int32 {
	fd, err := socketIn(ns, unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	if unix.Connect(fd, &unix.SockaddrUnix{Name: tableLockName(table)}) != nil {
		return 0 // e.g. EAGAIN: its queue is full of earlier askers
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return 0
	}
	return cred.Pid
}

// unlockTables releases the claims.
func (i *Installer) unlockTables() {
	for _, fd := range i.locks {
		unix.Close(fd)
	}
	i.locks = nil
}

// ours reports whether t is one of our tables.
func (i *Installer) ours(t uint32) bool {
	_, ok := slices.BinarySearch(i.tables, t)
	return ok
}

// usedElsewhere returns the nexthop ids that routes of our protocol in
// tables not ours point at.
func (i *Installer) usedElsewhere() (map[uint32]struct{}, error) {
	out := make(map[uint32]struct{})
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		err := i.dumpRetry(routeDumpAllReq(fam, i.proto), func() {}, func(typ uint16, data []byte) {
			if typ != unix.RTM_NEWROUTE {
				return
			}
			if r, ok := parseRoute(data); ok && r.proto == i.proto && r.nhid != 0 && !i.ours(r.table) {
				out[r.nhid] = struct{}{}
			}
		})
		if err != nil {
			return nil, fmt.Errorf("list routes of other tables: %w", err)
		}
	}
	return out, nil
}

// unusedElsewhere returns those of cands that may be deleted without
// touching anyone else: no route of our protocol in another table points
// at them (nor at a group containing them), and no group that stays (one
// not in cands, or one that must stay itself) contains them. knh is a
// fresh dump of the nexthop objects.
func (i *Installer) unusedElsewhere(cands map[uint32]struct{}, knh map[uint32]kernelNexthop) (map[uint32]struct{}, error) {
	used, err := i.usedElsewhere()
	if err != nil {
		return nil, err
	}
	keep := func(id uint32) bool { _, ok := used[id]; return ok }
	// Groups first: a group stays if it is not a candidate or is used.
	for id, kn := range knh {
		_, cand := cands[id]
		if len(kn.group) == 0 || (cand && !keep(id)) {
			continue
		}
		for _, m := range kn.group {
			used[m] = struct{}{}
		}
	}
	out := make(map[uint32]struct{}, len(cands))
	for id := range cands {
		if !keep(id) {
			out[id] = struct{}{}
		}
	}
	return out, nil
}
