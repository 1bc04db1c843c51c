package metalbond_test

// Tests against a peer that reads like the deployed v1 implementation
// (issue 8, docs/pacing.md): one read into a 65,535-byte buffer at a time, a
// fixed processing time per message, and a session reset when a read fills
// the buffer. Our server must get a large table into it, and our client its
// announcements, without ever tripping that.
//
//	go test -run SlowV1 -v
//	go test -run '^$' -bench SlowReader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/testinstall"
	"github.com/metalbond/metalbond/internal/testpeer"
	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// v1ReadBuffer is the deployed reader's buffer: a read that returns this
// many bytes is taken for overload and resets the session.
const v1ReadBuffer = 65535

var errOverrun = errors.New("a read filled the 65,535-byte buffer: the deployed reader resets the session")

// slowV1Peer is a plain v1 peer that reads like the deployed implementation.
// Its socket keeps the default buffer sizes of the system, as the deployed
// one does. One goroutine runs it; the counters are atomics so that the
// test can watch progress.
type slowV1Peer struct {
	conn  net.Conn
	delay time.Duration // processing time per message

	buf     []byte // v1ReadBuffer bytes
	pending []byte // bytes read and not yet parsed (a frame split over reads)
	due     time.Time

	// Keepalives: the agreed interval, when the last one arrived, and the
	// longest gap between two (the deployed peer closes the session when it
	// passes 2.5 intervals).
	keepalive time.Duration
	lastKA    time.Time
	maxKAGap  time.Duration

	reads   int
	maxRead atomic.Int64
	updates atomic.Int64
	routes  map[route.Route]bool

	stopKA    chan struct{}
	stopOnce  sync.Once
	writeMu   sync.Mutex
	kaStarted bool
}

func newSlowV1Peer(conn net.Conn, delay time.Duration) *slowV1Peer {
	return &slowV1Peer{
		conn: conn, delay: delay,
		buf:    make([]byte, v1ReadBuffer),
		routes: make(map[route.Route]bool),
		stopKA: make(chan struct{}),
	}
}

func (p *slowV1Peer) send(m wire.Message) error {
	frame, err := wire.AppendFrame(nil, m)
	if err != nil {
		return err
	}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	_, err = p.conn.Write(frame)
	return err
}

// sendKeepalives sends a KEEPALIVE every interval, as a v1 client does,
// until close.
func (p *slowV1Peer) sendKeepalives() {
	if p.kaStarted {
		return
	}
	p.kaStarted = true
	go func() {
		t := time.NewTicker(p.keepalive)
		defer t.Stop()
		for {
			select {
			case <-p.stopKA:
				return
			case <-t.C:
				if p.send(wire.Keepalive{}) != nil {
					return
				}
			}
		}
	}()
}

func (p *slowV1Peer) close() {
	p.stopOnce.Do(func() { close(p.stopKA) })
	p.conn.Close()
}

// run reads and handles messages until handle reports done or an error,
// the overrun or a keepalive gap longer than 2.5 intervals included.
func (p *slowV1Peer) run(handle func(t wire.Type, body []byte) (done bool, err error)) error {
	for {
		p.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := p.conn.Read(p.buf)
		if err != nil {
			return fmt.Errorf("read after %d updates: %w", p.updates.Load(), err)
		}
		p.reads++
		if int64(n) > p.maxRead.Load() {
			p.maxRead.Store(int64(n))
		}
		if n == len(p.buf) {
			return fmt.Errorf("read %d after %d updates: %w", p.reads, p.updates.Load(), errOverrun)
		}
		p.pending = append(p.pending, p.buf[:n]...)
		msgs := 0
		b := p.pending
		done := false
		for !done && len(b) >= wire.HeaderLen {
			if b[0] != wire.Version {
				return fmt.Errorf("bad version %d", b[0])
			}
			l := int(binary.BigEndian.Uint16(b[1:3]))
			if l > wire.MaxBodyLen {
				return fmt.Errorf("body of %d bytes", l)
			}
			if len(b) < wire.HeaderLen+l {
				break
			}
			t, body := wire.Type(b[3]), b[wire.HeaderLen:wire.HeaderLen+l]
			b = b[wire.HeaderLen+l:]
			msgs++
			if t == wire.TypeKeepalive {
				now := time.Now()
				if !p.lastKA.IsZero() {
					p.maxKAGap = max(p.maxKAGap, now.Sub(p.lastKA))
				}
				p.lastKA = now
			}
			if done, err = handle(t, body); err != nil {
				return err
			}
		}
		p.pending = append(p.pending[:0], b...)
		p.process(msgs)
		if p.keepalive > 0 && !p.lastKA.IsZero() && time.Since(p.lastKA) > p.keepalive*5/2 {
			return fmt.Errorf("no keepalive for %v (interval %v)", time.Since(p.lastKA), p.keepalive)
		}
		if done {
			return nil
		}
	}
}

// process takes delay per message, like the deployed reader that logs and
// often installs a kernel route per message. Sleeps are coarse (about a
// millisecond here), so the last stretch is spent yielding.
func (p *slowV1Peer) process(msgs int) {
	now := time.Now()
	p.due = later(p.due, now).Add(time.Duration(msgs) * p.delay)
	if d := p.due.Sub(now); d > 2*time.Millisecond {
		time.Sleep(d - 1500*time.Microsecond)
	}
	for time.Now().Before(p.due) {
		runtime.Gosched()
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// update records one UPDATE; a duplicate ADD or a REMOVE is an error, as
// the tests expect exactly one ADD per route.
func (p *slowV1Peer) update(body []byte) error {
	u, err := wire.DecodeUpdate(body)
	if err != nil {
		return err
	}
	if u.Action != wire.ActionAdd {
		return fmt.Errorf("unexpected %v %v", u.Action, u.Route)
	}
	if p.routes[u.Route] {
		return fmt.Errorf("duplicate ADD %v", u.Route)
	}
	p.routes[u.Route] = true
	p.updates.Add(1)
	return nil
}

// checkRoutes compares what the peer received with want, exactly.
func (p *slowV1Peer) checkRoutes(want []route.Route) error {
	if len(p.routes) != len(want) {
		return fmt.Errorf("received %d routes, want %d", len(p.routes), len(want))
	}
	for _, r := range want {
		if !p.routes[r] {
			return fmt.Errorf("route %v missing", r)
		}
	}
	return nil
}

// subscribe runs the peer as a v1 client: handshake, SUBSCRIBE to vni, and
// reading until n updates have arrived.
func (p *slowV1Peer) subscribe(vni route.VNI, n int, keepalive time.Duration) error {
	if err := p.send(wire.Hello{Keepalive: uint32(keepalive / time.Second)}); err != nil {
		return err
	}
	established := false
	return p.run(func(t wire.Type, body []byte) (bool, error) {
		switch t {
		case wire.TypeHello:
			m, err := wire.Decode(t, body)
			if err != nil {
				return false, err
			}
			h := m.(wire.Hello)
			if !h.IsServer || h.Features != 0 {
				return false, fmt.Errorf("server HELLO %+v: want plain v1 with isServer", h)
			}
			p.keepalive = time.Duration(h.Keepalive) * time.Second
			return false, p.send(wire.Keepalive{})
		case wire.TypeKeepalive:
			if !established {
				established = true
				p.sendKeepalives()
				return false, p.send(wire.Subscribe{VNI: vni})
			}
		case wire.TypeUpdate:
			if err := p.update(body); err != nil {
				return false, err
			}
			return len(p.routes) == n, nil
		default:
			return false, fmt.Errorf("unexpected %v", t)
		}
		return false, nil
	})
}

// serve runs the peer as a v1 server for one client: it answers the
// client's HELLO with a plain v1 HELLO, answers every KEEPALIVE, and reads
// until n updates have arrived. established is closed when the handshake
// is done.
func (p *slowV1Peer) serve(n int, keepalive time.Duration, established chan<- struct{}) error {
	return p.run(func(t wire.Type, body []byte) (bool, error) {
		switch t {
		case wire.TypeHello:
			m, err := wire.Decode(t, body)
			if err != nil {
				return false, err
			}
			h := m.(wire.Hello)
			if h.IsServer {
				return false, fmt.Errorf("client HELLO %+v with isServer", h)
			}
			p.keepalive = min(time.Duration(h.Keepalive)*time.Second, keepalive)
			return false, p.send(wire.Hello{Keepalive: uint32(p.keepalive / time.Second), IsServer: true})
		case wire.TypeKeepalive:
			if established != nil {
				close(established)
				established = nil
			}
			return false, p.send(wire.Keepalive{})
		case wire.TypeUpdate:
			if err := p.update(body); err != nil {
				return false, err
			}
			return len(p.routes) == n, nil
		case wire.TypeSubscribe, wire.TypeUnsubscribe:
		default:
			return false, fmt.Errorf("unexpected %v", t)
		}
		return false, nil
	})
}

// slowScale returns the table size and per-message delay of the tests:
// 100,000 routes at 20 µs per message, which takes the slow reader about
// two seconds; a fifth of the routes under -short.
func slowScale() (routes int, delay time.Duration) {
	if testing.Short() {
		return 20_000, 20 * time.Microsecond
	}
	return 100_000, 20 * time.Microsecond
}

// loadTable gives srv n routes in vni, as if another server of a cluster
// had them.
func loadTable(t testing.TB, srv *metalbond.Server, vni route.VNI, n int) []route.Route {
	t.Helper()
	rs := manyRoutes(vni, n, "2001:db8::1")
	ext := srv.NewExternalSource("table")
	for _, r := range rs {
		if err := ext.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	return rs
}

// slowSubscriber connects a slow v1 reader to addr and subscribes it to
// vni; the result arrives on the returned channel once it has n routes.
func slowSubscriber(t testing.TB, addr string, vni route.VNI, n int, delay time.Duration) (*slowV1Peer, <-chan error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := newSlowV1Peer(conn, delay)
	t.Cleanup(p.close)
	done := make(chan error, 1)
	go func() { done <- p.subscribe(vni, n, time.Second) }()
	return p, done
}

// timeFast subscribes a client library subscriber to vni and returns how
// long it took to get all of want.
func timeFast(t testing.TB, addr string, vni route.VNI, want []route.Route, mod ...func(*metalbond.ClientConfig)) time.Duration {
	t.Helper()
	c := startClient(t, []string{addr}, mod...)
	c.mustReady(t)
	start := time.Now()
	c.subscribe(t, vni)
	waitCount(t, c.inst, len(want), 60*time.Second)
	d := time.Since(start)
	c.inst.WaitRoutes(t, want)
	c.stop()
	return d
}

// waitCount waits until the recorder holds n routes.
func waitCount(t testing.TB, r *testinstall.Recorder, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		got := r.Len()
		if got == n {
			return
		}
		select {
		case <-r.Changed():
		case <-time.After(time.Millisecond):
		case <-deadline:
			t.Fatalf("%d routes after %v, want %d", got, timeout, n)
		}
	}
}

func wait1(t testing.TB, ch <-chan error, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(timeout):
		t.Fatalf("no result after %v", timeout)
		return nil
	}
}

// TestSlowV1SubscriberConverges: a deployed-style v1 client subscribes to a
// VNI of 100,000 routes and gets all of them without a single read filling
// its buffer, while a fast subscriber of our own on the same server gets
// the table about as fast as without it.
func TestSlowV1SubscriberConverges(t *testing.T) {
	n, delay := slowScale()
	const vni = 100
	srv, addr := startServer(t, metalbond.ServerConfig{})
	want := loadTable(t, srv, vni, n)

	alone := timeFast(t, addr, vni, want)

	start := time.Now()
	slow, done := slowSubscriber(t, addr, vni, n, delay)
	// Time the fast subscriber while the slow one is busy converging.
	waitFor(t, func() bool { return slow.updates.Load() >= int64(n/20) })
	withSlow := timeFast(t, addr, vni, want)
	fastDoneAt := slow.updates.Load()

	if err := wait1(t, done, 2*time.Minute); err != nil {
		t.Fatalf("slow v1 subscriber: %v (largest read %d bytes)", err, slow.maxRead.Load())
	}
	took := time.Since(start)
	if err := slow.checkRoutes(want); err != nil {
		t.Fatal(err)
	}
	t.Logf("slow v1 subscriber (%v per message): %d routes in %v, %d reads, largest %d bytes, longest keepalive gap %v",
		delay, n, took.Round(time.Millisecond), slow.reads, slow.maxRead.Load(), slow.maxKAGap.Round(time.Millisecond))
	t.Logf("fast subscriber: %v alone, %v while the slow one converged (it had %d of %d routes when the fast one finished)",
		alone.Round(time.Millisecond), withSlow.Round(time.Millisecond), fastDoneAt, n)
	// Held back by the slow one, the fast subscriber would finish with it,
	// and take about the slow one's time. It must either be done while the
	// slow one still has a good part to go, or (on a machine so loaded that
	// the fast one is no faster than the slow reader's own pace) take about
	// as long as alone.
	if fastDoneAt > int64(n)*9/10 && withSlow > 2*alone+500*time.Millisecond {
		t.Errorf("the fast subscriber finished (in %v; %v alone) when the slow one had %d of %d routes: it is held back",
			withSlow, alone, fastDoneAt, n)
	}
	if floor := time.Duration(n) * delay; took < floor {
		t.Errorf("slow reader finished in %v, faster than its own processing time %v: the delay is not applied", took, floor)
	}
}

// TestSlowV1SubscriberDoesNotHoldBackLiveUpdates: an announcer sends
// 100,000 routes into a VNI with a fast subscriber of ours and a
// deployed-style v1 subscriber: the fast one gets them about as fast as
// without the slow one (the paced peer's queue takes the burst instead of
// slowing the announcer to its pace), and the slow one gets every route
// without a full read.
func TestSlowV1SubscriberDoesNotHoldBackLiveUpdates(t *testing.T) {
	n, delay := slowScale()
	want := manyRoutes(7, n, "2001:db8::1")
	run := func(withSlow bool) (fast time.Duration, slowHad int64) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		srv := serveOn(t, ln, metalbond.ServerConfig{})
		f := startClient(t, []string{addr})
		f.mustReady(t)
		f.subscribe(t, 7)
		var slow *slowV1Peer
		var done <-chan error
		if withSlow {
			slow, done = slowSubscriber(t, addr, 7, n, delay)
		}
		a := startClient(t, []string{addr})
		a.mustReady(t)
		if withSlow {
			waitFor(t, func() bool { return subscribers(srv, 7) == 2 })
		}
		start := time.Now()
		announced := make(chan struct{})
		go func() {
			defer close(announced)
			a.announce(t, want...)
		}()
		waitCount(t, f.inst, n, time.Minute)
		fast = time.Since(start)
		f.inst.WaitRoutes(t, want)
		<-announced
		if slow != nil {
			slowHad = slow.updates.Load()
			if err := wait1(t, done, 2*time.Minute); err != nil {
				t.Fatalf("slow v1 subscriber: %v (largest read %d bytes)", err, slow.maxRead.Load())
			}
			if err := slow.checkRoutes(want); err != nil {
				t.Fatal(err)
			}
			t.Logf("slow v1 subscriber (%v per message): %d routes in %v, largest read %d bytes",
				delay, n, time.Since(start).Round(time.Millisecond), slow.maxRead.Load())
		}
		return fast, slowHad
	}
	alone, _ := run(false)
	withSlow, slowHad := run(true)
	t.Logf("fast subscriber: %v alone, %v with the slow one (which had %d of %d routes then)",
		alone.Round(time.Millisecond), withSlow.Round(time.Millisecond), slowHad, n)
	// Held back, the fast one would finish with the slow one and take
	// about its time (see TestSlowV1SubscriberConverges).
	if slowHad > int64(n)*9/10 && withSlow > 2*alone+500*time.Millisecond {
		t.Errorf("the fast subscriber took %v with a slow v1 subscriber present, %v without, finishing when the slow one had %d of %d routes: it is held back",
			withSlow, alone, slowHad, n)
	}
}

// subscribers returns how many peers of srv subscribe to vni.
func subscribers(srv *metalbond.Server, vni route.VNI) int {
	n := 0
	for _, p := range srv.Peers() {
		if slices.Contains(p.Subscriptions, vni) {
			n++
		}
	}
	return n
}

// TestSlowV1ServerReceivesAnnouncements: our client announces 20,000
// routes to a deployed-style v1 server, half sent on connect and half as a
// burst afterwards, and the server reads all of them without a read
// filling its buffer and without missing a keepalive.
func TestSlowV1ServerReceivesAnnouncements(t *testing.T) {
	const n, vni = 20_000, 200
	// 100 µs per message makes the transfer last about two seconds, so that
	// the client's keepalives must get through while it is paced.
	const delay = 100 * time.Microsecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	want := manyRoutes(vni, n, "2001:db8::2")
	c := startClient(t, []string{ln.Addr().String()}, func(cfg *metalbond.ClientConfig) { cfg.Keepalive = time.Second })
	c.announce(t, want[:n/2]...)

	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	p := newSlowV1Peer(conn, delay)
	defer p.close()
	established := make(chan struct{})
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- p.serve(n, 5*time.Second, established) }()
	select {
	case <-established:
	case err := <-done:
		t.Fatalf("slow v1 server: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no handshake")
	}
	c.announce(t, want[n/2:]...)
	if err := wait1(t, done, 2*time.Minute); err != nil {
		t.Fatalf("slow v1 server: %v (largest read %d bytes)", err, p.maxRead.Load())
	}
	if err := p.checkRoutes(want); err != nil {
		t.Fatal(err)
	}
	t.Logf("slow v1 server (%v per message): %d announcements in %v, %d reads, largest %d bytes, longest keepalive gap %v",
		delay, n, time.Since(start).Round(time.Millisecond), p.reads, p.maxRead.Load(), p.maxKAGap.Round(time.Millisecond))
	if p.maxKAGap == 0 {
		t.Errorf("no keepalive reached the server while it was reading")
	}
}

// TestSlowV1ReaderWithoutPacingFails checks the test peer itself: written
// to without pacing, as a v1 server writes, it detects the overrun.
func TestSlowV1ReaderWithoutPacingFails(t *testing.T) {
	conn, srv := testpeer.TCPPair(t)
	p := newSlowV1Peer(conn, 20*time.Microsecond)
	defer p.close()
	var frames []byte
	for _, r := range manyRoutes(1, 20_000, "2001:db8::1") {
		frames = wire.AppendUpdate(frames, wire.ActionAdd, r)
	}
	go srv.Write(frames)
	err := p.run(func(t wire.Type, body []byte) (bool, error) { return false, p.update(body) })
	if !errors.Is(err, errOverrun) {
		t.Fatalf("err = %v, want the overrun", err)
	}
}

// BenchmarkSlowReader measures, on a table of 100,000 routes, how long a
// deployed-style v1 subscriber takes to converge, and how long a fast
// subscriber of our own takes alone and while the slow one converges. It
// also times a fast subscriber that speaks plain v1 (and is paced).
//
//	go test -run '^$' -bench SlowReader -benchtime 3x
func BenchmarkSlowReader(b *testing.B) {
	const n, vni = 100_000, 100
	const delay = 20 * time.Microsecond
	srv, addr := startServer(b, metalbond.ServerConfig{})
	want := loadTable(b, srv, vni, n)
	plainV1 := func(cfg *metalbond.ClientConfig) { cfg.GracefulRestart = -1 }
	var alone, aloneV1, slowAlone, withSlow, slowWith time.Duration
	var maxRead int64
	iters := 0
	for b.Loop() {
		iters++
		alone += timeFast(b, addr, vni, want)
		aloneV1 += timeFast(b, addr, vni, want, plainV1)

		start := time.Now()
		slow, done := slowSubscriber(b, addr, vni, n, delay)
		if err := wait1(b, done, 2*time.Minute); err != nil {
			b.Fatalf("slow v1 subscriber: %v", err)
		}
		slowAlone += time.Since(start)
		maxRead = max(maxRead, slow.maxRead.Load())
		slow.close()

		start = time.Now()
		slow, done = slowSubscriber(b, addr, vni, n, delay)
		for slow.updates.Load() < n/20 {
			time.Sleep(time.Millisecond)
		}
		withSlow += timeFast(b, addr, vni, want)
		if err := wait1(b, done, 2*time.Minute); err != nil {
			b.Fatalf("slow v1 subscriber: %v", err)
		}
		slowWith += time.Since(start)
		maxRead = max(maxRead, slow.maxRead.Load())
		slow.close()
	}
	per := func(d time.Duration) float64 { return d.Seconds() * 1000 / float64(iters) }
	b.ReportMetric(per(slowAlone), "slow-ms")
	b.ReportMetric(per(slowWith), "slow+fast-ms")
	b.ReportMetric(per(alone), "fast-ms")
	b.ReportMetric(per(withSlow), "fast+slow-ms")
	b.ReportMetric(per(aloneV1), "fastv1-ms")
	b.ReportMetric(float64(maxRead), "max-read-B")
	b.ReportMetric(0, "ns/op")
}
