package session

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/metalbond/metalbond/internal/testpeer"
	"github.com/metalbond/metalbond/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTransition(t *testing.T) {
	tests := []struct {
		role    Role
		st      State
		typ     wire.Type
		next    State
		acts    []action
		wantErr bool
	}{
		{RoleClient, StateHelloSent, wire.TypeHello, StateHelloReceived, []action{actSendKeepalive}, false},
		{RoleClient, StateHelloReceived, wire.TypeKeepalive, StateEstablished, []action{actEstablished}, false},
		{RoleClient, StateEstablished, wire.TypeKeepalive, StateEstablished, nil, false},
		{RoleClient, StateEstablished, wire.TypeUpdate, StateEstablished, []action{actDeliver}, false},
		{RoleClient, StateHelloSent, wire.TypeKeepalive, StateHelloSent, nil, true},
		{RoleClient, StateHelloSent, wire.TypeUpdate, StateHelloSent, nil, true},
		{RoleClient, StateEstablished, wire.TypeHello, StateEstablished, nil, true},
		{RoleServer, StateConnecting, wire.TypeHello, StateHelloReceived, []action{actSendHello}, false},
		{RoleServer, StateHelloReceived, wire.TypeKeepalive, StateEstablished, []action{actSendKeepalive, actEstablished}, false},
		{RoleServer, StateEstablished, wire.TypeKeepalive, StateEstablished, []action{actSendKeepalive}, false},
		{RoleServer, StateEstablished, wire.TypeSubscribe, StateEstablished, []action{actDeliver}, false},
		{RoleServer, StateEstablished, wire.TypeUnsubscribe, StateEstablished, []action{actDeliver}, false},
		{RoleServer, StateEstablished, wire.TypeUpdate, StateEstablished, []action{actDeliver}, false},
		{RoleServer, StateConnecting, wire.TypeKeepalive, StateConnecting, nil, true},
		{RoleServer, StateConnecting, wire.TypeSubscribe, StateConnecting, nil, true},
		{RoleServer, StateHelloReceived, wire.TypeUpdate, StateHelloReceived, nil, true},
		{RoleServer, StateHelloReceived, wire.TypeHello, StateHelloReceived, nil, true},
		{RoleServer, StateEstablished, wire.TypeHello, StateEstablished, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.role.String()+"/"+tc.st.String()+"/"+tc.typ.String(), func(t *testing.T) {
			next, acts, err := transition(tc.role, tc.st, tc.typ)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrProtocol) {
					t.Fatalf("err = %v, want ErrProtocol", err)
				}
				return
			}
			if next != tc.next || len(acts) != len(tc.acts) {
				t.Fatalf("got %s %v, want %s %v", next, acts, tc.next, tc.acts)
			}
			for i := range acts {
				if acts[i] != tc.acts[i] {
					t.Fatalf("got %v, want %v", acts, tc.acts)
				}
			}
		})
	}
}

// recorder is a Handler that records what it is given.
type recorder struct {
	established chan struct{}
	updates     chan wire.Update
}

func newRecorder() *recorder {
	return &recorder{established: make(chan struct{}, 1), updates: make(chan wire.Update, 100)}
}

func (r *recorder) Established(*Session)                { r.established <- struct{}{} }
func (r *recorder) Handle(*Session, wire.Message) error { return nil }
func (r *recorder) HandleUpdate(_ *Session, u *wire.Update) error {
	select {
	case r.updates <- *u:
	default: // tests that flood a session do not read the updates
	}
	return nil
}

// pair runs a client and a server session over loopback TCP.
func pair(t *testing.T, ccfg, scfg Config) (c, s *Session, ch, sh *recorder, cerr, serr chan error) {
	t.Helper()
	cc, sc := testpeer.TCPPair(t)
	ccfg.Role, scfg.Role = RoleClient, RoleServer
	ch, sh = newRecorder(), newRecorder()
	c, s = New(cc, ccfg, ch), New(sc, scfg, sh)
	cerr, serr = make(chan error, 1), make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cdone, sdone := make(chan struct{}), make(chan struct{})
	go func() { defer close(cdone); cerr <- c.Run(ctx) }()
	go func() { defer close(sdone); serr <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-cdone
		<-sdone
	})
	return c, s, ch, sh, cerr, serr
}

func wait[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("timed out")
		panic("unreachable")
	}
}

func TestHandshakeAndKeepalive(t *testing.T) {
	c, s, ch, sh, cerr, serr := pair(t, Config{Keepalive: 1 * time.Second}, Config{Keepalive: 5 * time.Second})
	wait(t, ch.established)
	wait(t, sh.established)
	if got := c.Info().Keepalive; got != time.Second {
		t.Errorf("client agreed keepalive %v, want 1s (the smaller)", got)
	}
	if got := s.Info().Keepalive; got != time.Second {
		t.Errorf("server agreed keepalive %v, want 1s", got)
	}
	// Over three intervals keepalives flow both ways and nothing expires.
	select {
	case err := <-cerr:
		t.Fatalf("client ended: %v", err)
	case err := <-serr:
		t.Fatalf("server ended: %v", err)
	case <-time.After(3 * time.Second):
	}
	if n := s.Info().Messages[wire.TypeKeepalive]; n < 3 {
		t.Errorf("server received %d keepalives in 3s at 1s interval, want ≥ 3", n)
	}
	if n := c.Info().Messages[wire.TypeKeepalive]; n < 3 {
		t.Errorf("client received %d keepalives, want ≥ 3", n)
	}
}

func TestUpdatesArriveInOrder(t *testing.T) {
	c, _, _, sh, _, _ := pair(t, Config{}, Config{})
	wait(t, sh.established)
	var frames []byte
	for i := range 50 {
		frames = wire.AppendUpdate(frames, wire.Action(i%2), testRoute(i))
	}
	c.Send(frames, 50)
	for i := range 50 {
		u := wait(t, sh.updates)
		if u.Route != testRoute(i) || u.Action != wire.Action(i%2) {
			t.Fatalf("update %d: got %v %v", i, u.Action, u.Route)
		}
	}
}

func TestHoldTimerExpires(t *testing.T) {
	// A raw peer completes the handshake and then falls silent.
	raw, sc := testpeer.TCPPair(t)
	s := New(sc, Config{Role: RoleServer, Keepalive: time.Second}, newRecorder())
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	hello, _ := wire.AppendFrame(nil, wire.Hello{Keepalive: 1})
	ka, _ := wire.AppendFrame(nil, wire.Keepalive{})
	raw.Write(append(hello, ka...))
	start := time.Now()
	err := wait(t, done)
	if !errors.Is(err, ErrHoldExpired) {
		t.Fatalf("err = %v, want ErrHoldExpired", err)
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Fatalf("hold timer fired after %v, want 2.5 intervals", d)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	_, sc := testpeer.TCPPair(t)
	s := New(sc, Config{Role: RoleServer, HandshakeTimeout: 100 * time.Millisecond}, newRecorder())
	if err := s.Run(context.Background()); !errors.Is(err, ErrHandshakeTimeout) {
		t.Fatalf("err = %v, want ErrHandshakeTimeout", err)
	}
}

func TestStuckReaderIsDisconnected(t *testing.T) {
	raw, sc := testpeer.TCPPair(t)
	h := newRecorder()
	s := New(sc, Config{Role: RoleServer, WriteTimeout: 300 * time.Millisecond, MaxQueue: 1 << 30}, h)
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	hello, _ := wire.AppendFrame(nil, wire.Hello{Keepalive: 5})
	ka, _ := wire.AppendFrame(nil, wire.Keepalive{})
	raw.Write(append(hello, ka...))
	wait(t, h.established)
	// The raw peer never reads: queue 32 MiB, far more than the socket
	// buffers take.
	frames := make([]byte, 0, 1<<20)
	for len(frames) < 1<<20-100 {
		frames = wire.AppendUpdate(frames, wire.ActionAdd, testRoute(len(frames)))
	}
	for range 32 {
		s.Send(frames, 0)
	}
	if err := wait(t, done); !errors.Is(err, ErrStalled) {
		t.Fatalf("err = %v, want ErrStalled", err)
	}
}

func TestQueueOverflowClosesSession(t *testing.T) {
	c, _, ch, _, cerr, _ := pair(t, Config{MaxQueue: 64 << 10}, Config{})
	wait(t, ch.established)
	big := make([]byte, 0, 128<<10)
	for len(big) < 100<<10 {
		big = wire.AppendUpdate(big, wire.ActionAdd, testRoute(len(big)))
	}
	if c.Send(big, 0) {
		t.Error("Send reported congestion instead of closing")
	}
	if err := wait(t, cerr); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("err = %v, want ErrQueueFull", err)
	}
}

// TestClientKeepalivesDuringLongDrain: a client whose writer spends seconds
// draining one long queue to a slowly reading server (pacing off) still
// sends its keepalives every interval, between frames.
func TestClientKeepalivesDuringLongDrain(t *testing.T) {
	cc, srv := testpeer.TCPPair(t)
	// Small socket buffers, so that the writer waits for the reader instead
	// of handing everything to the kernel at once.
	if err := cc.(*net.TCPConn).SetWriteBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	if err := srv.(*net.TCPConn).SetReadBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	h := newRecorder()
	c := New(cc, Config{Role: RoleClient, Keepalive: time.Second, NoPaceV1: true}, h)
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	defer func() {
		c.Close()
		<-done
	}()

	// Handshake as a plain v1 server.
	r := wire.NewReader(srv)
	if typ, _, err := r.ReadFrame(); err != nil || typ != wire.TypeHello {
		t.Fatalf("read %v, %v; want HELLO", typ, err)
	}
	hello, _ := wire.AppendFrame(nil, wire.Hello{Keepalive: 1, IsServer: true})
	ka, _ := wire.AppendFrame(nil, wire.Keepalive{})
	srv.Write(hello)
	if typ, _, err := r.ReadFrame(); err != nil || typ != wire.TypeKeepalive {
		t.Fatalf("read %v, %v; want KEEPALIVE", typ, err)
	}
	srv.Write(ka)
	wait(t, h.established)

	// About 1.6 MB at once, read at about 400 KB/s: a drain of ~4 s.
	var frames []byte
	n := 0
	for ; len(frames) < 1600<<10; n++ {
		frames = wire.AppendUpdate(frames, wire.ActionAdd, testRoute(n))
	}
	c.Send(frames, n)
	var kaTimes []time.Time
	buf := make([]byte, 4<<10)
	var pending []byte
	updates := 0
	deadline := time.Now().Add(20 * time.Second)
	for updates < n && time.Now().Before(deadline) {
		srv.SetReadDeadline(deadline)
		k, err := srv.Read(buf)
		if err != nil {
			c.Close()
			t.Fatalf("read after %d of %d updates: %v (session: %v)", updates, n, err, <-done)
		}
		pending = append(pending, buf[:k]...)
		for len(pending) >= wire.HeaderLen {
			l := wire.HeaderLen + int(pending[1])<<8 | int(pending[2])
			if len(pending) < l {
				break
			}
			switch wire.Type(pending[3]) {
			case wire.TypeKeepalive:
				kaTimes = append(kaTimes, time.Now())
				srv.Write(ka) // a server answers each
			case wire.TypeUpdate:
				updates++
			default:
				t.Fatalf("unexpected message type %d", pending[3])
			}
			pending = pending[l:]
		}
		time.Sleep(10 * time.Millisecond)
	}
	if updates != n {
		t.Fatalf("%d of %d updates arrived", updates, n)
	}
	if len(kaTimes) < 2 {
		t.Fatalf("%d keepalives during a drain of %d updates, want one a second", len(kaTimes), n)
	}
	for i := 1; i < len(kaTimes); i++ {
		// A v1 server closes the session after 2.5 intervals without a
		// keepalive; one waits at most for the chunk being written.
		if gap := kaTimes[i].Sub(kaTimes[i-1]); gap > 2500*time.Millisecond {
			t.Errorf("keepalives %v apart during the drain", gap.Round(time.Millisecond))
		}
	}
}

// TestSharedAndOwnedFramesKeepTheirOrder mixes frames copied into the queue
// (Send, SendFunc) with frames queued by reference (SendShared), in sizes
// around the queue's chunk size and the largest write, while the writer
// drains, paced (one segment at a time) and not (vectored writes): the
// peer gets every update once, in order.
func TestSharedAndOwnedFramesKeepTheirOrder(t *testing.T) {
	for _, noPace := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoPaceV1=%v", noPace), func(t *testing.T) { testFrameOrder(t, noPace) })
	}
}

func testFrameOrder(t *testing.T, noPace bool) {
	const total = 20000
	h := &orderChecker{recorder: newRecorder(), total: total, done: make(chan error, 1)}
	cc, sc := testpeer.TCPPair(t)
	c := New(cc, Config{Role: RoleClient, NoPaceV1: noPace}, newRecorder())
	s := New(sc, Config{Role: RoleServer}, h)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, sess := range []*Session{c, s} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sess.Run(ctx)
		}()
	}
	defer func() {
		cancel()
		wg.Wait()
	}()
	wait(t, h.established)

	sizes := []int{1, 7, 900, 0, 1, 3000, 40, 8000, 2, 0, 0} // updates per send, ~30 bytes each; 0: nothing
	for i, k := 0, 0; i < total; k++ {
		n := min(sizes[k%len(sizes)], total-i)
		var frames []byte
		for j := range n {
			frames = wire.AppendUpdate(frames, wire.ActionAdd, testRoute(i+j))
		}
		switch k % 3 {
		case 0:
			c.Send(frames, n)
		case 1:
			c.SendShared(frames, n)
		default:
			c.SendFunc(func(b []byte) ([]byte, int) { return append(b, frames...), n })
		}
		i += n
	}
	if err := wait(t, h.done); err != nil {
		t.Fatal(err)
	}
}

// orderChecker expects testRoute(0), testRoute(1), ... up to total and
// reports on done.
type orderChecker struct {
	*recorder
	total, next int
	done        chan error
}

func (o *orderChecker) HandleUpdate(_ *Session, u *wire.Update) error {
	if o.next >= o.total {
		return nil
	}
	if u.Route != testRoute(o.next) {
		o.done <- fmt.Errorf("update %d: got %v, want %v", o.next, u.Route, testRoute(o.next))
		o.next = o.total
		return nil
	}
	if o.next++; o.next == o.total {
		o.done <- nil
	}
	return nil
}

// TestEmptySegments: nothing queued by reference is no segment, and a
// vectored write of empty segments returns at once (the kernel's writev is
// never asked to write nothing, which would make no progress forever).
func TestEmptySegments(t *testing.T) {
	q := newQueue()
	q.pushShared(nil)
	q.pushShared([]byte{})
	if _, segs := q.take(); len(segs) != 0 {
		t.Errorf("take after empty pushShared: %d segments", len(segs))
	}

	conn, _ := testpeer.TCPPair(t)
	s := New(conn, Config{Role: RoleClient}, newRecorder())
	done := make(chan error, 1)
	go func() { done <- s.writev([]segment{{}, {b: []byte{}}, {owned: true}}) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("writev of empty segments did not return")
	}
}
