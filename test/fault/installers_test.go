package faulttest

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/metalbond/metalbond/route"
)

// TestTwoInstallingClients runs two clients that install routes on one
// host, as a host with one client per VNI does: k23 installs VNI 23 into
// table 100, k24 VNI 24 into table 101, both on the same tunnel device and
// with nexthops to the same hypervisor. While table 100 is watched, k24
// starts, is killed and restarted, and stops with --cleanup; no route of
// table 100 ever leaves the kernel. A third client that would install into
// table 100 too is refused at start, naming the table.
func TestTwoInstallingClients(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	ns := newTestNS(t)
	srv := startServer(t, serverOpts{addr: freePort(t, ns.hostAddr), keepalive: 2})
	servers := []string{srv.addr}
	routes23 := hostRoutes(23, "10.23.100.1", 20, "2001:db8::1")
	routes24 := hostRoutes(24, "10.24.100.1", 20, "2001:db8::1")
	startClient(t, clientOpts{name: "fault-two-hv", servers: servers, routes: append(routes23, routes24...)})
	installer := func(name string, vni route.VNI, table int, extra ...string) *client {
		return startClient(t, clientOpts{name: name, servers: servers, subs: []route.VNI{vni},
			netns: ns.name, httpHost: ns.nsAddr,
			extra: append([]string{"--install-routes", fmt.Sprintf("%d#%d", vni, table), "--tun", "veth0"}, extra...)})
	}
	installer("fault-two-k23", 23, 100)
	ns.waitKernel(t, 100, kernelWant(23, routes23), 30*time.Second)
	var keep []netip.Prefix
	for _, r := range routes23 {
		keep = append(keep, r.Prefix)
	}
	watch := watchKernel(t, ns, 100, keep)

	k24 := installer("fault-two-k24", 24, 101, "--cleanup")
	ns.waitKernel(t, 101, kernelWant(24, routes24), 30*time.Second)
	k24.kill9()
	k24.restart()
	ns.waitKernel(t, 101, kernelWant(24, routes24), 30*time.Second)
	k24.stop() // --cleanup
	ns.waitKernel(t, 101, kernelTable{}, 10*time.Second)

	// A second installer for table 100 is refused at start.
	cmd := exec.Command("ip", "netns", "exec", ns.name, mustBinary(t), "client", "--server", srv.addr,
		"--subscribe", "25", "--install-routes", "25#100", "--tun", "veth0")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("third installer for table 100: err = %v, want exit status 1\n%s", err, out)
	}
	if !strings.Contains(string(out), "routing table 100 is installed by process") {
		t.Errorf("third installer for table 100 says:\n%s", out)
	}

	ns.waitKernel(t, 100, kernelWant(23, routes23), time.Second)
	samples := watch.done(t)
	logf(t, "table 100 watched over k24's start, kill, restart and cleanup: %d samples, no route missing", samples)
}
