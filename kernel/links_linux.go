//go:build linux

package kernel

// Link events: following the state of the tunnel device.

import (
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

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
