package metalbond_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/metrics"
	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// One test per probe of issue 19, each against a server with default
// settings (only the limit a probe names is set): the offender is closed
// or its messages refused, the server's heap and queues stay below a
// stated bound, its log lines below a stated count, and another peer is
// served throughout.

// lineCounter is a slog.Handler that counts the lines written.
type lineCounter struct {
	mu    sync.Mutex
	lines map[string]int // by message
}

func newLineCounter() *lineCounter { return &lineCounter{lines: map[string]int{}} }

func (c *lineCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *lineCounter) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *lineCounter) WithGroup(string) slog.Handler            { return c }
func (c *lineCounter) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	c.lines[r.Message]++
	c.mu.Unlock()
	return nil
}

func (c *lineCounter) count(msg string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lines[msg]
}

// maxLines is what the log rate limit lets through for kinds of lines
// during a probe that took elapsed: a burst of 20 and one a second, each.
func maxLines(kinds int, elapsed time.Duration) int {
	return kinds * (20 + int(elapsed/time.Second) + 1)
}

// heapInUse returns the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// checkHeapGrowth fails if the live heap grew by more than max MiB since
// before (read with heapInUse).
func checkHeapGrowth(t *testing.T, before uint64, max uint64) {
	t.Helper()
	if after := heapInUse(); after > before+max<<20 {
		t.Errorf("live heap grew by %d MiB, want at most %d MiB", (after-before)>>20, max)
	}
}

// checkServed checks that the server still serves other peers: a fresh
// subscriber gets a route a fresh announcer sends.
func checkServed(t *testing.T, addr string, vni route.VNI) {
	t.Helper()
	sub := dialRaw(t, addr)
	sub.send(wire.Subscribe{VNI: vni})
	ann := dialRaw(t, addr)
	r := route.Route{VNI: vni, Prefix: netip.MustParsePrefix("198.51.100.0/24"), NextHop: mustRoute(t, "1#198.51.100.0/24#2001:db8::99").NextHop}
	// The subscription may be applied after the announcement: either way
	// the subscriber gets the route, from its table or from the fan-out.
	ann.send(wire.Update{Action: wire.ActionAdd, Route: r})
	if u := sub.expectUpdate(t); u.Route != r {
		t.Fatalf("served peer got %v, want %v", u.Route, r)
	}
	sub.conn.Close()
	ann.conn.Close()
}

// servedVNI is the VNI checkServed uses, far from the probes'.
const servedVNI = 16_000_000

// waitMessages waits until the server has received n messages of type typ.
func waitMessages(t *testing.T, srv *metalbond.Server, typ string, n uint64) {
	t.Helper()
	waitFor(t, func() bool { return srv.Stats().MessagesReceived[typ] >= n })
}

// TestHostileKeepaliveFlood: a peer sends KEEPALIVEs as fast as it can,
// reading nothing or a trickle of 4 KiB/s. It is closed, its send queue
// never holds more than a few frames and the heap grows by less than 16 MiB.
func TestHostileKeepaliveFlood(t *testing.T) {
	for _, tc := range []struct {
		name  string
		trick bool
	}{{"reads nothing", false}, {"reads 4 KiB/s", true}} {
		t.Run(tc.name, func(t *testing.T) {
			srv, addr := startServer(t, metalbond.ServerConfig{})
			before := heapInUse()
			p := dialRaw(t, addr)
			p.conn.(*net.TCPConn).SetReadBuffer(4 << 10)
			stop := make(chan struct{})
			defer close(stop)
			if tc.trick {
				go func() {
					buf := make([]byte, 1<<10)
					tick := time.NewTicker(250 * time.Millisecond)
					defer tick.Stop()
					for {
						select {
						case <-stop:
							return
						case <-tick.C:
						}
						if _, err := p.conn.Read(buf); err != nil {
							return
						}
					}
				}()
			}
			burst := make([]byte, 0, 64<<10)
			frame, _ := wire.AppendFrame(nil, wire.Keepalive{})
			for len(burst) < cap(burst) {
				burst = append(burst, frame...)
			}
			maxQueue := 0
			// At most 256 MiB of keepalives (the probe sent 169 MiB).
			for sent := 0; sent < 256<<20; sent += len(burst) {
				p.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := p.conn.Write(burst); err != nil {
					break
				}
				for _, pi := range srv.Peers() {
					maxQueue = max(maxQueue, pi.QueueBytes)
				}
			}
			waitFor(t, func() bool { return srv.Stats().SlowPeersDropped == 1 && len(srv.Peers()) == 0 })
			// Every KEEPALIVE is answered: at most 64 answers wait (then
			// the peer is closed) and as many may be in the writer's
			// hands, 4 bytes each, beside the handshake's answers.
			if bound := 2*64*4 + 64; maxQueue > bound {
				t.Errorf("send queue of the flooding peer reached %d bytes, want at most %d", maxQueue, bound)
			}
			checkHeapGrowth(t, before, 16)
			checkServed(t, addr, servedVNI)
		})
	}
}

// sendPerVNI sends n UPDATEs with action, of one route in each of VNIs 1
// to n, in writes of about 64 KiB.
func sendPerVNI(t *testing.T, conn net.Conn, action wire.Action, n int) {
	t.Helper()
	var b []byte
	for i := range n {
		r := mustRoute(t, "1#10.0.0.0/8#2001:db8::1")
		r.VNI = route.VNI(i + 1)
		b = wire.AppendUpdate(b, action, r)
		if len(b) > 64<<10 {
			conn.Write(b)
			b = b[:0]
		}
	}
	conn.Write(b)
}

// TestHostileRemovesOfUnknownRoutes: 300,000 REMOVEs of routes that do not
// exist, one per VNI, leave no VNI state and less than 16 MiB of heap.
func TestHostileRemovesOfUnknownRoutes(t *testing.T) {
	srv, addr := startServer(t, metalbond.ServerConfig{})
	before := heapInUse()
	p := dialRaw(t, addr)
	const n = 300_000
	sendPerVNI(t, p.conn, wire.ActionRemove, n)
	waitMessages(t, srv, "UPDATE", n)
	if v := srv.VNIs(); len(v) != 0 {
		t.Errorf("server knows %d VNIs after REMOVEs of nothing, want 0", len(v))
	}
	checkHeapGrowth(t, before, 16)
	checkServed(t, addr, servedVNI)
}

// TestHostileRefusedAdds: with --max-routes-per-peer 50, 200,000 ADDs in
// distinct VNIs keep 50 routes and less than 16 MiB of heap, and log at
// most a burst and a line a second of refusals.
func TestHostileRefusedAdds(t *testing.T) {
	lines := newLineCounter()
	srv, addr := startServer(t, metalbond.ServerConfig{
		Logger: slog.New(lines),
		Limits: metalbond.Limits{MaxRoutesPerPeer: 50},
	})
	before := heapInUse()
	p := dialRaw(t, addr)
	const n = 200_000
	start := time.Now()
	sendPerVNI(t, p.conn, wire.ActionAdd, n)
	waitMessages(t, srv, "UPDATE", n)
	elapsed := time.Since(start)
	if v := srv.VNIs(); len(v) != 50 {
		t.Errorf("server holds routes in %d VNIs, want 50", len(v))
	}
	if got := srv.Stats().Refused["routes_per_peer"]; got != n-50 {
		t.Errorf("refused %d, want %d", got, n-50)
	}
	if got, max := lines.count("refused: limit reached"), maxLines(1, elapsed); got > max {
		t.Errorf("%d refusal lines in %v, want at most %d", got, elapsed, max)
	}
	checkHeapGrowth(t, before, 16)
	checkServed(t, addr, servedVNI)
}

// dialNamed connects with a named HELLO that asks for graceful restart,
// as our client does.
func dialNamed(t *testing.T, addr, name string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r := wire.NewReader(conn)
	send := func(m wire.Message) {
		f, err := wire.AppendFrame(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		conn.Write(f)
	}
	send(wire.Hello{Keepalive: 5, Features: wire.FeatureEndOfSync | wire.FeatureGracefulRestart, GracefulRestart: 60, Name: name})
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if m, err := r.ReadMessage(); err != nil || m.Type() != wire.TypeHello {
		t.Fatalf("got %v, %v; want HELLO", m, err)
	}
	send(wire.Keepalive{})
	if m, err := r.ReadMessage(); err != nil || m.Type() != wire.TypeKeepalive {
		t.Fatalf("got %v, %v; want KEEPALIVE", m, err)
	}
	return conn
}

// TestHostileGracefulRestartSessions: with --max-routes-per-peer 50, five
// short sessions of one client with graceful restart, each announcing 50
// new routes, leave 50 routes held, not 250.
func TestHostileGracefulRestartSessions(t *testing.T) {
	srv, addr := startServer(t, metalbond.ServerConfig{Limits: metalbond.Limits{MaxRoutesPerPeer: 50}})
	const vni = 9
	held := func() int { return len(srv.Routes(vni)) }
	for s := range 5 {
		conn := dialNamed(t, addr, "hv-restarting")
		var b []byte
		for i := range 50 {
			r := mustRoute(t, "9#10.0.0.0/32#2001:db8::1")
			r.Prefix = hostPrefix(t, s*50+i)
			b = wire.AppendUpdate(b, wire.ActionAdd, r)
		}
		conn.Write(b)
		waitMessages(t, srv, "UPDATE", uint64((s+1)*50))
		conn.Close()
		waitFor(t, func() bool { return connected(srv) == 0 })
	}
	if got := held(); got != 50 {
		t.Errorf("server holds %d routes of the client after five sessions, want 50 (its limit)", got)
	}
	if got := srv.Stats().Refused["routes_per_peer"]; got != 200 {
		t.Errorf("refused %d routes, want 200", got)
	}
	checkServed(t, addr, servedVNI)
}

// hostPrefix returns the i-th /32 in 10.0.0.0/8.
func hostPrefix(_ *testing.T, i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
}

// TestHostileSubscribeFlood: 100,000 SUBSCRIBEs are refused past the
// default subscription limit; /metrics stays under 1 MB, and the log under
// a burst and a line a second of each kind.
func TestHostileSubscribeFlood(t *testing.T) {
	lines := newLineCounter()
	srv, addr := startServer(t, metalbond.ServerConfig{Logger: slog.New(lines)})
	before := heapInUse()
	p := dialRaw(t, addr)
	const n = 100_000
	start := time.Now()
	var b []byte
	for i := range n {
		b, _ = wire.AppendFrame(b, wire.Subscribe{VNI: route.VNI(i + 1)})
		if len(b) > 64<<10 {
			p.conn.Write(b)
			b = b[:0]
		}
	}
	p.conn.Write(b)
	waitMessages(t, srv, "SUBSCRIBE", n)
	elapsed := time.Since(start)
	limit := metalbond.DefaultLimits.MaxSubscriptionsPerPeer
	if got := srv.Stats().Refused["subscriptions_per_peer"]; got != uint64(n-limit) {
		t.Errorf("refused %d subscriptions, want %d", got, n-limit)
	}
	logged := lines.count("subscribed") + lines.count("refused: limit reached")
	if max := maxLines(2, elapsed); logged > max {
		t.Errorf("%d log lines in %v, want at most %d", logged, elapsed, max)
	}
	rec := httptest.NewRecorder()
	m := metrics.New(metrics.Options{Server: srv})
	promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if len(body) > 1<<20 {
		t.Errorf("/metrics is %d bytes, want at most 1 MiB", len(body))
	}
	if !strings.Contains(string(body), `vni="other"`) {
		t.Error(`/metrics has no vni="other" series summing up the VNIs beyond the cap`)
	}
	checkHeapGrowth(t, before, 64)
	checkServed(t, addr, servedVNI)
}

// TestHostileSubscribeUnsubscribePairs: 20,000 SUBSCRIBE/UNSUBSCRIBE pairs
// log at most a burst and a line a second of each kind.
func TestHostileSubscribeUnsubscribePairs(t *testing.T) {
	lines := newLineCounter()
	srv, addr := startServer(t, metalbond.ServerConfig{Logger: slog.New(lines)})
	p := dialRaw(t, addr)
	const n = 20_000
	start := time.Now()
	var b []byte
	for range n {
		b, _ = wire.AppendFrame(b, wire.Subscribe{VNI: 5})
		b, _ = wire.AppendFrame(b, wire.Unsubscribe{VNI: 5})
		if len(b) > 64<<10 {
			p.conn.Write(b)
			b = b[:0]
		}
	}
	p.conn.Write(b)
	waitMessages(t, srv, "UNSUBSCRIBE", n)
	elapsed := time.Since(start)
	logged := lines.count("subscribed") + lines.count("unsubscribed")
	if max := maxLines(2, elapsed); logged > max {
		t.Errorf("%d log lines in %v, want at most %d", logged, elapsed, max)
	}
	checkServed(t, addr, servedVNI)
}

// denyAll lets a peer do nothing.
type denyAll struct{}

func (denyAll) Authorize(net.Conn) (metalbond.Permissions, error) { return denyAll{}, nil }
func (denyAll) Identity() string                                  { return "nobody" }
func (denyAll) MayAnnounce(route.VNI) bool                        { return false }
func (denyAll) MaySubscribe(route.VNI) bool                       { return false }

// TestHostilePolicyRefusals: an authorized peer sending 10,000 UPDATEs its
// policy refuses logs at most a burst and a line a second.
func TestHostilePolicyRefusals(t *testing.T) {
	lines := newLineCounter()
	srv, addr := startServer(t, metalbond.ServerConfig{Logger: slog.New(lines), Authorizer: denyAll{}})
	p := dialRaw(t, addr)
	const n = 10_000
	start := time.Now()
	var b []byte
	for i := range n {
		r := mustRoute(t, "3#10.0.0.0/8#2001:db8::1")
		r.Prefix = hostPrefix(t, i)
		b = wire.AppendUpdate(b, wire.ActionAdd, r)
	}
	p.conn.Write(b)
	waitFor(t, func() bool { return srv.Stats().AuthRefusedMessages >= n })
	elapsed := time.Since(start)
	if got, max := lines.count("update refused by policy"), maxLines(1, elapsed); got > max {
		t.Errorf("%d log lines in %v, want at most %d", got, elapsed, max)
	}
}

// TestHostileConfigValues: values that would overflow, or that the wire
// cannot carry, are refused by NewServer and NewClient with an error naming
// them instead of failing every session or panicking later.
func TestHostileConfigValues(t *testing.T) {
	if _, err := metalbond.NewServer(metalbond.ServerConfig{Keepalive: 2_000_000_000 * time.Second}); err == nil || !strings.Contains(err.Error(), "keepalive") {
		t.Errorf("NewServer with a keepalive of 2e9 s: err = %v, want a keepalive error", err)
	}
	if _, err := metalbond.NewServer(metalbond.ServerConfig{Limits: metalbond.Limits{MaxRoutesPerPeer: -2}}); err == nil || !strings.Contains(err.Error(), "max-routes-per-peer") {
		t.Errorf("NewServer with a limit of -2: err = %v, want an error naming the limit", err)
	}
	long := strings.Repeat("h", 300)
	if _, err := metalbond.NewClient(metalbond.ClientConfig{Name: long}); err == nil || !strings.Contains(err.Error(), "name") {
		t.Errorf("NewClient with a 300-byte name: err = %v, want a name error", err)
	}
	if _, err := metalbond.NewClient(metalbond.ClientConfig{Keepalive: 2_000_000_000 * time.Second}); err == nil || !strings.Contains(err.Error(), "keepalive") {
		t.Errorf("NewClient with a keepalive of 2e9 s: err = %v, want a keepalive error", err)
	}
}
