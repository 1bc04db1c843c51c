//go:build linux

package kernel

// Dumps: reading our routes and the nexthop objects back from the kernel.

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

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
