package cluster

import (
	"context"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/route"
)

// benchRoutes is the number of routes per benchmark operation.
const benchRoutes = 50000

// manyRoutes returns n distinct IPv4 /32 routes in vni (n up to 2^24).
func manyRoutes(vni route.VNI, n int) []route.Route {
	out := make([]route.Route, n)
	nh := route.NextHop{Address: netip.MustParseAddr("2001:db8::1")}
	for i := range out {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		out[i] = route.Route{VNI: vni, Prefix: netip.PrefixFrom(a, 32), NextHop: nh}
	}
	return out
}

// waitCount waits until c has n routes installed.
func waitCount(b *testing.B, c *client, n int, timeout time.Duration) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := c.rec.Len()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s has %d routes, want %d", c.name, got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// dbInUse returns etcd's logical database size.
func dbInUse(b *testing.B, endpoints []string) int64 {
	b.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Compact(ctx, mustRev(b, cli)); err != nil {
		b.Fatal(err)
	}
	st, err := cli.Status(ctx, endpoints[0])
	if err != nil {
		b.Fatal(err)
	}
	return st.DbSizeInUse
}

func mustRev(b *testing.B, cli *clientv3.Client) int64 {
	resp, err := cli.Get(context.Background(), "x")
	if err != nil {
		b.Fatal(err)
	}
	return resp.Header.Revision
}

// extensions makes a client negotiate the protocol extensions, so that
// servers send to it at full speed rather than paced for a plain v1 peer
// (internal/session/pacing.go), which would measure the pacing instead of
// the cluster.
func extensions(name string) func(*metalbond.ClientConfig) {
	return func(cfg *metalbond.ClientConfig) {
		cfg.GracefulRestart = 0
		cfg.Name = name
	}
}

// BenchmarkThroughput measures routes per second through the cluster: a
// client of server a announces benchRoutes routes, and the operation ends
// when a subscriber on server b has them all. The path is client → a →
// etcd transactions (fsync on) → b's watch → b → subscriber. It also
// reports etcd's database bytes per route (after compaction).
func BenchmarkThroughput(b *testing.B) {
	etcd := startEtcd(b, true)
	cfg := func(id string) Config { return Config{Endpoints: etcd.endpoints(), ServerID: id} }
	na, nb := startNode(b, "", cfg("a")), startNode(b, "", cfg("b"))
	waitReady(b, 10*time.Second, true, na, nb)
	ca := startClient(b, "ca", []string{na.addr}, nil, nil, extensions("ca"))
	var vnis []route.VNI
	for i := range b.N {
		vnis = append(vnis, route.VNI(1000+i))
	}
	cb := startClient(b, "cb", []string{nb.addr}, vnis, nil, extensions("cb"))
	db0 := dbInUse(b, etcd.endpoints())
	b.ResetTimer()
	for i := range b.N {
		rs := manyRoutes(route.VNI(1000+i), benchRoutes)
		ca.announce(b, rs...)
		waitCount(b, cb, (i+1)*benchRoutes, 2*time.Minute)
	}
	b.StopTimer()
	n := float64(b.N * benchRoutes)
	b.ReportMetric(n/b.Elapsed().Seconds(), "routes/s")
	b.ReportMetric(0, "ns/op")
	db1 := dbInUse(b, etcd.endpoints())
	b.ReportMetric(float64(db1-db0)/n, "etcd-B/route")
	st := na.m.Stats()
	b.ReportMetric(float64(st.TxnOps)/float64(st.Txns), "ops/txn")
}

// BenchmarkFailover measures how long the routes of a crashed server take
// to leave a subscriber on another server: a client of server x announces
// 10000 routes, x crashes (no revoke), and the operation ends when the
// subscriber has none left. The lease TTL is 2s.
func BenchmarkFailover(b *testing.B) {
	const n = 10000
	etcd := startEtcd(b, true)
	ny := startNode(b, "", Config{Endpoints: etcd.endpoints(), ServerID: "y", LeaseTTL: testTTL})
	cy := startClient(b, "cy", []string{ny.addr}, []route.VNI{5}, nil, extensions("cy"))
	rs := manyRoutes(5, n)
	var total time.Duration
	for range b.N {
		b.StopTimer()
		nx := startNode(b, "", Config{Endpoints: etcd.endpoints(), LeaseTTL: testTTL})
		cx := startClient(b, "cx", []string{nx.addr}, nil, rs, extensions("cx"))
		waitCount(b, cy, n, time.Minute)
		b.StartTimer()
		start := time.Now()
		nx.crash()
		waitCount(b, cy, 0, time.Minute)
		total += time.Since(start)
		b.StopTimer()
		cx.stopFn()
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/failover")
	b.ReportMetric(0, "ns/op")
}

// heap returns the live heap after a collection.
func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkMemory reports the member's own memory per route: for a local
// route (the want set, once written) and for a remote route (the key map
// of its server's ExternalSource; the server's own route table, which
// stores every route whatever its source, is measured separately and
// subtracted).
func BenchmarkMemory(b *testing.B) {
	const n = 200000
	rs := manyRoutes(9, n)
	for range b.N {
		// The server's table alone, fed directly.
		srv, _ := metalbond.NewServer(metalbond.ServerConfig{})
		h0 := heap()
		src := srv.NewExternalSource("x")
		for _, r := range rs {
			if err := src.Add(r); err != nil {
				b.Fatal(err)
			}
		}
		table := float64(heap()-h0) / n

		// The same through the watcher: the table and the key map.
		m, err := New(Config{Endpoints: []string{"unused"}})
		if err != nil {
			b.Fatal(err)
		}
		srv2, _ := metalbond.NewServer(metalbond.ServerConfig{})
		w := newWatcher(m, nil, srv2)
		keys := make([]*mvccpb.KeyValue, n)
		for i, r := range rs {
			keys[i] = &mvccpb.KeyValue{Key: []byte(m.keys.routeDir("other") + string(appendRoute(nil, r)))}
		}
		h0 = heap()
		for _, kv := range keys {
			w.apply(kv, false)
		}
		remote := float64(heap()-h0)/n - table

		// Local routes: the want set, once written (dirty empty).
		h0 = heap()
		sink := m.Sink()
		for _, r := range rs {
			sink.LocalRoute(r, true)
		}
		m.dirty = map[string]struct{}{}
		local := float64(heap()-h0) / n

		runtime.KeepAlive(src)
		runtime.KeepAlive(w)
		runtime.KeepAlive(keys)
		b.ReportMetric(local, "B/local-route")
		b.ReportMetric(remote, "B/remote-route")
		b.ReportMetric(table, "B/table-route")
	}
}

// BenchmarkEtcdMemory reports the memory an (embedded) etcd member holds
// per route key: 200000 route keys are written under one lease, in
// transactions of 128, and the heap of the process (which is mostly etcd's
// key index, lease bookkeeping and write buffers) is compared before and
// after.
func BenchmarkEtcdMemory(b *testing.B) {
	const n = 200000
	rs := manyRoutes(9, n)
	for range b.N {
		b.StopTimer()
		etcd := startEtcd(b, false)
		cli, err := clientv3.New(clientv3.Config{Endpoints: etcd.endpoints(), Logger: zap.NewNop()})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		lease, err := cli.Grant(ctx, 60)
		if err != nil {
			b.Fatal(err)
		}
		dir := newKeyspace(DefaultPrefix).routeDir("hostname-0123abcd")
		h0 := heap()
		b.StartTimer()
		for i := 0; i < n; i += DefaultMaxTxnOps {
			var ops []clientv3.Op
			for _, r := range rs[i:min(n, i+DefaultMaxTxnOps)] {
				ops = append(ops, clientv3.OpPut(dir+string(appendRoute(nil, r)), "", clientv3.WithLease(lease.ID)))
			}
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(heap()-h0)/n, "heap-B/route")
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "puts/s")
		cli.Close()
		etcd.stop()
	}
	b.ReportMetric(0, "ns/op")
}
