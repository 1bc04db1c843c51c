package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/testinstall"
	"github.com/metalbond/metalbond/internal/testport"
	"github.com/metalbond/metalbond/route"
)

// testLogger logs to the test output with -v and METALBOND_TEST_LOG=1,
// and discards otherwise.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("METALBOND_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b[:len(b)-1]))
	return len(b), nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// outside the ephemeral range (see package testport).
func freePort(t testing.TB) int {
	t.Helper()
	return testport.Range(t, "127.0.0.1", 1)
}

// embeddedEtcd is a one-member etcd cluster inside the test process that
// can be stopped and started again on the same ports and data.
type embeddedEtcd struct {
	t                  testing.TB
	dir                string
	clientURL, peerURL url.URL
	fsync              bool
	e                  *embed.Etcd
}

func startEtcd(t testing.TB, fsync bool) *embeddedEtcd {
	t.Helper()
	e := &embeddedEtcd{
		t:         t,
		dir:       t.TempDir(),
		clientURL: url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", freePort(t))},
		peerURL:   url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", freePort(t))},
		fsync:     fsync,
	}
	e.start()
	t.Cleanup(e.stop)
	return e
}

func (e *embeddedEtcd) endpoints() []string { return []string{e.clientURL.String()} }

func (e *embeddedEtcd) start() {
	e.t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = e.dir
	cfg.ListenClientUrls = []url.URL{e.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{e.clientURL}
	cfg.ListenPeerUrls = []url.URL{e.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{e.peerURL}
	cfg.InitialCluster = "test=" + e.peerURL.String()
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = !e.fsync
	// The cheapest password hashing: with -race, etcd's default bcrypt cost
	// makes every login take longer than the members' dial timeout.
	cfg.BcryptCost = 4
	var err error
	// The ports were free when picked; retry briefly if a restart finds
	// one still in TIME_WAIT or taken.
	for try := 0; ; try++ {
		e.e, err = embed.StartEtcd(cfg)
		if err == nil || try == 20 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		e.t.Fatalf("start etcd: %v", err)
	}
	select {
	case <-e.e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		e.e.Close()
		e.t.Fatal("etcd did not become ready")
	}
}

func (e *embeddedEtcd) stop() {
	if e.e != nil {
		start := time.Now()
		e.e.Close()
		e.e = nil
		e.t.Logf("etcd stopped in %v", time.Since(start))
	}
}

// node is one route server of a test cluster with its Member.
type node struct {
	t      testing.TB
	addr   string
	m      *Member
	srv    *metalbond.Server
	cancel context.CancelFunc
	done   chan struct{} // closed when both Serve and Run returned
	mDone  chan struct{} // closed when Run returned
	cancM  context.CancelFunc
}

// startNode runs a route server on addr (a free loopback port if empty)
// joined to the cluster through endpoints.
func startNode(t testing.TB, addr string, cfg Config) *node {
	t.Helper()
	if addr == "" {
		addr = testport.Free(t, "127.0.0.1") // restarts reuse it
	}
	var ln net.Listener
	var err error
	for try := 0; ; try++ { // a restarted node reuses its port
		ln, err = net.Listen("tcp", addr)
		if err == nil || try == 50 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := metalbond.NewServer(metalbond.ServerConfig{Sink: m.Sink()})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, addr: ln.Addr().String(), m: m, srv: srv, done: make(chan struct{}), mDone: make(chan struct{})}
	sctx, scancel := context.WithCancel(context.Background())
	mctx, mcancel := context.WithCancel(context.Background())
	n.cancel, n.cancM = scancel, mcancel
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := srv.Serve(sctx, ln); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		defer close(n.mDone)
		if err := m.Run(mctx, srv); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	go func() {
		wg.Wait()
		close(n.done)
	}()
	t.Cleanup(n.stop)
	return n
}

// stop shuts the node down cleanly: the member revokes its lease.
func (n *node) stop() {
	n.cancM()
	n.cancel()
	n.wait()
}

// crash stops the node as a crash would: the member stops talking to etcd
// without revoking its lease or writing anything more, then the server
// drops its sessions.
func (n *node) crash() {
	n.m.crash.Store(true)
	n.cancM()
	<-n.mDone
	n.cancel()
	n.wait()
}

func (n *node) wait() {
	select {
	case <-n.done:
	case <-time.After(15 * time.Second):
		n.t.Fatal("node did not stop")
	}
}

// installed returns the routes r holds, as a set, and its misuses.
func installed(r *testinstall.Recorder) (map[route.Route]bool, []string) {
	m := map[route.Route]bool{}
	for _, rt := range r.Routes() {
		m[rt] = true
	}
	_, _, problems := r.Counts()
	return m, problems
}

// client is a MetalBond client of the test cluster with what it announces
// and subscribes to.
type client struct {
	name      string
	servers   []string
	subs      []route.VNI
	announced map[route.Route]bool
	c         *metalbond.Client
	rec       *testinstall.Recorder
	stopFn    func()
}

func startClient(t testing.TB, name string, servers []string, subs []route.VNI, announce []route.Route, mod ...func(*metalbond.ClientConfig)) *client {
	t.Helper()
	rec := testinstall.New()
	cfg := metalbond.ClientConfig{
		Servers:   servers,
		Installer: rec,
		RetryMin:  20 * time.Millisecond,
		RetryMax:  200 * time.Millisecond,
		// Plain v1, as deployed clients speak: a client drops the routes
		// of a server whose session ended at once, instead of keeping
		// them for a graceful restart, so tables are exact at every step.
		GracefulRestart: -1,
	}
	for _, f := range mod {
		f(&cfg)
	}
	mc, err := metalbond.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mc.Run(ctx); err != nil {
			t.Errorf("client Run: %v", err)
		}
	}()
	var once sync.Once
	c := &client{name: name, servers: servers, subs: subs, announced: map[route.Route]bool{}, c: mc, rec: rec,
		stopFn: func() { once.Do(func() { cancel(); <-done }) }}
	t.Cleanup(c.stopFn)
	for _, v := range subs {
		if err := mc.Subscribe(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	c.announce(t, announce...)
	return c
}

func (c *client) announce(t testing.TB, rs ...route.Route) {
	t.Helper()
	for _, r := range rs {
		if err := c.c.Announce(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		c.announced[r] = true
	}
}

func (c *client) withdraw(t testing.TB, rs ...route.Route) {
	t.Helper()
	for _, r := range rs {
		if err := c.c.Withdraw(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		delete(c.announced, r)
	}
}

// expected returns what c must have installed: every route announced by a
// client in live (reachable through a live server) in a VNI c subscribes
// to, except for the (VNI, prefix) pairs c announces itself.
func (c *client) expected(live []*client) map[route.Route]bool {
	own := map[[2]string]bool{}
	for r := range c.announced {
		own[[2]string{r.VNI.String(), r.Prefix.String()}] = true
	}
	want := map[route.Route]bool{}
	for _, o := range live {
		for r := range o.announced {
			if slices.Contains(c.subs, r.VNI) && !own[[2]string{r.VNI.String(), r.Prefix.String()}] {
				want[r] = true
			}
		}
	}
	return want
}

// waitTables waits until every client in check has exactly its expected
// table given the clients in live, and returns how long that took.
func waitTables(t testing.TB, timeout time.Duration, check, live []*client) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		var bad []string
		for _, c := range check {
			got, problems := installed(c.rec)
			if len(problems) > 0 {
				t.Fatalf("client %s: %v", c.name, problems)
			}
			want := c.expected(live)
			if !sameSet(got, want) {
				bad = append(bad, fmt.Sprintf("%s: %s", c.name, diff(got, want)))
			}
		}
		if len(bad) == 0 {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("tables not converged after %v:\n%s", timeout, fmt.Sprint(bad))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sameSet(a, b map[route.Route]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func diff(got, want map[route.Route]bool) string {
	var missing, extra []string
	for r := range want {
		if !got[r] {
			missing = append(missing, r.String())
		}
	}
	for r := range got {
		if !want[r] {
			extra = append(extra, r.String())
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	const max = 5
	if len(missing) > max {
		missing = append(missing[:max], fmt.Sprintf("... (%d)", len(missing)))
	}
	if len(extra) > max {
		extra = append(extra[:max], fmt.Sprintf("... (%d)", len(extra)))
	}
	return fmt.Sprintf("missing %v extra %v", missing, extra)
}

// routes returns n distinct routes in vni: prefixes 10.<tag>.x.y/32
// through nexthop 2001:db8::<tag>.
func routes(vni route.VNI, tag byte, n int) []route.Route {
	out := make([]route.Route, n)
	for i := range out {
		out[i] = route.Route{
			VNI:     vni,
			Prefix:  netip.PrefixFrom(netip.AddrFrom4([4]byte{10, tag, byte(i >> 8), byte(i)}), 32),
			NextHop: route.NextHop{Address: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: tag})},
		}
	}
	return out
}

// waitReady waits until every member reports want as its readiness.
func waitReady(t testing.TB, timeout time.Duration, want bool, nodes ...*node) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ok := true
		for _, n := range nodes {
			if n.m.Ready() != want {
				ok = false
			}
		}
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			for _, n := range nodes {
				t.Logf("%s: %+v", n.m.ID(), n.m.Stats())
			}
			t.Fatalf("members not ready=%v after %v", want, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dumpKeys logs the cluster's keys in etcd, for debugging failures.
func dumpKeys(t testing.TB, endpoints []string) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, Logger: zap.NewNop()})
	if err != nil {
		t.Log(err)
		return
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, DefaultPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Log(err)
		return
	}
	ks := newKeyspace(DefaultPrefix)
	for _, kv := range resp.Kvs {
		kind, id, rest := ks.split(string(kv.Key))
		r, _ := parseRoute(rest)
		t.Logf("key kind=%d server=%s route=%v lease=%x mod=%d", kind, id, r, kv.Lease, kv.ModRevision)
	}
}
