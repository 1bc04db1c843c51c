//go:build linux

package kernel

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The tests in this file restart the installer: installer #1 installs
// routes and exits without Cleanup (Close only, as a process does when it
// is killed or restarted), installer #2 starts on the same tables. A
// watcher observes the table all along.

// watcher observes a table: a sampler dumps it every millisecond and
// checks that each watched prefix is there in an allowed form, and a
// subscription to route events catches deletions too brief for any dump
// and counts the changes per prefix.
type watcher struct {
	e     *testEnv
	table int
	sock  *nl.NetlinkSocket
	done  chan struct{}
	wg    sync.WaitGroup

	mu       sync.Mutex                // guards the following
	allowed  map[netip.Prefix][]string // kroute.String forms; nil: any
	problems []string
	samples  int
	changes  map[netip.Prefix]int // RTM_NEWROUTE events
	markers  int                  // marker routes added by settle
	marked   int                  // marker routes seen as events
}

// markerSeq numbers the marker routes.
var markerSeq atomic.Uint32

// markerTable holds the routes settle adds to find the end of the event
// stream.
const markerTable = 4242

// watch starts watching the prefixes of allowed in table until stop.
func (e *testEnv) watch(t testing.TB, table int, allowed map[netip.Prefix][]string) *watcher {
	t.Helper()
	sock, err := nl.SubscribeAt(e.ns, netns.None(), unix.NETLINK_ROUTE, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE)
	if err != nil {
		t.Fatalf("subscribe to route events: %v", err)
	}
	if err := sock.SetReceiveBufferSize(8<<20, true); err != nil {
		t.Fatalf("route events: %v", err)
	}
	w := &watcher{
		e:       e,
		table:   table,
		sock:    sock,
		done:    make(chan struct{}),
		allowed: maps.Clone(allowed),
		changes: make(map[netip.Prefix]int),
	}
	w.wg.Add(2)
	go w.sample()
	go w.events()
	t.Cleanup(func() { w.stop() })
	return w
}

func (w *watcher) problem(format string, args ...any) {
	if len(w.problems) < 20 {
		w.problems = append(w.problems, fmt.Sprintf(format, args...))
	}
}

// sample dumps the table until stop. Dumps that fail (an interrupted dump
// may show a table half old, half new) are skipped.
func (w *watcher) sample() {
	defer w.wg.Done()
	for {
		select {
		case <-w.done:
			return
		default:
		}
		rs, err := dumpTable(w.e.ns, w.table)
		if err == nil {
			w.mu.Lock()
			w.samples++
			for p, forms := range w.allowed {
				r, ok := rs[p]
				switch {
				case !ok:
					w.problem("sample %d: %s missing", w.samples, p)
				case forms != nil && !slices.Contains(forms, r.String()):
					w.problem("sample %d: %s is %q, want one of %q", w.samples, p, r, forms)
				}
			}
			w.mu.Unlock()
		}
		time.Sleep(time.Millisecond)
	}
}

// events reads route events until the socket is closed.
func (w *watcher) events() {
	defer w.wg.Done()
	for {
		msgs, _, err := w.sock.Receive()
		if errors.Is(err, unix.ENOBUFS) {
			w.mu.Lock()
			w.problem("route events lost")
			w.mu.Unlock()
			continue
		}
		if err != nil {
			return // closed by stop
		}
		for _, m := range msgs {
			if m.Header.Type != unix.RTM_NEWROUTE && m.Header.Type != unix.RTM_DELROUTE {
				continue
			}
			p, _, table, err := decodeRoute(m.Data)
			if err != nil || (table != w.table && table != markerTable) {
				continue
			}
			w.mu.Lock()
			if table == markerTable {
				if m.Header.Type == unix.RTM_NEWROUTE {
					w.marked++
				}
				w.mu.Unlock()
				continue
			}
			if m.Header.Type == unix.RTM_NEWROUTE {
				w.changes[p]++
			} else if _, ok := w.allowed[p]; ok {
				w.problem("event: %s deleted", p)
			}
			w.mu.Unlock()
		}
	}
}

// unwatch stops checking ps, which may now disappear.
func (w *watcher) unwatch(ps ...netip.Prefix) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range ps {
		delete(w.allowed, p)
	}
}

// settle waits until the sampler has taken two more complete samples and
// every route event so far has been read (a marker route added to another
// table comes back as the last event), so that the state reached by the
// caller has certainly been looked at.
func (w *watcher) settle(t testing.TB) {
	t.Helper()
	w.mu.Lock()
	n := w.samples + 2
	w.markers++
	mark := w.markers
	w.mu.Unlock()
	n32 := markerSeq.Add(1) // unique within the namespace, over all watchers
	dst := &net.IPNet{IP: net.IPv4(198, 51, byte(n32>>8), byte(n32)), Mask: net.CIDRMask(32, 32)}
	if err := w.e.h.RouteAdd(&netlink.Route{Dst: dst, Table: markerTable, Type: unix.RTN_BLACKHOLE}); err != nil {
		t.Fatalf("add marker route: %v", err)
	}
	eventually(t, "table samples and route events", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.samples >= n && w.marked >= mark
	})
}

// stop ends watching and waits for the goroutines. It may be called more
// than once.
func (w *watcher) stop() {
	select {
	case <-w.done:
		return
	default:
	}
	close(w.done)
	w.sock.Close()
	w.wg.Wait()
}

// result stops watching, once everything up to now has been seen, and
// reports what was seen. It may be called more than once.
func (w *watcher) result(t testing.TB) (samples int, problems []string, changes map[netip.Prefix]int) {
	t.Helper()
	select {
	case <-w.done: // stopped already
	default:
		w.settle(t)
		w.stop()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.samples, w.problems, w.changes
}

// requireSteady fails the test if a watched route ever disappeared or
// took a form not allowed.
func (w *watcher) requireSteady(t testing.TB) {
	t.Helper()
	samples, problems, _ := w.result(t)
	if len(problems) > 0 {
		t.Fatalf("routes flapped (%d samples):\n%s", samples, strings.Join(problems, "\n"))
	}
	t.Logf("%d samples of the table, no route missing", samples)
}

// installAndExit runs installer #1 with routes until they are in the
// kernel, then stops it without Cleanup, and returns the table.
func (e *testEnv) installAndExit(t testing.TB, routes ...string) map[netip.Prefix]kroute {
	t.Helper()
	i := e.newInstaller(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- i.Run(ctx) }()
	add(t, i, routes...)
	flush(t, i)
	if s := i.Stats(); s.Failing != 0 {
		t.Fatalf("installer #1: stats = %+v", s)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("installer #1: Run: %v", err)
	}
	if err := i.Close(); err != nil {
		t.Fatalf("installer #1: Close: %v", err)
	}
	return e.routes(t, testTable)
}

// forms returns the current form of every route of table, as allowed
// forms for a watcher.
func forms(rs map[netip.Prefix]kroute) map[netip.Prefix][]string {
	out := make(map[netip.Prefix][]string, len(rs))
	for p, r := range rs {
		out[p] = []string{r.String()}
	}
	return out
}

// restartRoutes is the table of the restart tests: 100 IPv4 prefixes over
// two hypervisors, every fourth one multipath, and IPv6 single and
// multipath routes.
func restartRoutes() []string {
	var rs []string
	for n := range 100 {
		p := fmt.Sprintf("23#10.0.%d.0/24#", n)
		switch n % 4 {
		case 0, 1:
			rs = append(rs, p+"2001:db8::1")
		case 2:
			rs = append(rs, p+"2001:db8::2")
		default:
			rs = append(rs, p+"2001:db8::1", p+"2001:db8::2")
		}
	}
	return append(rs,
		"23#2001:db8:23::/64#2001:db8::1",
		"23#2001:db8:24::/64#2001:db8::1",
		"23#2001:db8:24::/64#2001:db8::2",
	)
}

// TestRestartAdopts: installer #2 adopts what #1 left. During its start,
// the re-adding of the same routes and until Synced, no route leaves the
// kernel, and a route re-added with the same nexthops is not even touched,
// though multipath routes are re-added one nexthop at a time. A changed
// nexthop set is replaced in place: new nexthops join at once, old ones
// leave at Synced. A route added and withdrawn again before Synced is
// removed at once, and the one route #2 does not re-add is removed at
// Synced, with the objects only it used.
func TestRestartAdopts(t *testing.T) {
	e := newEnv(t)
	e.addRoute(t, "10.8.0.0/16", testTable, unix.RTPROT_STATIC)
	same := restartRoutes()
	before := e.installAndExit(t, append(same,
		"23#10.2.0.0/16#2001:db8::1", "23#10.2.0.0/16#2001:db8::2", // changed: ::2 becomes ::3
		"23#2001:db8:25::/64#2001:db8::1", // changed: ::2 is added
		"23#10.4.0.0/16#2001:db8::4",      // moved to ::2; ::4 is used by nothing else
		"23#10.3.0.0/16#2001:db8::5",      // gone: not re-added; ::5 is used by nothing else
		"23#10.5.0.0/16#2001:db8::1",      // withdrawn: re-added and withdrawn before Synced
	)...)
	var (
		changed   = netip.MustParsePrefix("10.2.0.0/16")
		changed6  = netip.MustParsePrefix("2001:db8:25::/64")
		moved     = netip.MustParsePrefix("10.4.0.0/16")
		gone      = netip.MustParsePrefix("10.3.0.0/16")
		withdrawn = netip.MustParsePrefix("10.5.0.0/16")
	)
	ours := len(before) - 1 // without the static route
	if ours != 107 || len(e.nexthopIDs(t, 254)) != 5 {
		t.Fatalf("installer #1 left %d routes and %d nexthop objects, want 107 and 5", ours, len(e.nexthopIDs(t, 254)))
	}

	allowed := forms(before)
	// Until Synced the old nexthops stay with the new ones.
	allowed[changed] = append(allowed[changed], "proto 254 via 2001:db8::1,2001:db8::2,2001:db8::3", "proto 254 via 2001:db8::1,2001:db8::3")
	allowed[changed6] = append(allowed[changed6], "proto 254 via 2001:db8::1,2001:db8::2")
	allowed[moved] = append(allowed[moved], "proto 254 via 2001:db8::2,2001:db8::4", "proto 254 via 2001:db8::2")
	delete(allowed, withdrawn)
	w := e.watch(t, testTable, allowed)
	w.settle(t)

	// A short reconciliation period: it must not remove what is
	// unconfirmed either.
	i := e.start(t, Config{ReconcileInterval: 10 * time.Millisecond, Logger: testLogger(t)})
	w.settle(t)
	if s := i.Stats(); s.Unconfirmed != ours || s.Routes != ours || s.Desired != 0 {
		t.Errorf("stats after New = %+v, want %d routes, all unconfirmed", s, ours)
	}
	// As a client re-learns its routes from several servers: a multipath
	// route arrives one nexthop at a time, with kernel rounds between.
	readd := append(same,
		"23#10.2.0.0/16#2001:db8::1", "23#10.2.0.0/16#2001:db8::3",
		"23#2001:db8:25::/64#2001:db8::1", "23#2001:db8:25::/64#2001:db8::2",
		"23#10.4.0.0/16#2001:db8::2",
		"23#10.5.0.0/16#2001:db8::1",
	)
	for _, first := range []bool{true, false} {
		for _, r := range readd {
			if strings.HasSuffix(r, "#2001:db8::1") == first {
				add(t, i, r)
			}
		}
		flush(t, i)
		w.settle(t)
	}
	remove(t, i, "23#10.5.0.0/16#2001:db8::1")
	flush(t, i)
	eventually(t, "reconciliations while adopting", func() bool { return i.Stats().Reconciles >= 3 })
	w.settle(t)

	after := e.routes(t, testTable)
	for p, r := range before {
		switch p {
		case withdrawn:
			if _, ok := after[p]; ok {
				t.Errorf("%s withdrawn before Synced but still there", p)
			}
		case changed, changed6, moved:
			if got, want := after[p].String(), allowed[p][1]; got != want {
				t.Errorf("%s is %q, want %q", p, got, want)
			}
		default: // also gone, which waits for Synced
			if a, ok := after[p]; !ok || a.nhid != r.nhid || a.String() != r.String() {
				t.Errorf("%s is %q (nhid %d), want it as before: %q (nhid %d)", p, a, a.nhid, r, r.nhid)
			}
		}
	}
	if s := i.Stats(); s.Unconfirmed != 3 || s.Repairs != 0 || s.Failing != 0 {
		t.Errorf("stats before Synced = %+v, want 3 unconfirmed (%s, %s, %s), no repairs", s, gone, changed, moved)
	}
	// New: ::3, ::1/::2/::3 and ::2/::4.
	if got := len(e.nexthopIDs(t, 254)); got != 8 {
		t.Errorf("%d nexthop objects before Synced, want 8", got)
	}

	w.unwatch(gone)
	i.Synced()
	flush(t, i)
	i.Synced() // a second call changes nothing
	flush(t, i)
	w.settle(t)
	after = e.routes(t, testTable)
	if _, ok := after[gone]; ok {
		t.Errorf("%s still there after Synced", gone)
	}
	for _, p := range []netip.Prefix{changed, moved} {
		if got, want := after[p].String(), allowed[p][2]; got != want {
			t.Errorf("%s is %q after Synced, want %q", p, got, want)
		}
	}
	if got := len(e.routes(t, testTable)); got != ours-2+1 {
		t.Errorf("%d routes after Synced, want %d", got, ours-2+1)
	}
	if s := i.Stats(); s.Unconfirmed != 0 || s.Routes != ours-2 || s.Nexthops != 5 || s.Desired != ours-2 {
		t.Errorf("stats after Synced = %+v", s)
	}
	if got := len(e.nexthopIDs(t, 254)); got != 5 {
		t.Errorf("%d nexthop objects after Synced, want 5 (::4, ::5 and two groups collected)", got)
	}
	_, _, changes := w.result(t)
	for p := range before {
		if n := changes[p]; n > 0 && p != changed && p != changed6 && p != moved && p != withdrawn {
			t.Errorf("%s re-added with the same nexthops, yet the kernel saw %d change(s)", p, n)
		}
	}
	if changes[changed] == 0 || changes[changed6] == 0 || changes[moved] == 0 {
		t.Errorf("no kernel change for the changed routes: %v", changes)
	}
	w.requireSteady(t)
}

// TestRestartGraceExpires: with plain v1 servers Synced never comes; the
// unconfirmed route stays for the grace time and is removed then.
func TestRestartGraceExpires(t *testing.T) {
	e := newEnv(t)
	e.installAndExit(t,
		"23#10.0.1.0/24#2001:db8::1",
		"23#10.0.2.0/24#2001:db8::2",
		"23#2001:db8:2::/64#2001:db8::2",
	)
	keep := netip.MustParsePrefix("10.0.1.0/24")
	gone := []netip.Prefix{netip.MustParsePrefix("10.0.2.0/24"), netip.MustParsePrefix("2001:db8:2::/64")}
	w := e.watch(t, testTable, forms(e.routes(t, testTable)))
	w.settle(t)

	const grace = time.Second
	start := time.Now()
	i := e.start(t, Config{AdoptGrace: grace, ReconcileInterval: 20 * time.Millisecond})
	add(t, i, "23#10.0.1.0/24#2001:db8::1")
	flush(t, i)
	if time.Since(start) < grace*3/4 {
		e.wantTable(t, testTable,
			"10.0.1.0/24 proto 254 via 2001:db8::1",
			"10.0.2.0/24 proto 254 via 2001:db8::2",
			"2001:db8:2::/64 proto 254 via 2001:db8::2",
		)
	}
	w.unwatch(gone...)
	eventually(t, "unconfirmed routes removed", func() bool { return len(e.routes(t, testTable)) == 1 })
	if d := time.Since(start); d < grace {
		t.Errorf("unconfirmed routes removed after %v, before the grace time of %v", d, grace)
	}
	e.wantTable(t, testTable, "10.0.1.0/24 proto 254 via 2001:db8::1")
	eventually(t, "unused nexthop object collected", func() bool { return len(e.nexthopIDs(t, 254)) == 1 })
	if s := i.Stats(); s.Unconfirmed != 0 || s.Routes != 1 {
		t.Errorf("stats = %+v", s)
	}
	i.Synced() // late: nothing left to do
	flush(t, i)
	e.wantTable(t, testTable, "10.0.1.0/24 proto 254 via 2001:db8::1")
	if _, _, changes := w.result(t); changes[keep] != 0 {
		t.Errorf("%s re-added with the same nexthop, yet the kernel saw %d change(s)", keep, changes[keep])
	}
	w.requireSteady(t)
}

// TestRestartFlushAtStart: a negative AdoptGrace keeps the old behaviour,
// removing everything of ours in New; the routes are missing until
// re-added. It also shows that the watcher notices such a gap.
func TestRestartFlushAtStart(t *testing.T) {
	e := newEnv(t)
	routes := restartRoutes()
	before := e.installAndExit(t, routes...)
	w := e.watch(t, testTable, forms(before))
	w.settle(t)
	i := e.start(t, Config{AdoptGrace: -1})
	if s := i.Stats(); s.Routes != 0 || s.Unconfirmed != 0 {
		t.Errorf("stats after New = %+v, want nothing installed", s)
	}
	add(t, i, routes...)
	flush(t, i)
	i.Synced() // nothing to do
	flush(t, i)
	samples, problems, _ := w.result(t)
	if len(problems) == 0 {
		t.Errorf("no gap seen in %d samples, though New removed every route", samples)
	}
	t.Logf("%d samples; the gap as the watcher saw it: %q", samples, problems[:min(3, len(problems))])
	after := e.routes(t, testTable)
	if len(after) != len(before) {
		t.Errorf("%d routes after re-adding, want %d", len(after), len(before))
	}
}

// TestAdoptStray: what New finds in forms we do not create is adopted as
// well and replaced (not removed) when the route is re-added; a classic
// route of ours waits for Synced; objects no route uses are collected at
// once; other protocols and unmapped tables are left alone.
func TestAdoptStray(t *testing.T) {
	e := newEnv(t)
	peer, err := e.h.LinkByName(testPeer)
	if err != nil {
		t.Fatal(err)
	}
	hv := netip.MustParseAddr("2001:db8::1")
	e.addNexthopAt(t, nexthopIDBase+5, peer.Attrs().Index, hv, 254)                                  // another device: stray
	e.addNexthopAt(t, nexthopIDBase+6, e.dev.Attrs().Index, hv, 254)                                 // reusable
	e.addNexthopAt(t, nexthopIDBase+7, e.dev.Attrs().Index, hv, 254)                                 // a duplicate: stray
	e.addNexthopAt(t, nexthopIDBase+8, e.dev.Attrs().Index, netip.MustParseAddr("2001:db8::2"), 254) // unused
	e.addNexthopAt(t, nexthopIDBase+9, e.dev.Attrs().Index, hv, unix.RTPROT_STATIC)                  // not ours
	e.addNHRoute(t, "10.6.0.0/16", nexthopIDBase+5)
	e.addNHRoute(t, "10.7.0.0/16", nexthopIDBase+7)
	e.addNHRoute(t, "10.10.0.0/16", nexthopIDBase+6)
	e.addNHRoute(t, "10.11.0.0/16", nexthopIDBase+6)            // not re-added
	e.addRoute(t, "10.9.0.0/16", testTable, 254)                // classic route of ours
	e.addRoute(t, "10.8.0.0/16", testTable, unix.RTPROT_STATIC) // not ours
	e.addRoute(t, "10.7.0.0/16", 300, 254)                      // ours, unmapped table
	w := e.watch(t, testTable, map[netip.Prefix][]string{
		netip.MustParsePrefix("10.6.0.0/16"):  nil,
		netip.MustParsePrefix("10.7.0.0/16"):  nil,
		netip.MustParsePrefix("10.8.0.0/16"):  nil,
		netip.MustParsePrefix("10.10.0.0/16"): nil,
	})
	w.settle(t)

	i := e.start(t, Config{ReconcileInterval: 10 * time.Millisecond, Logger: testLogger(t)})
	if s := i.Stats(); s.Routes != 5 || s.Unconfirmed != 5 {
		t.Errorf("stats after New = %+v, want 5 routes adopted", s)
	}
	// An operator points an unconfirmed route elsewhere: reconciliation
	// puts it back as adopted, and it still waits for Synced.
	e.addNHRoute(t, "10.11.0.0/16", nexthopIDBase+9)
	eventually(t, "drift seen", func() bool { return i.Stats().Repairs > 0 })
	before := i.Stats().Reconciles
	eventually(t, "more reconciliations", func() bool { return i.Stats().Reconciles > before+2 })
	add(t, i, "23#10.6.0.0/16#2001:db8::1", "23#10.7.0.0/16#2001:db8::1", "23#10.10.0.0/16#2001:db8::1")
	flush(t, i)
	nh := e.nhIDs(t, testTable)
	if nh["10.6.0.0/16"] != nexthopIDBase+6 || nh["10.7.0.0/16"] != nexthopIDBase+6 || nh["10.10.0.0/16"] != nexthopIDBase+6 {
		t.Errorf("routes point at %v, want the reusable object %d", nh, nexthopIDBase+6)
	}
	if _, ok := nh["10.9.0.0/16"]; !ok {
		t.Error("unconfirmed classic route removed before Synced")
	}
	if nh["10.11.0.0/16"] != nexthopIDBase+6 {
		t.Errorf("unconfirmed route 10.11.0.0/16 points at %d, want %d (as adopted)", nh["10.11.0.0/16"], nexthopIDBase+6)
	}
	if ids := e.nexthopIDs(t, 254); !slices.Equal(ids, []uint32{nexthopIDBase + 6}) {
		t.Errorf("our nexthop objects = %v, want only %d", ids, nexthopIDBase+6)
	}
	i.Synced()
	flush(t, i)
	w.settle(t)
	w.requireSteady(t)
	e.wantTable(t, testTable,
		"10.6.0.0/16 proto 254 via 2001:db8::1",
		"10.7.0.0/16 proto 254 via 2001:db8::1",
		"10.8.0.0/16 proto 4",
		"10.10.0.0/16 proto 254 via 2001:db8::1",
	)
	if got := len(e.routes(t, 300)); got != 1 {
		t.Errorf("table 300 has %d routes, want 1", got)
	}
	if ids := e.nexthopIDs(t, unix.RTPROT_STATIC); !slices.Equal(ids, []uint32{nexthopIDBase + 9}) {
		t.Errorf("foreign nexthop objects = %v", ids)
	}
}

// TestAdoptLinkFlap: a link flap during adoption takes the routes and
// objects away; they come back as adopted, unconfirmed ones included, and
// those still leave at Synced.
func TestAdoptLinkFlap(t *testing.T) {
	e := newEnv(t)
	e.installAndExit(t,
		"23#10.0.1.0/24#2001:db8::1",
		"23#10.0.2.0/24#2001:db8::1", "23#10.0.2.0/24#2001:db8::2",
		"23#2001:db8:3::/64#2001:db8::2",
	)
	i := e.start(t, Config{})
	add(t, i, "23#10.0.1.0/24#2001:db8::1", "23#10.0.2.0/24#2001:db8::3")
	flush(t, i)
	want := []string{
		"10.0.1.0/24 proto 254 via 2001:db8::1",
		"10.0.2.0/24 proto 254 via 2001:db8::1,2001:db8::2,2001:db8::3",
		"2001:db8:3::/64 proto 254 via 2001:db8::2",
	}
	e.wantTable(t, testTable, want...)

	e.setUp(t, testDev, false) // the kernel flushes routes and nexthop objects
	eventually(t, "kernel flush", func() bool { return len(e.routes(t, testTable)) == 0 })
	e.setUp(t, testDev, true)
	eventually(t, "routes back after the link flap", func() bool { return len(e.routes(t, testTable)) == 3 })
	e.wantTable(t, testTable, want...)
	if s := i.Stats(); s.Unconfirmed != 2 {
		t.Errorf("stats after the link flap = %+v, want 2 unconfirmed", s)
	}

	i.Synced()
	flush(t, i)
	e.wantTable(t, testTable,
		"10.0.1.0/24 proto 254 via 2001:db8::1",
		"10.0.2.0/24 proto 254 via 2001:db8::3",
	)
	if got := len(e.nexthopIDs(t, 254)); got != 2 {
		t.Errorf("%d nexthop objects after Synced, want 2 (::1 and ::3)", got)
	}
}

// TestCleanupUnconfirmed: Cleanup removes adopted routes too, confirmed
// or not.
func TestCleanupUnconfirmed(t *testing.T) {
	e := newEnv(t)
	e.installAndExit(t, "23#10.0.1.0/24#2001:db8::1", "23#10.0.2.0/24#2001:db8::2")
	i := e.newInstaller(t, Config{})
	ctx, cancel := testContext()
	done := make(chan error, 1)
	go func() { done <- i.Run(ctx) }()
	add(t, i, "23#10.0.1.0/24#2001:db8::1")
	flush(t, i)
	if s := i.Stats(); s.Unconfirmed != 1 || s.Routes != 2 {
		t.Errorf("stats = %+v", s)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := i.Cleanup(); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if err := i.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	e.wantTable(t, testTable)
	if ids := e.nexthopIDs(t, 254); len(ids) != 0 {
		t.Errorf("nexthop objects left: %v", ids)
	}
}

func (e *testEnv) addNexthopAt(t testing.TB, id uint32, oif int, dst netip.Addr, proto uint8) {
	t.Helper()
	var b batch
	b.newNexthop(id, oif, dst, proto, false)
	e.execBatch(t, &b)
}

// addNHRoute adds a route of ours in the test table through nexthop
// object id.
func (e *testEnv) addNHRoute(t testing.TB, prefix string, id uint32) {
	t.Helper()
	var b batch
	b.replaceRoute(key{table: testTable, prefix: netip.MustParsePrefix(prefix)}, 254, id)
	e.execBatch(t, &b)
}

func (e *testEnv) execBatch(t testing.TB, b *batch) {
	t.Helper()
	c, err := dial(e.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	errs, err := c.exec(b)
	if err == nil {
		err = errors.Join(errs...)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// nhIDs returns the nexthop object of each route of table, by prefix.
func (e *testEnv) nhIDs(t testing.TB, table int) map[string]uint32 {
	t.Helper()
	rs, err := dumpTable(e.ns, table)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]uint32, len(rs))
	for p, r := range rs {
		out[p.String()] = r.nhid
	}
	return out
}
