//go:build linux

package kernel

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/metalbond/metalbond/route"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

const (
	testDev   = "mbtun0"
	testPeer  = "mbtun1"
	testTable = 100
	// nexthopIDBase is the first id of the block of an installer whose
	// lowest table is testTable (see idBlock).
	nexthopIDBase = testTable << 16
)

// TestMain checks, after all tests, that nothing the package started is
// still running; tests that run an Installer also check on their own.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// requireRoot skips a test that needs CAP_NET_ADMIN, except in CI, where a
// skipped kernel test would hide a broken installer.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	msg := "kernel tests need root (CAP_NET_ADMIN) to create network namespaces and change routes"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true makes this a failure instead of a skip")
	}
	t.Skip(msg)
}

// testEnv is a fresh network namespace with a veth pair standing in for the
// tunnel device (the kernel here has no ip6tnl module; a veth accepts the
// same encapsulated routes). The test's own thread never changes
// namespace: everything goes through handles bound to the namespace.
type testEnv struct {
	ns  netns.NsHandle
	h   *netlink.Handle
	dev netlink.Link
}

func newEnv(t testing.TB) *testEnv {
	t.Helper()
	requireRoot(t)
	ns := newNetNS(t)
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in namespace: %v", err)
	}
	t.Cleanup(h.Close)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: testDev}, PeerName: testPeer}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	e := &testEnv{ns: ns, h: h}
	e.setUp(t, testPeer, true)
	e.setUp(t, testDev, true)
	if e.dev, err = h.LinkByName(testDev); err != nil {
		t.Fatal(err)
	}
	return e
}

// newNetNS creates an unnamed network namespace. The switch happens on a
// locked thread of a goroutine of its own; if switching back failed, that
// goroutine exits still locked and the runtime discards the thread.
func newNetNS(t testing.TB) netns.NsHandle {
	t.Helper()
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			ch <- result{err: err}
			return
		}
		if err := netns.Set(orig); err != nil {
			ns.Close()
			ch <- result{err: err}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{ns: ns}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("create network namespace: %v", r.err)
	}
	return r.ns
}

func (e *testEnv) setUp(t testing.TB, name string, up bool) {
	t.Helper()
	l, err := e.h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if up {
		err = e.h.LinkSetUp(l)
	} else {
		err = e.h.LinkSetDown(l)
	}
	if err != nil {
		t.Fatalf("set %s up=%v: %v", name, up, err)
	}
}

// start creates an Installer in the namespace and runs it until the test
// ends; it then checks that no goroutine was left behind.
func (e *testEnv) start(t testing.TB, cfg Config) *Installer {
	t.Helper()
	before := goleak.IgnoreCurrent()
	i := e.newInstaller(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- i.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := i.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		goleak.VerifyNone(t, before)
	})
	return i
}

func (e *testEnv) newInstaller(t testing.TB, cfg Config) *Installer {
	t.Helper()
	if cfg.Tables == nil {
		cfg.Tables = map[route.VNI]int{23: testTable}
	}
	if cfg.Device == "" {
		cfg.Device = testDev
	}
	if cfg.ReconcileInterval == 0 {
		cfg.ReconcileInterval = -1
	}
	cfg.NetNS = e.ns
	i, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return i
}

// kroute is a route as the kernel reports it, in the form `ip route`
// shows: the encapsulation destinations of its nexthops, in order.
type kroute struct {
	proto int
	dsts  []netip.Addr
	nhid  uint32 // the nexthop object, 0 for a classic route
	oifs  []int  // the device of each nexthop
}

func (r kroute) String() string {
	if len(r.dsts) == 0 {
		return fmt.Sprintf("proto %d", r.proto)
	}
	s := make([]string, len(r.dsts))
	for n, d := range r.dsts {
		s[n] = d.String()
	}
	return fmt.Sprintf("proto %d via %s", r.proto, strings.Join(s, ","))
}

// routes reads table back from the kernel with a plain netlink dump,
// independently of the installer's own parser, and checks that every
// nexthop is on the test device with encap ip6.
func (e *testEnv) routes(t testing.TB, table int) map[netip.Prefix]kroute {
	t.Helper()
	out, err := dumpTable(e.ns, table)
	if err != nil {
		t.Fatal(err)
	}
	for p, r := range out {
		for _, oif := range r.oifs {
			if oif != e.dev.Attrs().Index {
				t.Errorf("%s: nexthop on ifindex %d, want %d (%s)", p, oif, e.dev.Attrs().Index, testDev)
			}
		}
	}
	return out
}

// dumpTable lists the routes of table in ns, except those the kernel adds
// itself. It is safe to call from any goroutine.
func dumpTable(ns netns.NsHandle, table int) (map[netip.Prefix]kroute, error) {
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	out := make(map[netip.Prefix]kroute)
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		req := nl.NewNetlinkRequest(unix.RTM_GETROUTE, unix.NLM_F_DUMP)
		req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}
		req.AddData(&nl.RtMsg{RtMsg: unix.RtMsg{Family: fam}})
		msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWROUTE)
		if err != nil {
			return nil, fmt.Errorf("dump routes: %w", err)
		}
		for _, m := range msgs {
			p, r, tbl, err := decodeRoute(m)
			if err != nil {
				return nil, err
			}
			if tbl == table && r.proto != unix.RTPROT_KERNEL {
				out[p] = r
			}
		}
	}
	return out, nil
}

// decodeRoute decodes an RTM_NEWROUTE or RTM_DELROUTE message with the
// netlink library's helpers.
func decodeRoute(m []byte) (netip.Prefix, kroute, int, error) {
	msg := nl.DeserializeRtMsg(m)
	attrs, err := nl.ParseRouteAttr(m[unix.SizeofRtMsg:])
	if err != nil {
		return netip.Prefix{}, kroute{}, 0, fmt.Errorf("route attributes: %w", err)
	}
	table := int(msg.Table)
	r := kroute{proto: int(msg.Protocol)}
	addr := netip.IPv4Unspecified()
	if msg.Family == unix.AF_INET6 {
		addr = netip.IPv6Unspecified()
	}
	oif := -1
	var single *netip.Addr
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.RTA_DST:
			addr, _ = netip.AddrFromSlice(a.Value)
		case unix.RTA_TABLE:
			table = int(binary.NativeEndian.Uint32(a.Value))
		case unix.RTA_OIF:
			oif = int(binary.NativeEndian.Uint32(a.Value))
		case rtaNHID:
			r.nhid = binary.NativeEndian.Uint32(a.Value)
		case unix.RTA_ENCAP:
			d, err := encapDst(a.Value)
			if err != nil {
				return netip.Prefix{}, kroute{}, 0, err
			}
			single = &d
		case unix.RTA_MULTIPATH:
			for b := a.Value; len(b) >= unix.SizeofRtNexthop; {
				nh := nl.DeserializeRtNexthop(b)
				r.oifs = append(r.oifs, int(nh.Ifindex))
				l := int(nh.RtNexthop.Len)
				sub, _ := nl.ParseRouteAttr(b[unix.SizeofRtNexthop:l])
				for _, sa := range sub {
					if sa.Attr.Type == unix.RTA_ENCAP {
						d, err := encapDst(sa.Value)
						if err != nil {
							return netip.Prefix{}, kroute{}, 0, err
						}
						r.dsts = append(r.dsts, d)
					}
				}
				b = b[min((l+3)&^3, len(b)):]
			}
		}
	}
	if single != nil {
		r.oifs = append(r.oifs, oif)
		r.dsts = append(r.dsts, *single)
	}
	p, _ := addr.Prefix(int(msg.Dst_len))
	return p, r, table, nil
}

func encapDst(b []byte) (netip.Addr, error) {
	attrs, err := nl.ParseRouteAttr(b)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("encap attributes: %w", err)
	}
	for _, a := range attrs {
		if a.Attr.Type == nl.LWTUNNEL_IP6_DST {
			d, _ := netip.AddrFromSlice(a.Value)
			return d, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("encap without ip6 dst")
}

// nexthopIDs lists the nexthop objects carrying protocol proto.
func (e *testEnv) nexthopIDs(t testing.TB, proto uint8) []uint32 {
	t.Helper()
	s, err := nl.GetNetlinkSocketAt(e.ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	req := nl.NewNetlinkRequest(unix.RTM_GETNEXTHOP, unix.NLM_F_DUMP)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}
	req.AddRawData(make([]byte, sizeofNhmsg))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWNEXTHOP)
	if err != nil {
		t.Fatalf("dump nexthops: %v", err)
	}
	var ids []uint32
	for _, m := range msgs {
		if m[2] != proto {
			continue
		}
		attrs, _ := nl.ParseRouteAttr(m[sizeofNhmsg:])
		for _, a := range attrs {
			if a.Attr.Type == unix.NHA_ID {
				ids = append(ids, binary.NativeEndian.Uint32(a.Value))
			}
		}
	}
	slices.Sort(ids)
	return ids
}

// flush waits until the installer has sent every change to the kernel.
func flush(t testing.TB, i *Installer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := i.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

func testContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Minute)
}

// eventually polls cond for up to 10 s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustRoute(t testing.TB, s string) route.Route {
	t.Helper()
	r, err := route.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func add(t testing.TB, i *Installer, routes ...string) {
	t.Helper()
	for _, s := range routes {
		if err := i.AddRoute(mustRoute(t, s)); err != nil {
			t.Fatalf("AddRoute(%s): %v", s, err)
		}
	}
}

func remove(t testing.TB, i *Installer, routes ...string) {
	t.Helper()
	for _, s := range routes {
		if err := i.RemoveRoute(mustRoute(t, s)); err != nil {
			t.Fatalf("RemoveRoute(%s): %v", s, err)
		}
	}
}

// table renders the routes of table as "PREFIX proto P via DST,DST" lines,
// sorted, for comparison with a want list.
func (e *testEnv) table(t testing.TB, table int) []string {
	t.Helper()
	var out []string
	for p, r := range e.routes(t, table) {
		out = append(out, p.String()+" "+r.String())
	}
	slices.Sort(out)
	return out
}

func (e *testEnv) wantTable(t testing.TB, table int, want ...string) {
	t.Helper()
	slices.Sort(want)
	got := e.table(t, table)
	if !slices.Equal(got, want) {
		t.Fatalf("table %d:\n got  %q\n want %q", table, got, want)
	}
}
