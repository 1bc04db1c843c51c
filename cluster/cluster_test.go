package cluster

import (
	"context"
	"net/netip"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/metalbond/metalbond/route"
)

// testTTL is the lease TTL of the failure tests: a crashed server's routes
// must be gone everywhere within it (plus etcd's expiry check, every
// 500ms, and delivery).
const testTTL = 2 * time.Second

// TestClusterEmbedded runs three route servers sharing one embedded etcd,
// with clients spread across them, through convergence, a server crash
// and restart, and a short and a long etcd outage, checking every client's
// table exactly each time and that no client ever gets a route twice.
func TestClusterEmbedded(t *testing.T) {
	etcd := startEtcd(t, false)
	cfg := func(id string) Config {
		return Config{Endpoints: etcd.endpoints(), ServerID: id, LeaseTTL: testTTL, DialTimeout: time.Second}
	}
	s := []*node{startNode(t, "", cfg("s0")), startNode(t, "", cfg("s1")), startNode(t, "", cfg("s2"))}
	waitReady(t, 10*time.Second, true, s...)

	shared := route.Route{VNI: 100, Prefix: netip.MustParsePrefix("10.99.0.0/16"),
		NextHop: route.NextHop{Address: netip.MustParseAddr("2001:db8::99")}}
	nat := route.Route{VNI: 200, Prefix: netip.MustParsePrefix("192.0.2.0/24"),
		NextHop: route.NextHop{Address: netip.MustParseAddr("2001:db8::5"), Type: route.NextHopNAT, NATPortFrom: 1024, NATPortTo: 2047}}
	v6 := route.Route{VNI: 200, Prefix: netip.MustParsePrefix("2001:db8:100::/48"),
		NextHop: route.NextHop{Address: netip.MustParseAddr("2001:db8::6"), TargetVNI: 7, Type: route.NextHopLoadBalancerTarget}}
	addr := func(i ...int) []string {
		var out []string
		for _, j := range i {
			out = append(out, s[j].addr)
		}
		return out
	}
	c := []*client{
		startClient(t, "c0", addr(0, 1), []route.VNI{100, 200}, append(routes(100, 0, 20), shared)),
		startClient(t, "c1", addr(1, 2), []route.VNI{100}, append(routes(100, 1, 10), routes(200, 1, 10)...)),
		startClient(t, "c2", addr(2, 0), []route.VNI{200}, append(routes(200, 2, 20), shared, nat)),
		startClient(t, "c3", addr(1), []route.VNI{100, 200}, append(routes(100, 3, 15), v6)), // only on s1
		startClient(t, "c4", addr(0), []route.VNI{100, 200}, routes(200, 4, 5)),
		startClient(t, "c5", addr(2), []route.VNI{100, 200}, nil),
	}
	d := waitTables(t, 10*time.Second, c, c)
	t.Logf("initial convergence: %v", d)

	// Changes propagate: withdraw some, announce some.
	c[1].withdraw(t, routes(100, 1, 3)...)
	c[4].announce(t, routes(100, 4, 3)...)
	c[2].withdraw(t, shared) // c0 still has it
	waitTables(t, 5*time.Second, c, c)

	// s1 crashes: c3's routes (only s1 had them) vanish everywhere
	// within the lease TTL; the other clients of s1 lose nothing.
	start := time.Now()
	s[1].crash()
	live := []*client{c[0], c[1], c[2], c[4], c[5]}
	defer func() {
		if t.Failed() {
			dumpKeys(t, etcd.endpoints())
			for _, n := range s {
				t.Logf("%s: %+v %+v", n.m.ID(), n.m.Stats(), n.srv.VNIs())
			}
			for _, ri := range c[0].c.Routes(100) {
				if ri.Prefix.Addr().As4()[1] == 3 {
					t.Logf("c0 has %v from %v; peers %+v", ri.Route, ri.Peers, c[0].c.Peers())
					break
				}
			}
		}
	}()
	d = waitTables(t, testTTL+5*time.Second, live, live)
	t.Logf("convergence after a server crash (lease TTL %v): %v", testTTL, time.Since(start))
	// etcd looks for expired leases every 500ms; the rest is slack for
	// a loaded machine.
	if d > testTTL+2*time.Second {
		t.Errorf("the crashed server's routes took %v to go, lease TTL %v", d, testTTL)
	}
	if n := c[3].rec.Len(); n != 0 {
		t.Errorf("c3 lost its only server but still has %d routes", n)
	}

	// s1 comes back on its address: c3 reconnects and everything is back.
	s[1] = startNode(t, s[1].addr, cfg("s1"))
	waitReady(t, 10*time.Second, true, s...)
	waitTables(t, 10*time.Second, c, c)

	// An etcd outage longer than the lease TTL: members become unready,
	// their leases expire on the client side; once etcd is back they get
	// new ones, write everything again and re-list; changes made during
	// the outage reach everyone.
	grants := s[0].m.Stats().LeaseGrants
	etcd.stop()
	waitReady(t, 5*time.Second, false, s...)
	c[2].withdraw(t, nat)
	c[5].announce(t, routes(100, 5, 7)...)
	c[3].withdraw(t, v6)
	c[4].announce(t, routes(200, 44, 4)...)
	c[0].withdraw(t, routes(100, 0, 5)...)
	// (Stopping the embedded etcd lets open streams such as keepalives
	// run on for a while; the outage counts from its end.)
	time.Sleep(testTTL + time.Second)
	etcd.start()
	d = waitReady(t, 20*time.Second, true, s...)
	t.Logf("ready again %v after etcd came back from an outage longer than the lease TTL", d)
	waitTables(t, 10*time.Second, c, c)
	if st := s[0].m.Stats(); st.LeaseGrants == grants {
		t.Errorf("no new lease after a long outage: %+v", st)
	}

	// Once settled, nothing is pending and every member sees every
	// other server's routes.
	for _, n := range s {
		st := n.m.Stats()
		if st.IDConflicts != 0 || st.BadKeys != 0 {
			t.Errorf("%s: %+v", n.m.ID(), st)
		}
		if len(st.RemoteRoutes) != 2 {
			t.Errorf("%s learns from %d servers, want 2: %v", n.m.ID(), len(st.RemoteRoutes), st.RemoteRoutes)
		}
	}
}

// TestCleanShutdownWithdrawsAtOnce checks that a server that stops cleanly
// revokes its lease: its routes go from the others at once, not after the
// lease TTL.
func TestCleanShutdownWithdrawsAtOnce(t *testing.T) {
	etcd := startEtcd(t, false)
	// A lease that the member renews every third of its TTL cannot expire
	// within half the TTL of the stop: routes gone by then were withdrawn
	// because of the stop, however slow the machine is.
	const ttl = time.Minute
	cfg := func(id string) Config {
		return Config{Endpoints: etcd.endpoints(), ServerID: id, LeaseTTL: ttl}
	}
	a, b := startNode(t, "", cfg("a")), startNode(t, "", cfg("b"))
	waitReady(t, 10*time.Second, true, a, b)
	ca := startClient(t, "ca", []string{a.addr}, nil, routes(300, 1, 50))
	cb := startClient(t, "cb", []string{b.addr}, []route.VNI{300}, nil)
	waitTables(t, 10*time.Second, []*client{cb}, []*client{ca, cb})
	start := time.Now()
	a.stop()
	waitTables(t, ttl/2, []*client{cb}, []*client{cb})
	t.Logf("routes withdrawn %v after a clean stop (lease TTL %v)", time.Since(start), ttl)
}

// TestStartWithoutEtcd checks that a member whose etcd is not there yet
// is unready, that its server serves meanwhile, and that it joins once
// etcd starts.
func TestStartWithoutEtcd(t *testing.T) {
	etcd := startEtcd(t, false)
	etcd.stop()
	cfg := Config{Endpoints: etcd.endpoints(), ServerID: "early", LeaseTTL: testTTL, DialTimeout: time.Second}
	n := startNode(t, "", cfg)
	other := startNode(t, "", Config{Endpoints: etcd.endpoints(), ServerID: "other", LeaseTTL: testTTL, DialTimeout: time.Second})
	c1 := startClient(t, "c1", []string{n.addr}, []route.VNI{1}, routes(1, 1, 5))
	c2 := startClient(t, "c2", []string{n.addr}, []route.VNI{1}, routes(1, 2, 5))
	c3 := startClient(t, "c3", []string{other.addr}, []route.VNI{1}, routes(1, 3, 5))
	// Locally the server works without etcd.
	waitTables(t, 5*time.Second, []*client{c1, c2}, []*client{c1, c2})
	if n.m.Ready() {
		t.Fatal("ready without etcd")
	}
	etcd.start()
	waitReady(t, 15*time.Second, true, n, other)
	waitTables(t, 10*time.Second, []*client{c1, c2, c3}, []*client{c1, c2, c3})
}

// TestIDConflict checks that two live processes with one server ID are
// noticed.
func TestIDConflict(t *testing.T) {
	etcd := startEtcd(t, false)
	cfg := Config{Endpoints: etcd.endpoints(), ServerID: "twin", LeaseTTL: testTTL}
	a := startNode(t, "", cfg)
	waitReady(t, 10*time.Second, true, a)
	b := startNode(t, "", cfg)
	waitReady(t, 10*time.Second, true, b)
	deadline := time.Now().Add(5 * time.Second)
	for a.m.Stats().IDConflicts == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first process did not notice the second one with its ID")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestEtcdBlip checks an etcd outage shorter than the lease TTL: leases
// survive (etcd renews them when it starts), the watches resume where
// they stopped, and changes made meanwhile reach everyone.
func TestEtcdBlip(t *testing.T) {
	etcd := startEtcd(t, false)
	cfg := func(id string) Config {
		return Config{Endpoints: etcd.endpoints(), ServerID: id, LeaseTTL: 10 * time.Second, DialTimeout: time.Second}
	}
	a, b := startNode(t, "", cfg("a")), startNode(t, "", cfg("b"))
	waitReady(t, 10*time.Second, true, a, b)
	ca := startClient(t, "ca", []string{a.addr}, []route.VNI{7}, routes(7, 1, 30))
	cb := startClient(t, "cb", []string{b.addr}, []route.VNI{7}, routes(7, 2, 30))
	all := []*client{ca, cb}
	waitTables(t, 10*time.Second, all, all)

	etcd.stop()
	waitReady(t, 5*time.Second, false, a, b)
	ca.withdraw(t, routes(7, 1, 10)...)
	cb.announce(t, routes(7, 3, 10)...)
	etcd.start()
	d := waitReady(t, 15*time.Second, true, a, b)
	t.Logf("ready again %v after etcd came back", d)
	waitTables(t, 10*time.Second, all, all)
	for _, n := range []*node{a, b} {
		if st := n.m.Stats(); st.LeaseGrants != 1 || st.LeasesLost != 0 {
			t.Errorf("%s: lease did not survive a short outage: %+v", n.m.ID(), st)
		}
	}
}

// TestEtcdAuthentication runs the cluster on an etcd with authentication
// on: members with the right user and password join and share routes; a
// member with a wrong password stays unready and its server keeps serving.
func TestEtcdAuthentication(t *testing.T) {
	etcd := startEtcd(t, false)
	enableEtcdAuth(t, etcd.endpoints(), "metalbond", "s3cret")
	cfg := func(id, password string) Config {
		return Config{Endpoints: etcd.endpoints(), ServerID: id, LeaseTTL: testTTL, DialTimeout: time.Second,
			Username: "metalbond", Password: password}
	}
	a, b := startNode(t, "", cfg("a", "s3cret")), startNode(t, "", cfg("b", "s3cret"))
	bad := startNode(t, "", cfg("bad", "wrong"))
	waitReady(t, 10*time.Second, true, a, b)
	ca := startClient(t, "ca", []string{a.addr}, []route.VNI{9}, routes(9, 1, 10))
	cb := startClient(t, "cb", []string{b.addr}, []route.VNI{9}, routes(9, 2, 10))
	waitTables(t, 10*time.Second, []*client{ca, cb}, []*client{ca, cb})
	if bad.m.Ready() {
		t.Error("a member with a wrong password is ready")
	}
	cx := startClient(t, "cx", []string{bad.addr}, []route.VNI{9}, routes(9, 3, 5))
	waitTables(t, 5*time.Second, []*client{cx}, []*client{cx}) // served locally
	if bad.m.Ready() {
		t.Error("a member with a wrong password became ready")
	}
}

// enableEtcdAuth creates user with password and the root user, grants
// user read and write on everything, and turns authentication on.
func enableEtcdAuth(t *testing.T, endpoints []string, user, password string) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	steps := []func() error{
		func() error { _, err := cli.RoleAdd(ctx, "root"); return err },
		func() error { _, err := cli.UserAdd(ctx, "root", "root-password"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "routes"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "routes", "\x00", "\x00", clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, user, password); return err },
		func() error { _, err := cli.UserGrantRole(ctx, user, "routes"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("etcd auth setup step %d: %v", i, err)
		}
	}
}
