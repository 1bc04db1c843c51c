//go:build linux

package kernel

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/metalbond/metalbond/route"
	"golang.org/x/sys/unix"
)

// The tests in this file run two installers in one network namespace, on
// one tunnel device, as a host with one client per VNI does: A installs
// VNI 23 into table 100, B VNI 24 into table 101.

const tableB = 101

// running is an installer with its Run, stopped by stop.
type running struct {
	*Installer
	cancel context.CancelFunc
	done   chan error
}

// run creates and runs an installer for tables; the test stops it with
// stop (or it is stopped, without Cleanup, when the test ends).
func (e *testEnv) run(t testing.TB, tables map[route.VNI]int, cfg Config) *running {
	t.Helper()
	cfg.Tables = tables
	if cfg.ReconcileInterval == 0 {
		cfg.ReconcileInterval = 5 * time.Millisecond // look at the kernel as often as possible
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Installer: e.newInstaller(t, cfg), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- r.Run(ctx) }()
	t.Cleanup(func() { r.stop(t, false) })
	return r
}

// stop ends Run, removes everything of the installer with cleanup, and
// closes it. Later calls do nothing.
func (r *running) stop(t testing.TB, cleanup bool) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	if err := <-r.done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if cleanup {
		if err := r.Cleanup(); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// reconciled waits until r has completed n more reconciliations.
func (r *running) reconciled(t testing.TB, n uint64) {
	t.Helper()
	before := r.Stats().Reconciles
	eventually(t, "reconciliations", func() bool { return r.Stats().Reconciles >= before+n })
}

// vniRoutes is a table of one VNI: IPv4 and IPv6, single and multipath, all
// through the same two hypervisors for every VNI, so that the installers
// want nexthop objects of the same form.
func vniRoutes(vni int) []string {
	var rs []string
	for n := range 20 {
		p := fmt.Sprintf("%d#10.%d.%d.0/24#", vni, vni, n)
		switch n % 3 {
		case 0:
			rs = append(rs, p+"2001:db8::1")
		case 1:
			rs = append(rs, p+"2001:db8::2")
		default:
			rs = append(rs, p+"2001:db8::1", p+"2001:db8::2")
		}
	}
	return append(rs,
		fmt.Sprintf("%d#2001:db8:%d::/64#2001:db8::1", vni, vni),
		fmt.Sprintf("%d#2001:db8:%d:1::/64#2001:db8::1", vni, vni),
		fmt.Sprintf("%d#2001:db8:%d:1::/64#2001:db8::2", vni, vni),
	)
}

// steady watches table and returns a check that fails the test if, by the
// time it is called, any route of the table went missing, took another
// form, was replaced at all, or points at another nexthop object.
func (e *testEnv) steady(t *testing.T, table int) func() {
	t.Helper()
	before := e.routes(t, table)
	ids := e.nhIDs(t, table)
	w := e.watch(t, table, forms(before))
	w.settle(t)
	return func() {
		t.Helper()
		samples, problems, changes := w.result(t)
		if len(problems) > 0 {
			t.Fatalf("table %d changed (%d samples):\n%s", table, samples, strings.Join(problems, "\n"))
		}
		if len(changes) > 0 {
			t.Errorf("table %d: routes replaced: %v", table, changes)
		}
		if got := e.nhIDs(t, table); !maps.Equal(got, ids) {
			t.Errorf("table %d: nexthop objects were %v, now %v", table, ids, got)
		}
		t.Logf("table %d: %d samples, %d routes, never changed", table, samples, len(before))
	}
}

// TestTwoInstallers: B starts, restarts (once adopting, once with a
// negative AdoptGrace) and stops with Cleanup while A's table is sampled
// every millisecond; it never changes. Then A restarts and stops with
// Cleanup while B's table is watched the same way.
func TestTwoInstallers(t *testing.T) {
	e := newEnv(t)
	tablesA := map[route.VNI]int{23: testTable}
	tablesB := map[route.VNI]int{24: tableB}
	// An object of our protocol outside both blocks that no route uses
	// yet, as a third installer has it an instant before its route: no
	// one may take it for a leftover.
	inFlight := uint32(102 << 16)
	e.addNexthopAt(t, inFlight, e.dev.Attrs().Index, netip.MustParseAddr("2001:db8::1"), 254)

	a := e.run(t, tablesA, Config{})
	add(t, a.Installer, vniRoutes(23)...)
	flush(t, a.Installer)
	a.reconciled(t, 2)
	checkA := e.steady(t, testTable)

	b := e.run(t, tablesB, Config{})
	add(t, b.Installer, vniRoutes(24)...)
	flush(t, b.Installer)
	b.Synced()
	flush(t, b.Installer)
	b.reconciled(t, 3)
	b.stop(t, false) // a restart: B's routes stay

	b = e.run(t, tablesB, Config{})
	if s := b.Stats(); s.Routes != len(e.routes(t, tableB)) || s.Unconfirmed != s.Routes {
		t.Errorf("B after restart: stats = %+v, want its %d routes adopted", s, len(e.routes(t, tableB)))
	}
	add(t, b.Installer, vniRoutes(24)[:10]...)
	b.Synced()
	flush(t, b.Installer)
	b.reconciled(t, 3)
	b.stop(t, false)

	b = e.run(t, tablesB, Config{AdoptGrace: -1})
	add(t, b.Installer, vniRoutes(24)...)
	flush(t, b.Installer)
	b.reconciled(t, 3)
	b.stop(t, true)

	checkA()
	if got := len(e.routes(t, tableB)); got != 0 {
		t.Errorf("B's table after Cleanup: %d routes", got)
	}
	if s := a.Stats(); s.Repairs != 0 || s.Failing != 0 {
		t.Errorf("A: stats = %+v, want no repairs", s)
	}
	if !slices.Contains(e.nexthopIDs(t, 254), inFlight) {
		t.Errorf("the unused object %d outside both blocks was deleted", inFlight)
	}

	// The other way round: A restarts and stops while B's table is watched.
	b = e.run(t, tablesB, Config{})
	add(t, b.Installer, vniRoutes(24)...)
	flush(t, b.Installer)
	b.reconciled(t, 2)
	checkB := e.steady(t, tableB)
	a.stop(t, false)
	a = e.run(t, tablesA, Config{})
	add(t, a.Installer, vniRoutes(23)...)
	a.Synced()
	flush(t, a.Installer)
	a.reconciled(t, 3)
	a.stop(t, true)
	checkB()
	if got := len(e.routes(t, testTable)); got != 0 {
		t.Errorf("A's table after Cleanup: %d routes", got)
	}
	if s := b.Stats(); s.Repairs != 0 || s.Failing != 0 {
		t.Errorf("B: stats = %+v, want no repairs", s)
	}
}

// TestTableInUse: a second installer for a table that one already holds
// is refused in New, naming the table and the holder; once the first has
// closed, the table is free again.
func TestTableInUse(t *testing.T) {
	e := newEnv(t)
	a := e.run(t, map[route.VNI]int{23: testTable, 24: tableB}, Config{})
	_, err := New(Config{Tables: map[route.VNI]int{25: 300, 26: tableB}, Device: testDev, NetNS: e.ns})
	if !errors.Is(err, ErrTableInUse) {
		t.Fatalf("New for a table in use: err = %v, want ErrTableInUse", err)
	}
	for _, want := range []string{"routing table 101", fmt.Sprintf("process %d", os.Getpid())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// Table 300 was claimed before 101 was refused; it must be free again.
	c := e.run(t, map[route.VNI]int{25: 300}, Config{})
	c.stop(t, false)
	a.stop(t, false)
	b := e.run(t, map[route.VNI]int{26: tableB}, Config{})
	b.stop(t, false)
}

// TestIDBlock: the nexthop ids of an installer come from the block of its
// lowest table; without a block (tables above 0xFFFF) from the shared
// range.
func TestIDBlock(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		table int
		in    idRange
	}{
		{testTable, idRange{testTable << 16, testTable<<16 | 0xFFFF}},
		{0x10000, sharedIDs},
	} {
		r := e.run(t, map[route.VNI]int{23: tc.table}, Config{})
		add(t, r.Installer, "23#10.0.1.0/24#2001:db8::1", "23#10.0.1.0/24#2001:db8::2")
		flush(t, r.Installer)
		ids := e.nexthopIDs(t, 254)
		if len(ids) != 3 {
			t.Errorf("table %d: nexthop objects %v, want 3", tc.table, ids)
		}
		for _, id := range ids {
			if !tc.in.has(id) {
				t.Errorf("table %d: nexthop id %#x outside %#x-%#x", tc.table, id, tc.in.first, tc.in.last)
			}
		}
		r.stop(t, true)
	}
	if ids := e.nexthopIDs(t, unix.RTPROT_STATIC); len(ids) != 0 {
		t.Errorf("foreign objects appeared: %v", ids)
	}
}
