//go:build linux

package kernel

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/metalbond/metalbond/route"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestAdd(t *testing.T) {
	e := newEnv(t)
	i := e.start(t, Config{Logger: testLogger(t)})
	add(t, i, "23#10.0.23.0/24#2001:db8::1")
	flush(t, i)
	e.wantTable(t, testTable, "10.0.23.0/24 proto 254 via 2001:db8::1")
	if s := i.Stats(); s.Routes != 1 || s.Desired != 1 || s.Nexthops != 1 || s.Failing != 0 || s.Pending != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestECMP(t *testing.T) {
	e := newEnv(t)
	i := e.start(t, Config{})
	// Added out of order; the kernel must see them sorted. The LB nexthop
	// shares its address with the first one: one kernel nexthop for both.
	add(t, i,
		"23#10.0.23.0/24#2001:db8::3",
		"23#10.0.23.0/24#2001:db8::1",
		"23#10.0.23.0/24#2001:db8::2",
		"23#10.0.23.0/24#2001:db8::1#LB",
		"23#10.0.24.0/24#2001:db8::2",
		"23#10.0.24.0/24#2001:db8::1",
	)
	flush(t, i)
	e.wantTable(t, testTable,
		"10.0.23.0/24 proto 254 via 2001:db8::1,2001:db8::2,2001:db8::3",
		"10.0.24.0/24 proto 254 via 2001:db8::1,2001:db8::2",
	)
	// Three singles and two groups.
	if s := i.Stats(); s.Routes != 2 || s.Nexthops != 5 {
		t.Errorf("stats = %+v", s)
	}
}

func TestWithdraw(t *testing.T) {
	e := newEnv(t)
	i := e.start(t, Config{})
	add(t, i,
		"23#10.0.23.0/24#2001:db8::1",
		"23#10.0.23.0/24#2001:db8::2",
		"23#10.0.23.0/24#2001:db8::3",
	)
	flush(t, i)

	// Partial: the multipath route is replaced by one with the rest.
	remove(t, i, "23#10.0.23.0/24#2001:db8::2")
	flush(t, i)
	e.wantTable(t, testTable, "10.0.23.0/24 proto 254 via 2001:db8::1,2001:db8::3")
	remove(t, i, "23#10.0.23.0/24#2001:db8::1")
	flush(t, i)
	e.wantTable(t, testTable, "10.0.23.0/24 proto 254 via 2001:db8::3")
	if got := len(e.nexthopIDs(t, 254)); got != 1 {
		t.Errorf("%d nexthop objects left, want 1 (unused ones are deleted)", got)
	}

	// Full: the route and every nexthop object go away.
	remove(t, i, "23#10.0.23.0/24#2001:db8::3")
	flush(t, i)
	e.wantTable(t, testTable)
	if ids := e.nexthopIDs(t, 254); len(ids) != 0 {
		t.Errorf("nexthop objects left: %v", ids)
	}
	if s := i.Stats(); s.Routes != 0 || s.Desired != 0 || s.Nexthops != 0 {
		t.Errorf("stats = %+v", s)
	}
	// Removing what is not there is harmless.
	remove(t, i, "23#10.0.23.0/24#2001:db8::3")
	flush(t, i)
}

func TestIPv6Destinations(t *testing.T) {
	e := newEnv(t)
	i := e.start(t, Config{})
	add(t, i,
		"23#2001:db8:23::/64#2001:db8::1",
		"23#2001:db8:24::/64#2001:db8::2",
		"23#2001:db8:24::/64#2001:db8::1",
		"23#10.0.23.0/24#2001:db8::1",
	)
	flush(t, i)
	e.wantTable(t, testTable,
		"10.0.23.0/24 proto 254 via 2001:db8::1",
		"2001:db8:23::/64 proto 254 via 2001:db8::1",
		"2001:db8:24::/64 proto 254 via 2001:db8::1,2001:db8::2",
	)
	if s := i.Stats(); s.Failing != 0 || s.Failures != 0 {
		t.Errorf("stats = %+v", s)
	}
	remove(t, i, "23#2001:db8:24::/64#2001:db8::1")
	flush(t, i)
	e.wantTable(t, testTable,
		"10.0.23.0/24 proto 254 via 2001:db8::1",
		"2001:db8:23::/64 proto 254 via 2001:db8::1",
		"2001:db8:24::/64 proto 254 via 2001:db8::2",
	)
}

func TestIgnored(t *testing.T) {
	e := newEnv(t)
	i := e.start(t, Config{IPv4Only: true, Tables: map[route.VNI]int{23: testTable, 24: 200}})
	add(t, i,
		"23#2001:db8:23::/64#2001:db8::1", // IPv6 prefix with IPv4Only
		"99#10.0.99.0/24#2001:db8::1",     // VNI without a table
		"23#10.0.23.0/24#2001:db8::1",
		"24#10.0.24.0/24#2001:db8::2",
	)
	flush(t, i)
	e.wantTable(t, testTable, "10.0.23.0/24 proto 254 via 2001:db8::1")
	e.wantTable(t, 200, "10.0.24.0/24 proto 254 via 2001:db8::2")
	if s := i.Stats(); s.Ignored != 2 || s.Routes != 2 {
		t.Errorf("stats = %+v", s)
	}
	// An IPv4 underlay address cannot be an ip6 encapsulation target.
	if err := i.AddRoute(mustRoute(t, "23#10.0.25.0/24#192.0.2.1")); err == nil {
		t.Error("AddRoute with an IPv4 nexthop: no error")
	}
}

func TestSharedTable(t *testing.T) {
	e := newEnv(t)
	i := e.start(t, Config{Tables: map[route.VNI]int{23: testTable, 24: testTable}})
	add(t, i, "23#10.0.23.0/24#2001:db8::1", "24#10.0.23.0/24#2001:db8::2")
	flush(t, i)
	e.wantTable(t, testTable, "10.0.23.0/24 proto 254 via 2001:db8::1,2001:db8::2")
	remove(t, i, "23#10.0.23.0/24#2001:db8::1")
	flush(t, i)
	e.wantTable(t, testTable, "10.0.23.0/24 proto 254 via 2001:db8::2")
}

// addForeign adds a route that is not ours (or is a stale one of ours, with
// proto 254) with the netlink library, the classic way.
func (e *testEnv) addRoute(t testing.TB, prefix string, table int, proto netlink.RouteProtocol) {
	t.Helper()
	_, dst, _ := net.ParseCIDR(prefix)
	err := e.h.RouteAdd(&netlink.Route{LinkIndex: e.dev.Attrs().Index, Dst: dst, Table: table,
		Protocol: proto, Scope: netlink.SCOPE_LINK})
	if err != nil {
		t.Fatalf("add route %s: %v", prefix, err)
	}
}

func (e *testEnv) addNexthop(t testing.TB, id uint32, proto uint8) {
	t.Helper()
	var b batch
	b.newNexthop(id, e.dev.Attrs().Index, netip.MustParseAddr("2001:db8::99"), proto, false)
	c, err := dial(e.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	errs, err := c.exec(&b)
	if err == nil {
		err = errs[0]
	}
	if err != nil {
		t.Fatalf("add nexthop %d: %v", id, err)
	}
}

// TestStaleCleanupAtNew: with a negative AdoptGrace, New removes what it
// finds of ours (TestAdoptStray is the adopting counterpart).
func TestStaleCleanupAtNew(t *testing.T) {
	e := newEnv(t)
	e.addRoute(t, "10.9.0.0/16", testTable, 254)         // stale, ours: removed
	e.addRoute(t, "10.8.0.0/16", testTable, 4)           // static: kept
	e.addRoute(t, "10.7.0.0/16", 300, 254)               // ours, but unmapped table: kept
	e.addNexthop(t, nexthopIDBase, 254)                  // stale object of ours: removed
	e.addNexthop(t, nexthopIDBase+1, unix.RTPROT_STATIC) // someone else's: kept, id avoided
	i := e.start(t, Config{AdoptGrace: -1})
	e.wantTable(t, testTable, "10.8.0.0/16 proto 4")
	if got := len(e.routes(t, 300)); got != 1 {
		t.Errorf("table 300 has %d routes, want 1", got)
	}
	if ids := e.nexthopIDs(t, 254); len(ids) != 0 {
		t.Errorf("stale nexthop objects left: %v", ids)
	}
	add(t, i, "23#10.0.23.0/24#2001:db8::1", "23#10.0.24.0/24#2001:db8::2")
	flush(t, i)
	if s := i.Stats(); s.Routes != 2 || s.Failing != 0 {
		t.Errorf("stats = %+v", s)
	}
	if got := e.nexthopIDs(t, unix.RTPROT_STATIC); len(got) != 1 {
		t.Errorf("foreign nexthop objects = %v, want the one", got)
	}
}

func TestCleanup(t *testing.T) {
	e := newEnv(t)
	e.addRoute(t, "10.8.0.0/16", testTable, 4)
	i := e.newInstaller(t, Config{})
	ctx, cancel := testContext()
	done := make(chan error, 1)
	go func() { done <- i.Run(ctx) }()
	add(t, i, "23#10.0.23.0/24#2001:db8::1", "23#10.0.23.0/24#2001:db8::2", "23#2001:db8:23::/64#2001:db8::1")
	flush(t, i)
	if got := len(e.table(t, testTable)); got != 3 {
		t.Fatalf("%d routes before cleanup, want 3", got)
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
	e.wantTable(t, testTable, "10.8.0.0/16 proto 4")
	if ids := e.nexthopIDs(t, 254); len(ids) != 0 {
		t.Errorf("nexthop objects left: %v", ids)
	}
	if err := i.Cleanup(); !errors.Is(err, ErrClosed) {
		t.Errorf("Cleanup after Close = %v, want ErrClosed", err)
	}
	if err := i.AddRoute(mustRoute(t, "23#10.0.23.0/24#2001:db8::1")); !errors.Is(err, ErrClosed) {
		t.Errorf("AddRoute after Close = %v, want ErrClosed", err)
	}
}

func TestDriftRepair(t *testing.T) {
	e := newEnv(t)
	i := e.start(t, Config{ReconcileInterval: 50 * time.Millisecond})
	add(t, i,
		"23#10.0.23.0/24#2001:db8::1",
		"23#10.0.24.0/24#2001:db8::1",
		"23#10.0.24.0/24#2001:db8::2",
	)
	flush(t, i)
	want := []string{
		"10.0.23.0/24 proto 254 via 2001:db8::1",
		"10.0.24.0/24 proto 254 via 2001:db8::1,2001:db8::2",
	}
	e.wantTable(t, testTable, want...)

	// An operator deletes a route behind our back.
	_, dst, _ := net.ParseCIDR("10.0.23.0/24")
	if err := e.h.RouteDel(&netlink.Route{Dst: dst, Table: testTable}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "route repaired", func() bool { return len(e.routes(t, testTable)) == 2 })
	e.wantTable(t, testTable, want...)
	if s := i.Stats(); s.Repairs < 1 || s.Reconciles < 1 {
		t.Errorf("stats after route repair = %+v", s)
	}

	// ... and then adds one with our protocol that we never installed.
	e.addRoute(t, "10.9.0.0/16", testTable, 254)
	eventually(t, "extra route removed", func() bool { return len(e.routes(t, testTable)) == 2 })

	// ... and deletes a nexthop object: the kernel takes the routes through
	// it along, and the group shrinks.
	before := i.Stats().Repairs
	ids := e.nexthopIDs(t, 254)
	var b batch
	b.deleteNexthop(ids[0])
	c, err := dial(e.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if errs, err := c.exec(&b); err != nil || errs[0] != nil {
		t.Fatalf("delete nexthop: %v %v", err, errs[0])
	}
	eventually(t, "nexthop object repaired", func() bool {
		return i.Stats().Repairs > before && len(e.nexthopIDs(t, 254)) == 3 && len(e.routes(t, testTable)) == 2
	})
	e.wantTable(t, testTable, want...)
}

func TestLinkFlap(t *testing.T) {
	e := newEnv(t)
	i := e.start(t, Config{}) // no periodic reconciliation: link events alone
	add(t, i, "23#10.0.23.0/24#2001:db8::1", "23#2001:db8:23::/64#2001:db8::1", "23#2001:db8:23::/64#2001:db8::2")
	flush(t, i)
	want := []string{
		"10.0.23.0/24 proto 254 via 2001:db8::1",
		"2001:db8:23::/64 proto 254 via 2001:db8::1,2001:db8::2",
	}
	e.wantTable(t, testTable, want...)

	e.setUp(t, testDev, false) // the kernel flushes routes and nexthop objects
	eventually(t, "kernel flush", func() bool { return len(e.routes(t, testTable)) == 0 })
	e.setUp(t, testDev, true)
	eventually(t, "routes repaired after link flap", func() bool { return len(e.routes(t, testTable)) == 2 })
	e.wantTable(t, testTable, want...)
	if s := i.Stats(); s.Repairs < 2 || s.Routes != 2 {
		t.Errorf("stats = %+v", s)
	}
}

// TestRefusedRetried: while the device is down the kernel refuses the
// routes; they are counted, kept and installed once it is up again.
func TestRefusedRetried(t *testing.T) {
	e := newEnv(t)
	e.setUp(t, testDev, false)
	i := e.start(t, Config{})
	add(t, i, "23#10.0.23.0/24#2001:db8::1", "23#10.0.24.0/24#2001:db8::1")
	flush(t, i)
	if s := i.Stats(); s.Failing != 2 || s.Failures == 0 || s.Routes != 0 {
		t.Errorf("stats while down = %+v", s)
	}
	eventually(t, "a retry", func() bool { return i.Stats().Retries > 0 })
	e.setUp(t, testDev, true)
	eventually(t, "routes installed", func() bool { return len(e.routes(t, testTable)) == 2 })
	eventually(t, "no failing routes", func() bool { return i.Stats().Failing == 0 })
	e.wantTable(t, testTable,
		"10.0.23.0/24 proto 254 via 2001:db8::1",
		"10.0.24.0/24 proto 254 via 2001:db8::1",
	)
}

func TestMissingDevice(t *testing.T) {
	e := newEnv(t)
	_, err := New(Config{Tables: map[route.VNI]int{23: testTable}, Device: "overlay-tun", NetNS: e.ns})
	if err == nil {
		t.Fatal("New with a missing device: no error")
	}
	for _, want := range []string{`"overlay-tun"`, "ip link add overlay-tun type ip6tnl mode any external"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

// TestUnprivileged runs New in a child process that has dropped root.
func TestUnprivileged(t *testing.T) {
	if os.Getenv("KERNEL_TEST_UNPRIVILEGED") == "1" {
		_, err := New(Config{Tables: map[route.VNI]int{23: testTable}, Device: "lo"})
		if err == nil {
			t.Fatal("New without CAP_NET_ADMIN: no error")
		}
		t.Log(err)
		if !strings.Contains(err.Error(), "CAP_NET_ADMIN") || !errors.Is(err, unix.EPERM) {
			t.Fatalf("error %q does not explain the missing privilege", err)
		}
		return
	}
	requireRoot(t)
	// The test binary lives in a private build directory: give the
	// child a copy it can reach.
	dir, err := os.MkdirTemp("", "kernel-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/kernel.test", bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(dir+"/kernel.test", "-test.run=^TestUnprivileged$", "-test.v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "KERNEL_TEST_UNPRIVILEGED=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("unprivileged child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "CAP_NET_ADMIN") {
		t.Fatalf("child did not see the privilege error:\n%s", out)
	}
}

func TestRunTwiceAndClose(t *testing.T) {
	e := newEnv(t)
	i := e.start(t, Config{})
	eventually(t, "Run started", func() bool {
		i.mu.Lock()
		defer i.mu.Unlock()
		return i.running
	})
	ctx, cancel := testContext()
	defer cancel()
	if err := i.Run(ctx); err == nil {
		t.Error("second Run: no error")
	}
}

// TestForeignNexthopID: another program takes the id we would use next
// after New looked; the create is refused (EEXIST), retried with another id,
// and the other program's object is left alone.
func TestForeignNexthopID(t *testing.T) {
	e := newEnv(t)
	i := e.start(t, Config{})
	eventually(t, "start-up reconciliation", func() bool { return i.Stats().Reconciles > 0 })
	e.addNexthop(t, nexthopIDBase, unix.RTPROT_STATIC)
	add(t, i, "23#10.0.23.0/24#2001:db8::1")
	flush(t, i)
	if s := i.Stats(); s.Failures == 0 || s.Failing != 1 {
		t.Errorf("stats after the collision = %+v", s)
	}
	eventually(t, "route installed", func() bool { return len(e.routes(t, testTable)) == 1 })
	e.wantTable(t, testTable, "10.0.23.0/24 proto 254 via 2001:db8::1")
	if ids := e.nexthopIDs(t, unix.RTPROT_STATIC); len(ids) != 1 || ids[0] != nexthopIDBase {
		t.Errorf("foreign nexthop objects = %v", ids)
	}
	if ids := e.nexthopIDs(t, 254); len(ids) != 1 || ids[0] == nexthopIDBase {
		t.Errorf("our nexthop objects = %v", ids)
	}
}

// TestDeviceRecreated: the device is deleted and created again (with a new
// index); the routes come back on the new device.
func TestDeviceRecreated(t *testing.T) {
	e := newEnv(t)
	i := e.start(t, Config{Logger: testLogger(t)})
	add(t, i, "23#10.0.23.0/24#2001:db8::1", "23#10.0.23.0/24#2001:db8::2")
	flush(t, i)
	if err := e.h.LinkDel(e.dev); err != nil {
		t.Fatal(err)
	}
	eventually(t, "routes gone with the device", func() bool { return len(e.routes(t, testTable)) == 0 })
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: testDev}, PeerName: testPeer}
	if err := e.h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	e.setUp(t, testPeer, true)
	e.setUp(t, testDev, true)
	var err error
	if e.dev, err = e.h.LinkByName(testDev); err != nil {
		t.Fatal(err)
	}
	eventually(t, "routes back on the new device", func() bool { return len(e.routes(t, testTable)) == 1 })
	e.wantTable(t, testTable, "10.0.23.0/24 proto 254 via 2001:db8::1,2001:db8::2")
}
