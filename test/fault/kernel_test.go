package faulttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/metalbond/metalbond/route"
)

// requireRoot skips a test that needs root, except in CI, where the skip
// would hide the test: there it fails.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	msg := "needs root to create a network namespace and install routes"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true makes this a failure instead of a skip")
	}
	t.Skip(msg)
}

// testNS is a named network namespace holding a veth pair veth0/veth1 that
// stands in for the tunnel device (the build machines have no ip6tnl
// module; a veth accepts the same encapsulated routes), linked to our
// namespace by another veth pair: hostAddr on our side, nsAddr inside.
type testNS struct {
	name             string
	hostAddr, nsAddr string
}

func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newTestNS(t testing.TB) *testNS {
	t.Helper()
	n := rand.Uint32()
	ns := &testNS{
		name:     fmt.Sprintf("mbfault-%d-%08x", os.Getpid(), n),
		hostAddr: fmt.Sprintf("10.213.%d.%d", n>>8&0xff, n&0x3f*4+1),
		nsAddr:   fmt.Sprintf("10.213.%d.%d", n>>8&0xff, n&0x3f*4+2),
	}
	hostLink := fmt.Sprintf("mbf%08xh", n)
	ipCmd(t, "netns", "add", ns.name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns.name).Run() })
	ipCmd(t, "-n", ns.name, "link", "set", "lo", "up")
	ipCmd(t, "-n", ns.name, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
	ipCmd(t, "-n", ns.name, "link", "set", "veth0", "up")
	ipCmd(t, "-n", ns.name, "link", "set", "veth1", "up")
	ipCmd(t, "link", "add", hostLink, "type", "veth", "peer", "name", "uplink", "netns", ns.name)
	t.Cleanup(func() { exec.Command("ip", "link", "del", hostLink).Run() })
	ipCmd(t, "addr", "add", ns.hostAddr+"/30", "dev", hostLink)
	ipCmd(t, "link", "set", hostLink, "up")
	ipCmd(t, "-n", ns.name, "addr", "add", ns.nsAddr+"/30", "dev", "uplink")
	ipCmd(t, "-n", ns.name, "link", "set", "uplink", "up")
	return ns
}

// kernelTable is a routing table as `ip -j route show` reports it: the
// encapsulation destinations of each prefix's nexthops, sorted.
type kernelTable map[netip.Prefix][]netip.Addr

func (k kernelTable) String() string {
	var lines []string
	for p, dsts := range k {
		var s []string
		for _, d := range dsts {
			s = append(s, d.String())
		}
		lines = append(lines, p.String()+" via "+strings.Join(s, ","))
	}
	slices.Sort(lines)
	return strings.Join(lines, "; ")
}

func (k kernelTable) equal(o kernelTable) bool {
	if len(k) != len(o) {
		return false
	}
	for p, d := range k {
		if !slices.Equal(d, o[p]) {
			return false
		}
	}
	return true
}

// kernelWant is the table a client installing VNI vni should have, given
// the announced routes.
func kernelWant(vni route.VNI, held ...[]route.Route) kernelTable {
	k := make(kernelTable)
	for _, l := range held {
		for _, r := range l {
			if r.VNI == vni && !slices.Contains(k[r.Prefix], r.NextHop.Address) {
				k[r.Prefix] = append(k[r.Prefix], r.NextHop.Address)
			}
		}
	}
	for _, d := range k {
		slices.SortFunc(d, netip.Addr.Compare)
	}
	return k
}

// readKernel reads table from the namespace with iproute2.
func (ns *testNS) readKernel(table int) (kernelTable, error) {
	out, err := exec.Command("ip", "-n", ns.name, "-j", "route", "show", "table", fmt.Sprint(table)).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok && bytes.Contains(ee.Stderr, []byte("does not exist")) {
			return kernelTable{}, nil // the table has no route yet
		}
		return nil, err
	}
	return parseIPRoutes(out)
}

// parseIPRoutes parses `ip -j route show`. Its objects repeat the key
// "dst" (the prefix first, then the encapsulation destination of a single
// nexthop), which encoding/json would fold, so they are read token by token.
func parseIPRoutes(b []byte) (kernelTable, error) {
	k := make(kernelTable)
	dec := json.NewDecoder(bytes.NewReader(b))
	var routes []map[string]json.RawMessage // only to validate the shape
	if err := json.Unmarshal(b, &routes); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != nil { // [
		return nil, err
	}
	for dec.More() {
		var prefix netip.Prefix
		var dsts []netip.Addr
		if _, err := dec.Token(); err != nil { // {
			return nil, err
		}
		for dec.More() {
			key, err := dec.Token()
			if err != nil {
				return nil, err
			}
			switch key {
			case "dst":
				var s string
				if err := dec.Decode(&s); err != nil {
					return nil, err
				}
				if !prefix.IsValid() {
					if !strings.Contains(s, "/") {
						s += "/32"
					}
					if prefix, err = netip.ParsePrefix(s); err != nil {
						return nil, err
					}
				} else if a, err := netip.ParseAddr(s); err == nil {
					dsts = append(dsts, a)
				}
			case "nexthops":
				var nhs []struct {
					Dst string `json:"dst"`
				}
				if err := dec.Decode(&nhs); err != nil {
					return nil, err
				}
				for _, nh := range nhs {
					if a, err := netip.ParseAddr(nh.Dst); err == nil {
						dsts = append(dsts, a)
					}
				}
			default:
				var skip json.RawMessage
				if err := dec.Decode(&skip); err != nil {
					return nil, err
				}
			}
		}
		if _, err := dec.Token(); err != nil { // }
			return nil, err
		}
		slices.SortFunc(dsts, netip.Addr.Compare)
		k[prefix] = dsts
	}
	return k, nil
}

// waitKernel waits until table holds exactly want.
func (ns *testNS) waitKernel(t testing.TB, table int, want kernelTable, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got, err := ns.readKernel(table)
		if err == nil && got.equal(want) {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("kernel table %d did not converge within %v (err %v):\n got  %s\n want %s", table, timeout, err, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kernelWatch samples a table every 20 ms through netlink and listens to
// the route notifications of the namespace, to show that no route left the
// kernel.
type kernelWatch struct {
	table int
	stop  chan struct{}
	wg    sync.WaitGroup

	mu       sync.Mutex // guards the following
	keep     map[netip.Prefix]bool
	samples  int
	missing  []string // "time prefix" of samples missing a kept route
	deleted  []string // delete notifications of kept routes
	sampErrs int
}

// watchKernel starts watching table in ns; keep are the prefixes that must
// never be absent. Call done to stop.
func watchKernel(t testing.TB, ns *testNS, table int, keep []netip.Prefix) *kernelWatch {
	t.Helper()
	h, err := netns.GetFromName(ns.name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	w := &kernelWatch{table: table, stop: make(chan struct{}), keep: make(map[netip.Prefix]bool)}
	for _, p := range keep {
		w.keep[p] = true
	}
	updates := make(chan netlink.RouteUpdate, 1024)
	done := make(chan struct{})
	if err := netlink.RouteSubscribeWithOptions(updates, done, netlink.RouteSubscribeOptions{Namespace: &h}); err != nil {
		t.Fatalf("route notifications: %v", err)
	}
	w.wg.Add(2)
	go func() {
		defer w.wg.Done()
		defer nl.Close()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			rs, err := nl.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
			now := time.Now().Format("15:04:05.000")
			w.mu.Lock()
			if err != nil {
				w.sampErrs++
				w.mu.Unlock()
				continue
			}
			present := make(map[netip.Prefix]bool, len(rs))
			for _, r := range rs {
				if r.Dst != nil {
					if p, ok := netip.AddrFromSlice(r.Dst.IP.To4()); ok {
						ones, _ := r.Dst.Mask.Size()
						present[netip.PrefixFrom(p, ones)] = true
					}
				}
			}
			w.samples++
			for p := range w.keep {
				if !present[p] {
					w.missing = append(w.missing, now+" "+p.String())
				}
			}
			w.mu.Unlock()
		}
	}()
	go func() {
		defer w.wg.Done()
		for {
			select {
			case <-w.stop:
				close(done)
				for range updates { // until the subscription closes it
				}
				return
			case u, ok := <-updates:
				if !ok {
					return
				}
				if u.Type != unix.RTM_DELROUTE || u.Table != table || u.Dst == nil {
					continue
				}
				p, ok := netip.AddrFromSlice(u.Dst.IP.To4())
				if !ok {
					continue
				}
				ones, _ := u.Dst.Mask.Size()
				pfx := netip.PrefixFrom(p, ones)
				w.mu.Lock()
				if w.keep[pfx] {
					w.deleted = append(w.deleted, time.Now().Format("15:04:05.000")+" "+pfx.String())
				}
				w.mu.Unlock()
			}
		}
	}()
	return w
}

// done stops the watch and fails the test if a kept route ever left the
// kernel.
func (w *kernelWatch) done(t testing.TB) int {
	t.Helper()
	close(w.stop)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.missing) > 0 {
		t.Errorf("kernel samples missed routes that were to stay (%d times), first: %v", len(w.missing), w.missing[:min(5, len(w.missing))])
	}
	if len(w.deleted) > 0 {
		t.Errorf("the kernel deleted routes that were to stay (%d times), first: %v", len(w.deleted), w.deleted[:min(5, len(w.deleted))])
	}
	if w.sampErrs > 0 {
		t.Errorf("%d kernel samples failed", w.sampErrs)
	}
	return w.samples
}

// TestGracefulRestartKernelRoutes restarts the server, cleanly and with
// SIGKILL, while a client in a network namespace holds its routes in
// kernel table 100, and then kills and restarts the client itself. A watch
// of the kernel (a netlink dump every 20 ms and every route notification)
// shows that no route left the kernel; a route withdrawn while the server
// was down (a whole prefix, and one nexthop of an ECMP route) goes once the
// client has re-synced.
func TestGracefulRestartKernelRoutes(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	sz := sizes()
	ns := newTestNS(t)
	srv := startServer(t, serverOpts{addr: freePort(t, ns.hostAddr), keepalive: 2, syncDelay: syncDelay()})
	servers := []string{srv.addr}

	ecmp := "10.23.1.0/24"
	a1Routes := append(mustRoutes(t, "23#"+ecmp+"#2001:db8::1", "23#10.23.2.0/24#2001:db8::1", "23#10.23.3.0/24#2001:db8::1"),
		hostRoutes(23, "10.23.100.1", 20, "2001:db8::1")...)
	a2Full := append(mustRoutes(t, "23#"+ecmp+"#2001:db8::2", "23#10.23.4.0/24#2001:db8::2", "23#10.23.5.0/24#2001:db8::2"),
		hostRoutes(23, "10.23.200.1", 20, "2001:db8::2")...)
	a2Less := a2Full[2:] // without its ECMP nexthop and without 10.23.4.0/24
	startClient(t, clientOpts{name: "fault-gr-a1", servers: servers, routes: a1Routes})
	a2 := startClient(t, clientOpts{name: "fault-gr-a2", servers: servers, routes: a2Full})
	k := startClient(t, clientOpts{name: "fault-gr-k", servers: servers, subs: []route.VNI{23},
		netns: ns.name, httpHost: ns.nsAddr, extra: []string{"--install-routes", "23#100", "--tun", "veth0"}})
	waitRoutes(t, "k", k.http, expect(k.opts.subs, nil, a1Routes, a2Full), 30*time.Second)
	d := ns.waitKernel(t, 100, kernelWant(23, a1Routes, a2Full), 30*time.Second)
	logf(t, "kernel table 100 complete %v after k's routes: %d prefixes", d.Round(time.Millisecond), len(kernelWant(23, a1Routes, a2Full)))

	// Every prefix but the one withdrawn and re-announced stays.
	var keep []netip.Prefix
	for p := range kernelWant(23, a1Routes, a2Less) {
		keep = append(keep, p)
	}
	watch := watchKernel(t, ns, 100, keep)
	start := time.Now()
	a2Now := a2Full
	for i := range sz.restarts {
		for _, how := range []string{"SIGTERM", "SIGKILL"} {
			// With SIGKILL, a2 withdraws (or re-announces) routes while
			// the server is down.
			next := a2Now
			if how == "SIGKILL" {
				if len(a2Now) == len(a2Full) {
					next = a2Less
				} else {
					next = a2Full
				}
			}
			down := time.Now()
			if how == "SIGTERM" {
				srv.stop()
			} else {
				srv.kill9()
			}
			if !slices.Equal(next, a2Now) {
				a2.stop()
				a2.announce(t, next)
				a2.restart()
				a2Now = next
			}
			srv.restart()
			up := time.Now()
			logf(t, "restart %d (%s): server down for %v", i, how, up.Sub(down).Round(time.Millisecond))
			// Everybody is back once the server has every route again.
			waitRoutes(t, "server", srv.http, newRouteSet(a1Routes, a2Now), 30*time.Second)
			logf(t, "restart %d (%s): all routes re-announced %v after the restart", i, how, time.Since(up).Round(time.Millisecond))
			if how == "SIGTERM" && !long() {
				// Short run: the next restart comes before this one's
				// END_OF_SYNC, so the client holds the routes of two
				// earlier sessions when the last one re-syncs.
				continue
			}
			ns.waitKernel(t, 100, kernelWant(23, a1Routes, a2Now), 45*time.Second)
			logf(t, "restart %d (%s): kernel table exact %v after the restart (%d prefixes)",
				i, how, time.Since(up).Round(time.Millisecond), len(kernelWant(23, a1Routes, a2Now)))
			waitRoutes(t, "k", k.http, expect(k.opts.subs, nil, a1Routes, a2Now), 10*time.Second)
		}
	}
	// The installing client itself crashes and comes back: it adopts the
	// routes it finds in the kernel (--adopt-grace, 60 s by default) until
	// the server has sent the table again, so nothing leaves the kernel
	// either.
	k.kill9()
	down := time.Now()
	k.restart()
	waitRoutes(t, "k", k.http, expect(k.opts.subs, nil, a1Routes, a2Now), 30*time.Second)
	ns.waitKernel(t, 100, kernelWant(23, a1Routes, a2Now), 30*time.Second)
	logf(t, "client SIGKILL: k back with its table %v after the kill, kernel exact", time.Since(down).Round(time.Millisecond))
	samples := watch.done(t)
	logf(t, "kernel watched for %v: %d samples, no kept route missing or deleted unless reported above",
		time.Since(start).Round(time.Millisecond), samples)
}

func mustRoutes(t testing.TB, specs ...string) []route.Route {
	t.Helper()
	var out []route.Route
	for _, s := range specs {
		r, err := route.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}
