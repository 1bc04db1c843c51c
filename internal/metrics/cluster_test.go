package metrics

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/cluster"
	"github.com/metalbond/metalbond/internal/testport"
	"github.com/metalbond/metalbond/route"
)

// TestClusterMetrics runs two route servers joined through a real (embedded)
// etcd: the metrics of the one whose client announces show its routes
// written to etcd, those of the other the routes it learned through it.
func TestClusterMetrics(t *testing.T) {
	endpoint := startEtcd(t)
	a := startMember(t, endpoint, "a")
	b := startMember(t, endpoint, "b")
	ma := New(Options{Server: a.srv, Cluster: a.m.Stats})
	mb := New(Options{Server: b.srv, Cluster: b.m.Stats})
	// b is to learn a's routes through its watch: a member is ready once
	// it has listed the cluster's keys and watches from there. Routes
	// written before b listed would reach it in the listing instead.
	waitFor(t, func() error {
		if !a.m.Ready() || !b.m.Ready() {
			return fmt.Errorf("members not ready: a %v, b %v", a.m.Ready(), b.m.Ready())
		}
		return nil
	})

	c, err := metalbond.NewClient(metalbond.ClientConfig{Servers: []string{a.addr}, Keepalive: time.Second, RetryMin: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.Run(ctx)
	}()
	defer func() {
		cancel()
		wg.Wait()
	}()
	for _, s := range []string{"23#10.0.1.0/24#2001:db8::1", "23#10.0.2.0/24#2001:db8::1"} {
		r, err := route.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		c.Announce(ctx, r)
	}

	waitFor(t, func() error {
		ga, gb := gather(t, ma), gather(t, mb)
		for _, c := range []struct {
			g      gathered
			name   string
			labels []string
			ok     func(float64) bool
			want   string
		}{
			{ga, "metalbond_cluster_ready", nil, func(v float64) bool { return v == 1 }, "1"},
			{gb, "metalbond_cluster_ready", nil, func(v float64) bool { return v == 1 }, "1"},
			{ga, "metalbond_cluster_local_routes", nil, func(v float64) bool { return v == 2 }, "2"},
			{ga, "metalbond_cluster_pending_writes", nil, func(v float64) bool { return v == 0 }, "0"},
			{ga, "metalbond_cluster_txns_total", nil, func(v float64) bool { return v >= 1 }, ">= 1"},
			{ga, "metalbond_cluster_txn_ops_total", nil, func(v float64) bool { return v >= 2 }, ">= 2"},
			{ga, "metalbond_cluster_lease_grants_total", nil, func(v float64) bool { return v >= 1 }, ">= 1"},
			{gb, "metalbond_cluster_remote_routes", []string{"server=a"}, func(v float64) bool { return v == 2 }, "2"},
			{gb, "metalbond_cluster_watch_events_total", nil, func(v float64) bool { return v >= 2 }, ">= 2"},
			{gb, "metalbond_cluster_leases_lost_total", nil, func(v float64) bool { return v == 0 }, "0"},
		} {
			if _, ok := c.g[c.name]; !ok {
				return fmt.Errorf("no metric %s", c.name)
			}
			if v := c.g.value(t, c.name, c.labels...); !c.ok(v) {
				return fmt.Errorf("%s%v = %v, want %s", c.name, c.labels, v, c.want)
			}
		}
		return nil
	})
	checkLabels(t, gather(t, mb))
}

// startEtcd runs a one-member etcd in the test process and returns its
// client URL.
func startEtcd(t *testing.T) string {
	t.Helper()
	clientURL := url.URL{Scheme: "http", Host: testport.Free(t, "127.0.0.1")}
	peerURL := url.URL{Scheme: "http", Host: testport.Free(t, "127.0.0.1")}
	cfg := embed.NewConfig()
	cfg.Name = "metrics"
	cfg.Dir = t.TempDir()
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{clientURL}, []url.URL{clientURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peerURL}, []url.URL{peerURL}
	cfg.InitialCluster = "metrics=" + peerURL.String()
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		t.Fatal("etcd did not become ready")
	}
	return clientURL.String()
}

// member is a route server joined to the cluster.
type member struct {
	addr string
	srv  *metalbond.Server
	m    *cluster.Member
}

func startMember(t *testing.T, endpoint, id string) member {
	t.Helper()
	m, err := cluster.New(cluster.Config{Endpoints: []string{endpoint}, ServerID: id})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := metalbond.NewServer(metalbond.ServerConfig{Sink: m.Sink()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		srv.Serve(ctx, ln)
	}()
	go func() {
		defer wg.Done()
		m.Run(ctx, srv)
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return member{addr: ln.Addr().String(), srv: srv, m: m}
}
