package faulttest

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/metalbond/metalbond/route"
)

// rtnlgrpNexthop is the netlink group of nexthop object changes
// (RTNLGRP_NEXTHOP in linux/rtnetlink.h); x/sys/unix does not name it.
const rtnlgrpNexthop = 32

// TestClientStops runs three announcers of one prefix (three nexthops, as
// three hypervisors behind one service) and a subscriber that installs it
// into kernel table 100 in a network namespace, all real processes, and
// stops the announcers in each way:
//
//   - SIGTERM: the nexthop leaves the subscriber's kernel route within 1 s;
//     the other two never do (sampled);
//   - SIGUSR1 and a start again (the restart path of the systemd unit): the
//     kernel does not change at all (every route and nexthop notification
//     of the namespace is counted, and the table is sampled);
//   - SIGKILL: the nexthop stays for the graceful restart time, then goes.
func TestClientStops(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	const grace = 6 * time.Second
	ns := newTestNS(t)
	srv := startServer(t, serverOpts{addr: freePort(t, ns.hostAddr), keepalive: 2, gracefulRestart: grace})
	servers := []string{srv.addr}
	const shared = "10.24.1.0/24"
	var ann []*client
	var all [][]route.Route
	for i, nh := range []string{"2001:db8::1", "2001:db8::2", "2001:db8::3"} {
		rs := mustRoutes(t, "24#"+shared+"#"+nh, "24#10.24."+string(rune('2'+i))+".0/24#"+nh)
		all = append(all, rs)
		ann = append(ann, startClient(t, clientOpts{name: "stop-a" + string(rune('1'+i)), servers: servers, routes: rs}))
	}
	k := startClient(t, clientOpts{name: "stop-k", servers: servers, subs: []route.VNI{24},
		netns: ns.name, httpHost: ns.nsAddr, extra: []string{"--install-routes", "24#100", "--tun", "veth0"}})
	ns.waitKernel(t, 100, kernelWant(24, all...), 30*time.Second)
	pfx := netip.MustParsePrefix(shared)
	nh := func(i int) netip.Addr { return all[i][0].NextHop.Address }

	// The restart path first, while all three are up: nothing in the
	// kernel may change.
	watch := watchKernel(t, ns, 100, slices.Collect(func(yield func(netip.Prefix) bool) {
		for p := range kernelWant(24, all...) {
			if !yield(p) {
				return
			}
		}
	}))
	notes := watchNotifications(t, ns)
	if err := ann[0].signal(syscall.SIGUSR1, 15*time.Second); err != nil {
		t.Fatalf("SIGUSR1: %v", err)
	}
	if !ann[0].lastRunSaid("stopping for a restart") {
		t.Errorf("a1 did not say it stopped for a restart:\n%s", ann[0].logTail(10))
	}
	ann[0].restart()
	waitLog(t, srv.proc, "graceful restart complete", 30*time.Second)
	// Let the subscriber see whatever the restart caused, then count.
	waitRoutes(t, "k", k.http, expect(k.opts.subs, nil, all...), 10*time.Second)
	if n, first, _ := notes.done(t); n > 0 {
		t.Errorf("the restart path changed the kernel: %d route or nexthop notifications, first %s", n, first)
	}
	samples := watch.done(t)
	logf(t, "restart path (SIGUSR1, start): no kernel change in %d samples and no notification", samples)

	// SIGTERM withdraws: the nexthop goes at once; the others stay. The
	// kernel's first notification after the signal times the withdrawal;
	// a netlink dump every 20 ms and each iproute2 read check that no
	// other prefix or nexthop went meanwhile.
	keep := kernelWant(24, all[0], all[1])
	watch = watchKernel(t, ns, 100, slices.Collect(func(yield func(netip.Prefix) bool) {
		for p := range keep {
			if !yield(p) {
				return
			}
		}
	}))
	notes = watchNotifications(t, ns)
	start := time.Now()
	ann[2].stop()
	exited := time.Since(start)
	var reads int
	for {
		got, err := ns.readKernel(100)
		if err != nil {
			t.Fatal(err)
		}
		reads++
		for p, want := range keep {
			if !containsAll(got[p], want) {
				t.Errorf("kernel read during the stop lost a nexthop that stays: %s has %v, want at least %v", p, got[p], want)
			}
		}
		if slices.Equal(got[pfx], []netip.Addr{nh(0), nh(1)}) {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("route %s still has nexthops %v 5 s after SIGTERM of the third announcer", pfx, got[pfx])
		}
	}
	seen := time.Since(start)
	n, first, firstAt := notes.done(t)
	if n == 0 {
		t.Fatal("no kernel notification seen when a nexthop left: the notification watch sees nothing")
	}
	took := firstAt.Sub(start)
	logf(t, "SIGTERM: a3 exited after %v; the kernel changed %v after the signal (%d notifications, first %s); iproute2 saw the route without its nexthop %v after it",
		exited.Round(time.Millisecond), took.Round(time.Millisecond), n, first, seen.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("the stopped announcer's nexthop left the kernel route %v after SIGTERM, want within 1 s", took)
	}
	ns.waitKernel(t, 100, keep, 5*time.Second)
	samples = watch.done(t)
	logf(t, "SIGTERM: %d netlink samples and %d iproute2 reads, the other prefixes and nexthops always present", samples, reads)

	// SIGKILL: the nexthop stays for the graceful restart time.
	start = time.Now()
	ann[1].kill9()
	took = waitNexthops(t, ns, pfx, []netip.Addr{nh(0)}, start, grace+10*time.Second)
	logf(t, "SIGKILL: a2's nexthop left the kernel route %v after the kill (graceful restart time %v)", took.Round(time.Millisecond), grace)
	if took < grace-time.Second {
		t.Errorf("a killed announcer's nexthop left after %v, before the graceful restart time %v", took, grace)
	}
	ns.waitKernel(t, 100, kernelWant(24, all[0]), 5*time.Second)
}

// containsAll reports whether have holds every address of want.
func containsAll(have, want []netip.Addr) bool {
	for _, a := range want {
		if !slices.Contains(have, a) {
			return false
		}
	}
	return true
}

// waitNexthops polls the kernel until the route to pfx in table 100 has
// exactly nhs (sorted), and returns the time since start.
func waitNexthops(t *testing.T, ns *testNS, pfx netip.Prefix, nhs []netip.Addr, start time.Time, timeout time.Duration) time.Duration {
	t.Helper()
	for {
		got, err := ns.readKernel(100)
		if err == nil && slices.Equal(got[pfx], nhs) {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("route %s: nexthops %v, want %v within %v (err %v)", pfx, got[pfx], nhs, timeout, err)
		}
	}
}

// waitLog waits until p has written text.
func waitLog(t *testing.T, p *proc, text string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.logText(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %q within %v:\n%s", p.spec.name, text, timeout, p.logTail(20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// notificationWatch counts the route (table 100) and nexthop notifications
// of a namespace: every change the kernel makes, however brief.
type notificationWatch struct {
	sock *nl.NetlinkSocket
	wg   sync.WaitGroup

	mu      sync.Mutex // guards the following
	n       int
	first   string
	firstAt time.Time
	closed  bool
	err     error // of a receive, unless closed
}

func watchNotifications(t *testing.T, ns *testNS) *notificationWatch {
	t.Helper()
	h, err := netns.GetFromName(ns.name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	cur, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	sock, err := nl.SubscribeAt(h, cur, unix.NETLINK_ROUTE, unix.RTNLGRP_IPV4_ROUTE, rtnlgrpNexthop)
	if err != nil {
		t.Fatalf("netlink notifications: %v", err)
	}
	w := &notificationWatch{sock: sock}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			msgs, _, err := sock.Receive()
			if err != nil {
				w.mu.Lock()
				if !w.closed {
					w.err = err
				}
				w.mu.Unlock()
				return
			}
			for _, m := range msgs {
				w.note(m.Header.Type, m.Data)
			}
		}
	}()
	return w
}

func (w *notificationWatch) note(typ uint16, data []byte) {
	what := ""
	switch typ {
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		// struct rtmsg: family, dst_len, src_len, tos, table, ...
		if len(data) < 5 || data[4] != 100 {
			return
		}
		what = "route"
	case unix.RTM_NEWNEXTHOP, unix.RTM_DELNEXTHOP:
		what = "nexthop"
	default:
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n++
	if w.first == "" {
		w.firstAt = time.Now()
		w.first = fmt.Sprintf("%s %s type %d % x", time.Now().Format("15:04:05.000"), what, typ, data[:min(16, len(data))])
	}
}

// done stops the watch and returns the number of notifications and the
// first; it fails the test if the watch failed.
func (w *notificationWatch) done(t *testing.T) (n int, first string, firstAt time.Time) {
	t.Helper()
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.sock.Close()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		t.Fatalf("netlink notifications: %v", w.err)
	}
	return w.n, w.first, w.firstAt
}

// TestUnnamedClientsOnOneHost runs clients without --name on one host, as
// the README's example does: they are not taken for one another, and a
// restarted one is recognised. b1 stops for a restart (its route is kept);
// a new, different client b3 starts and does not release it; b1 comes back
// and does.
func TestUnnamedClientsOnOneHost(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverOpts{keepalive: 2, gracefulRestart: time.Minute})
	servers := []string{srv.addr}
	x := mustRoutes(t, "25#10.25.1.0/24#2001:db8::1")
	y := mustRoutes(t, "25#10.25.2.0/24#2001:db8::2")
	z := mustRoutes(t, "25#10.25.3.0/24#2001:db8::3")
	b1 := startClient(t, clientOpts{name: "b1", unnamed: true, servers: servers, routes: x})
	startClient(t, clientOpts{name: "b2", unnamed: true, servers: servers, routes: y})
	waitRoutes(t, "server", srv.http, newRouteSet(x, y), 30*time.Second)

	if err := b1.signal(syscall.SIGUSR1, 15*time.Second); err != nil {
		t.Fatalf("SIGUSR1: %v", err)
	}
	waitLog(t, srv.proc, "keeping routes for graceful restart", 10*time.Second)
	startClient(t, clientOpts{name: "b3", unnamed: true, servers: servers, routes: z})
	waitRoutes(t, "server", srv.http, newRouteSet(x, y, z), 30*time.Second)
	before := strings.Count(srv.logText(), "graceful restart complete")

	b1.restart()
	waitLog(t, srv.proc, "graceful restart complete", 30*time.Second)
	checkRoutes(t, "server", srv.http, newRouteSet(x, y, z))
	log := srv.logText()
	if before != 0 || strings.Count(log, "graceful restart complete") != 1 {
		t.Errorf("stale routes released %d times before b1 came back (want 0) and %d in all (want 1): another client was taken for b1",
			before, strings.Count(log, "graceful restart complete"))
	}
	for _, bad := range []string{"same name", "graceful restart time expired"} {
		if strings.Contains(log, bad) {
			t.Errorf("server log says %q:\n%s", bad, srv.logTail(30))
		}
	}
	logf(t, "three unnamed clients on one host kept apart; b1 recognised after its restart")
}
