//go:build linux

package kernel

import (
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/metalbond/metalbond/route"
)

// TestMainTable: deployed configurations install into the main table
// (--install-routes VNI#0, which route.ParseTableMapping reads as
// route.TableMain). Routes there that are not ours stay, at start and at
// Cleanup.
func TestMainTable(t *testing.T) {
	e := newEnv(t)
	e.addRoute(t, "10.9.0.0/16", route.TableMain, netlink.RouteProtocol(unix.RTPROT_BOOT))
	m, err := route.ParseTableMapping("23#0")
	if err != nil {
		t.Fatal(err)
	}
	i := e.start(t, Config{Tables: map[route.VNI]int{m.VNI: m.Table}})
	add(t, i, "23#10.0.23.0/24#2001:db8::1")
	flush(t, i)
	e.wantTable(t, route.TableMain, "10.0.23.0/24 proto 254 via 2001:db8::1", "10.9.0.0/16 proto 3")
	if err := i.Cleanup(); err != nil {
		t.Fatal(err)
	}
	e.wantTable(t, route.TableMain, "10.9.0.0/16 proto 3")
}
