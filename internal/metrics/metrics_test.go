package metrics

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/testpeer"
	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/kernel"
	"github.com/metalbond/metalbond/route"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// gathered is the result of one scrape, by metric name.
type gathered map[string]*dto.MetricFamily

func gather(t *testing.T, m *Metrics) gathered {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	g := gathered{}
	for _, mf := range mfs {
		g[mf.GetName()] = mf
	}
	return g
}

// value returns the value of the series of name whose labels include
// labels ("k=v" pairs); it fails the test if there is none.
func (g gathered) value(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mf, ok := g[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range mf.Metric {
		have := map[string]string{}
		for _, lp := range m.Label {
			have[lp.GetName()] = lp.GetValue()
		}
		for _, kv := range labels {
			k, v, _ := strings.Cut(kv, "=")
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

// series returns the label sets of name, sorted, as "k=v,k=v".
func (g gathered) series(name string) []string {
	var out []string
	for _, m := range g[name].GetMetric() {
		var ls []string
		for _, lp := range m.Label {
			ls = append(ls, lp.GetName()+"="+lp.GetValue())
		}
		out = append(out, strings.Join(ls, ","))
	}
	sort.Strings(out)
	return out
}

// bed is a server on loopback with clients; everything stops with the test.
type bed struct {
	t      *testing.T
	ctx    context.Context
	srv    *metalbond.Server
	addr   string
	wg     sync.WaitGroup
	cancel context.CancelFunc
}

func newBed(t *testing.T) *bed {
	return newBedConfig(t, metalbond.ServerConfig{Keepalive: time.Second})
}

func newBedConfig(t *testing.T, cfg metalbond.ServerConfig) *bed {
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := metalbond.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &bed{t: t, ctx: ctx, srv: srv, addr: ln.Addr().String(), cancel: cancel}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		srv.Serve(ctx, ln)
	}()
	t.Cleanup(b.stop)
	return b
}

func (b *bed) stop() {
	b.cancel()
	b.wg.Wait()
}

func (b *bed) client(subs []route.VNI, routes ...string) *metalbond.Client {
	b.t.Helper()
	c, err := metalbond.NewClient(metalbond.ClientConfig{Servers: []string{b.addr}, Keepalive: time.Second, RetryMin: 10 * time.Millisecond})
	if err != nil {
		b.t.Fatal(err)
	}
	for _, v := range subs {
		c.Subscribe(b.ctx, v)
	}
	for _, s := range routes {
		r, err := route.Parse(s)
		if err != nil {
			b.t.Fatal(err)
		}
		c.Announce(b.ctx, r)
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		c.Run(b.ctx)
	}()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		b.t.Fatal(err)
	}
	return c
}

// waitSubscribers waits until the server has n subscribers for vni.
func (b *bed) waitSubscribers(vni route.VNI, n int) {
	b.t.Helper()
	waitFor(b.t, func() error {
		for _, v := range b.srv.VNIs() {
			if v.VNI == vni && v.Subscribers == n {
				return nil
			}
		}
		return fmt.Errorf("server VNIs %+v, want %d subscribers of %d", b.srv.VNIs(), n, vni)
	})
}

func waitFor(t *testing.T, check func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServerMetrics(t *testing.T) {
	b := newBed(t)
	m := New(Options{Server: b.srv, Version: "v1.2.3"})
	g := gather(t, m)
	// Before any peer: every state is reported with 0, inbound only.
	if got := g.series("metalbond_peers"); len(got) != len(sessionStates) || !strings.Contains(got[0], "direction=inbound") {
		t.Errorf("peers series with no peers: %v", got)
	}
	if got := g.value(t, "metalbond_build_info", "role=server", "version=v1.2.3"); got != 1 {
		t.Errorf("build_info = %v", got)
	}

	b.client([]route.VNI{23}, "23#10.0.1.0/24#2001:db8::1", "23#10.0.2.0/24#2001:db8::1", "100#2001:db8:100::/64#2001:db8::2#LB")
	b.client([]route.VNI{23, 100}, "23#10.0.1.0/24#2001:db8::9")
	// Each client is ready once its session is up; wait until the server
	// has handled everything both sent.
	want := []metalbond.VNIInfo{
		{VNI: 23, Routes: 3, Prefixes: 2, Subscribers: 2},
		{VNI: 100, Routes: 1, Prefixes: 1, Subscribers: 1},
	}
	waitFor(t, func() error {
		if v := b.srv.VNIs(); !slices.Equal(v, want) {
			return fmt.Errorf("server VNIs %+v, want %+v", v, want)
		}
		return nil
	})
	m.ObserveFanout(300 * time.Microsecond)

	g = gather(t, m)
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"metalbond_peers", []string{"state=ESTABLISHED", "direction=inbound"}, 2},
		{"metalbond_peers", []string{"state=CONNECTING", "direction=inbound"}, 0},
		{"metalbond_routes", []string{"vni=23"}, 3},
		{"metalbond_routes", []string{"vni=100"}, 1},
		{"metalbond_prefixes", []string{"vni=23"}, 2},
		{"metalbond_vni_subscribers", []string{"vni=23"}, 2},
		{"metalbond_vni_subscribers", []string{"vni=100"}, 1},
		{"metalbond_sessions_accepted_total", nil, 2},
		{"metalbond_updates_received_total", nil, 4},
		{"metalbond_session_updates_received_total", nil, 4},
		{"metalbond_messages_received_total", []string{"type=UPDATE"}, 4},
		{"metalbond_messages_received_total", []string{"type=HELLO"}, 2},
		{"metalbond_messages_received_total", []string{"type=SUBSCRIBE"}, 3},
		{"metalbond_messages_received_total", []string{"type=UNSUBSCRIBE"}, 0},
		{"metalbond_handshake_failures_total", nil, 0},
		{"metalbond_slow_peers_dropped_total", nil, 0},
		{"metalbond_send_queue_bytes", nil, 0},
		{"metalbond_update_fanout_seconds", nil, 1},
	}
	for _, c := range checks {
		if got := g.value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := g.series("metalbond_protocol_errors_total"); len(got) != len(protocolErrorKinds) {
		t.Errorf("protocol error kinds: %v", got)
	}
	if got := g.series("metalbond_refused_total"); len(got) != 7 || g.value(t, "metalbond_refused_total", "reason=nexthop_not_ipv6") != 0 {
		t.Errorf("refusal reasons: %v", got)
	}
	if got := g.series("metalbond_peer_routes"); len(got) != 2 {
		t.Errorf("peer_routes series: %v", got)
	}
	for _, name := range []string{"metalbond_client_routes_installed", "metalbond_kernel_routes"} {
		if _, ok := g[name]; ok {
			t.Errorf("server exposes %s", name)
		}
	}
	checkLabels(t, g)
}

// checkLabels enforces bounded cardinality: no route-level labels.
func checkLabels(t *testing.T, g gathered) {
	t.Helper()
	allowed := map[string]bool{"state": true, "direction": true, "vni": true, "type": true, "kind": true, "reason": true, "peer": true, "version": true, "role": true, "server": true}
	for name, mf := range g {
		if !strings.HasPrefix(name, "metalbond_") {
			continue
		}
		if mf.GetHelp() == "" {
			t.Errorf("%s has no help", name)
		}
		for _, m := range mf.Metric {
			for _, lp := range m.Label {
				if !allowed[lp.GetName()] {
					t.Errorf("%s has label %q", name, lp.GetName())
				}
			}
		}
	}
}

func TestProtocolErrorMetrics(t *testing.T) {
	b := newBed(t)
	m := New(Options{Server: b.srv})
	// A peer that speaks version 2 is refused before the handshake.
	conn, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte{2, 0, 0, 2})
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	conn.Read(make([]byte, 16)) // until the server closes
	conn.Close()
	waitFor(t, func() error {
		g := gather(t, m)
		if v := g.value(t, "metalbond_protocol_errors_total", "kind=bad_version"); v != 1 {
			return fmt.Errorf("bad_version errors = %v", v)
		}
		if v := g.value(t, "metalbond_handshake_failures_total"); v != 1 {
			return fmt.Errorf("handshake failures = %v", v)
		}
		return nil
	})
}

func TestClientMetrics(t *testing.T) {
	b := newBed(t)
	b.client(nil, "23#10.0.1.0/24#2001:db8::1", "23#10.0.2.0/24#2001:db8::2")
	c := b.client([]route.VNI{23}, "23#10.0.3.0/24#2001:db8::3")
	waitFor(t, func() error {
		if n := c.Stats().RoutesInstalled; n != 2 {
			return fmt.Errorf("installed %d", n)
		}
		return nil
	})
	m := New(Options{Client: c, Version: "v1", Installer: func() kernel.Stats {
		return kernel.Stats{Desired: 2, Routes: 2, Nexthops: 2, Failures: 3, Repairs: 1}
	}})
	g := gather(t, m)
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"metalbond_peers", []string{"state=ESTABLISHED", "direction=outbound"}, 1},
		{"metalbond_routes", []string{"vni=23"}, 2},
		{"metalbond_client_routes_installed", nil, 2},
		{"metalbond_client_ready", nil, 1},
		{"metalbond_client_subscriptions", nil, 1},
		{"metalbond_client_announcements", nil, 1},
		{"metalbond_client_install_errors_total", nil, 0},
		{"metalbond_session_updates_received_total", nil, 2},
		{"metalbond_session_updates_sent_total", nil, 1},
		{"metalbond_kernel_routes", nil, 2},
		{"metalbond_kernel_failures_total", nil, 3},
		{"metalbond_kernel_repairs_total", nil, 1},
		{"metalbond_build_info", []string{"role=client"}, 1},
	}
	for _, c := range checks {
		if got := g.value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, name := range []string{"metalbond_sessions_accepted_total", "metalbond_update_fanout_seconds", "metalbond_vni_subscribers"} {
		if _, ok := g[name]; ok {
			t.Errorf("client exposes %s", name)
		}
	}
	if got := g.series("metalbond_peers"); len(got) != len(sessionStates) {
		t.Errorf("client peers series: %v", got)
	}
	checkLabels(t, g)

	// The counters survive the end of the session.
	before := g.value(t, "metalbond_session_updates_received_total")
	b.stop()
	g = gather(t, m)
	if after := g.value(t, "metalbond_session_updates_received_total"); after < before {
		t.Errorf("updates received went from %v to %v after the session ended", before, after)
	}
	if v := g.value(t, "metalbond_client_ready"); v != 0 {
		t.Errorf("client_ready = %v after shutdown", v)
	}
}

func TestFanoutHistogram(t *testing.T) {
	fanout := NewFanout()
	b := newBedConfig(t, metalbond.ServerConfig{Keepalive: time.Second, ObserveFanout: fanout.Observe})
	m := New(Options{Server: b.srv, Fanout: fanout})
	b.client([]route.VNI{23})
	// The client is ready once its session is up, but its SUBSCRIBE may
	// still be on its way: routes that arrive before it reach the
	// subscriber as its initial table, which is not a fan-out.
	b.waitSubscribers(23, 1)
	routes := make([]string, 300)
	for i := range routes {
		routes[i] = fmt.Sprintf("23#10.0.%d.%d/32#2001:db8::1", i/256, i%256)
	}
	b.client(nil, routes...)
	// The server samples one update in 64: 300 fanned out give 4 samples.
	waitFor(t, func() error {
		if n := gather(t, m).value(t, "metalbond_update_fanout_seconds"); n < 1 {
			return fmt.Errorf("%v fan-outs observed", n)
		}
		return nil
	})
	h := gather(t, m)["metalbond_update_fanout_seconds"].Metric[0].Histogram
	if sum := h.GetSampleSum(); sum <= 0 || sum > float64(h.GetSampleCount())*10 {
		t.Errorf("fan-out times sum to %vs over %d samples", sum, h.GetSampleCount())
	}
}

func TestSessionTotals(t *testing.T) {
	peer := func(id uint32, rx, tx, hello uint64) metalbond.PeerInfo {
		return metalbond.PeerInfo{ID: id, UpdatesReceived: rx, UpdatesSent: tx, MessagesReceived: map[string]uint64{"HELLO": hello, "UPDATE": rx}}
	}
	s := newSessionTotals()
	steps := []struct {
		peers  []metalbond.PeerInfo
		rx, tx uint64
		hello  uint64
	}{
		{nil, 0, 0, 0},
		{[]metalbond.PeerInfo{peer(1, 5, 1, 1)}, 5, 1, 1},
		{[]metalbond.PeerInfo{peer(1, 7, 2, 1), peer(2, 3, 0, 1)}, 10, 2, 2},
		// Session 1 ended: its last values stay in the totals.
		{[]metalbond.PeerInfo{peer(2, 4, 0, 1)}, 11, 2, 2},
		// A client between sessions shows the last ID with zero counters.
		{[]metalbond.PeerInfo{{ID: 2}}, 11, 2, 2},
		{[]metalbond.PeerInfo{peer(3, 1, 0, 1), {ID: 0}}, 12, 2, 3},
		{nil, 12, 2, 3},
	}
	for i, st := range steps {
		got := s.update(st.peers)
		if got.updatesReceived != st.rx || got.updatesSent != st.tx || got.messages["HELLO"] != st.hello {
			t.Errorf("step %d: rx %d tx %d hello %d, want %d %d %d", i, got.updatesReceived, got.updatesSent, got.messages["HELLO"], st.rx, st.tx, st.hello)
		}
	}
}

func TestNoSource(t *testing.T) {
	g := gather(t, New(Options{Version: "x"}))
	if g.value(t, "metalbond_build_info", "role=none") != 1 {
		t.Error("build_info")
	}
	if _, ok := g["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}
}

// TestPacingMetrics subscribes a plain v1 peer that reads nothing to a VNI
// larger than what pacing lets it have unread: the server reports it as a
// paced peer with a backlog and waiting time.
func TestPacingMetrics(t *testing.T) {
	b := newBed(t)
	m := New(Options{Server: b.srv})
	var routes []string
	for i := range 4000 { // about 30 bytes each: well over the 48 KiB pacing allows
		routes = append(routes, fmt.Sprintf("23#10.%d.%d.0/24#2001:db8::1", i/256, i%256))
	}
	b.client(nil, routes...)
	waitFor(t, func() error {
		if v := b.srv.VNIs(); len(v) != 1 || v[0].Routes != len(routes) {
			return fmt.Errorf("server VNIs %+v", v)
		}
		return nil
	})

	p := testpeer.DialV1(t, b.addr, 5) // no features: a plain v1 peer
	p.Send(wire.Subscribe{VNI: 23})
	// Read nothing more: the server writes what pacing allows and waits.

	waitFor(t, func() error {
		g := gather(t, m)
		if v := g.value(t, "metalbond_paced_peers"); v != 1 {
			return fmt.Errorf("paced peers = %v", v)
		}
		if got := g.series("metalbond_peer_backlog_bytes"); len(got) != 1 {
			return fmt.Errorf("backlog series %v", got)
		}
		if v := g.value(t, "metalbond_peer_backlog_bytes"); v <= 0 || v > 64<<10 {
			return fmt.Errorf("backlog = %v bytes, want within (0, 64 KiB]", v)
		}
		if v := g.value(t, "metalbond_peer_paced_seconds_total"); v <= 0 {
			return fmt.Errorf("paced seconds = %v", v)
		}
		return nil
	})
	// The extension client that announced is not paced.
	for _, p := range b.srv.Peers() {
		if p.Paced != (p.Features == 0) {
			t.Errorf("peer %s (features %d): paced %v", p.Remote, p.Features, p.Paced)
		}
	}
}
