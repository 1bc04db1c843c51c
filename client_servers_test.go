package metalbond_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/route"
)

func TestClientAddRemoveServer(t *testing.T) {
	_, addrA := startServer(t, metalbond.ServerConfig{})
	_, addrB := startServer(t, metalbond.ServerConfig{})
	rA := mustRoute(t, "7#10.7.1.0/24#2001:db8::a")
	rB := mustRoute(t, "7#10.7.2.0/24#2001:db8::b")
	rBoth := mustRoute(t, "7#10.7.3.0/24#2001:db8::c")
	startClient(t, []string{addrA}).announce(t, rA)
	startClient(t, []string{addrB}).announce(t, rB)
	startClient(t, []string{addrA, addrB}).announce(t, rBoth)

	// A client that starts with no server; the grace period would keep a
	// vanished server's routes for an hour, but a removed server's go at
	// once.
	sub := startClient(t, nil, func(c *metalbond.ClientConfig) { c.GracePeriod = time.Hour })
	sub.subscribe(t, 7)
	if err := sub.AddServer(addrA); err != nil {
		t.Fatal(err)
	}
	sub.inst.WaitRoutes(t, []route.Route{rA, rBoth})
	if err := sub.AddServer(addrA); err == nil || !strings.Contains(err.Error(), addrA) {
		t.Errorf("AddServer(%s) twice = %v, want an error naming it", addrA, err)
	}
	if err := sub.AddServer("nocolon"); err == nil || !strings.Contains(err.Error(), "nocolon") {
		t.Errorf("AddServer(nocolon) = %v, want an error naming it", err)
	}
	if err := sub.AddServer(addrB); err != nil {
		t.Fatal(err)
	}
	sub.inst.WaitRoutes(t, []route.Route{rA, rB, rBoth})

	if err := sub.RemoveServer(addrA); err != nil {
		t.Fatal(err)
	}
	sub.inst.WaitRoutes(t, []route.Route{rB, rBoth})
	if ps := sub.Peers(); len(ps) != 1 || ps[0].Server != addrB {
		t.Errorf("Peers after RemoveServer = %+v, want only %s", ps, addrB)
	}
	if err := sub.RemoveServer(addrA); err == nil || !strings.Contains(err.Error(), addrA) {
		t.Errorf("RemoveServer(%s) twice = %v, want an error naming it", addrA, err)
	}
	// A removed server can be added again.
	if err := sub.AddServer(addrA); err != nil {
		t.Fatal(err)
	}
	sub.inst.WaitRoutes(t, []route.Route{rA, rB, rBoth})

	sub.stop()
	if err := sub.AddServer("127.0.0.1:1"); !errors.Is(err, metalbond.ErrClosed) {
		t.Errorf("AddServer after Run ended = %v, want ErrClosed", err)
	}
}

// callLog is an Installer that logs every call in order. onAdd, if set, is
// called from inside AddRoute.
type callLog struct {
	mu      sync.Mutex
	calls   []string
	changed chan struct{}
	onAdd   atomic.Pointer[func(route.Route)]
}

func newCallLog() *callLog { return &callLog{changed: make(chan struct{}, 1)} }

func (l *callLog) log(s string) {
	l.mu.Lock()
	l.calls = append(l.calls, s)
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

func (l *callLog) AddRoute(r route.Route) error {
	l.log("add " + r.String())
	if f := l.onAdd.Load(); f != nil {
		(*f)(r)
	}
	return nil
}

func (l *callLog) RemoveRoute(r route.Route) error {
	l.log("remove " + r.String())
	return nil
}

func (l *callLog) Stopped() error {
	l.log("stopped")
	return nil
}

func (l *callLog) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

// waitLen waits up to 10 s for n calls and returns them.
func (l *callLog) waitLen(t testing.TB, n int) []string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if got := l.snapshot(); len(got) >= n {
			return got
		}
		select {
		case <-l.changed:
		case <-deadline:
			t.Fatalf("installer calls: got %q, want %d", l.snapshot(), n)
		}
	}
}

func waitClosed(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: not done within 10s", what)
	}
}

func TestClientReplay(t *testing.T) {
	_, addr := startServer(t, metalbond.ServerConfig{})
	r1 := mustRoute(t, "5#10.5.1.0/24#2001:db8::1")
	r2 := mustRoute(t, "5#10.5.2.0/24#2001:db8::1")
	r3 := mustRoute(t, "6#10.6.1.0/24#2001:db8::1")
	ann := startClient(t, []string{addr})
	ann.announce(t, r1, r2, r3)

	calls := newCallLog()
	c := startClient(t, []string{addr}, func(cfg *metalbond.ClientConfig) { cfg.Installer = calls })
	c.subscribe(t, 5)
	c.subscribe(t, 6)
	first := calls.waitLen(t, 3)

	done, err := c.Replay(5)
	if err != nil {
		t.Fatal(err)
	}
	waitClosed(t, done, "Replay(5)")
	got := calls.snapshot()
	want := append(slices.Clone(first), "add "+r1.String(), "add "+r2.String())
	if !slices.Equal(got, want) {
		t.Fatalf("installer calls after Replay(5):\n got %q\nwant %q", got, want)
	}
	if n := c.Stats().RoutesInstalled; n != 3 {
		t.Errorf("RoutesInstalled after Replay = %d, want 3 (a replay installs nothing new)", n)
	}
	if _, err := c.Replay(1 << 24); !errors.Is(err, metalbond.ErrInvalidVNI) {
		t.Errorf("Replay(1<<24) = %v, want ErrInvalidVNI", err)
	}

	// Replay from inside AddRoute: queued behind the change being applied,
	// without waiting for it (which would deadlock).
	inner := make(chan (<-chan struct{}), 1)
	var once sync.Once
	hook := func(route.Route) {
		once.Do(func() {
			ch, err := c.Replay(5)
			if err != nil {
				t.Errorf("Replay inside AddRoute: %v", err)
			}
			inner <- ch
		})
	}
	calls.onAdd.Store(&hook)
	r4 := mustRoute(t, "5#10.5.4.0/24#2001:db8::1")
	ann.announce(t, r4)
	waitClosed(t, <-inner, "Replay(5) from inside AddRoute")
	calls.onAdd.Store(nil)
	got = calls.snapshot()[len(want):]
	want = []string{"add " + r4.String(), "add " + r1.String(), "add " + r2.String(), "add " + r4.String()}
	if !slices.Equal(got, want) {
		t.Fatalf("installer calls after Replay inside AddRoute:\n got %q\nwant %q", got, want)
	}
}

func TestClientStopNotifier(t *testing.T) {
	_, addr := startServer(t, metalbond.ServerConfig{})
	r := mustRoute(t, "9#10.9.0.0/24#2001:db8::9")
	startClient(t, []string{addr}).announce(t, r)
	calls := newCallLog()
	c := startClient(t, []string{addr}, func(cfg *metalbond.ClientConfig) { cfg.Installer = calls })
	c.subscribe(t, 9)
	calls.waitLen(t, 1)
	c.stop() // returns when Run has
	want := []string{"add " + r.String(), "stopped"}
	if got := calls.snapshot(); !slices.Equal(got, want) {
		t.Fatalf("installer calls: got %q, want %q", got, want)
	}
	if _, err := c.Replay(9); !errors.Is(err, metalbond.ErrClosed) {
		t.Errorf("Replay after Run ended = %v, want ErrClosed", err)
	}
}

// A server added before Run is connected when Run starts, like those of
// ClientConfig.Servers.
func TestClientAddServerBeforeRun(t *testing.T) {
	_, addr := startServer(t, metalbond.ServerConfig{})
	c, err := metalbond.NewClient(metalbond.ClientConfig{RetryMin: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddServer(addr); err != nil {
		t.Fatal(err)
	}
	if ps := c.Peers(); len(ps) != 1 || ps[0].Server != addr || ps[0].State != "CONNECTING" {
		t.Fatalf("Peers before Run = %+v, want %s CONNECTING", ps, addr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := c.WaitReady(wctx); err != nil {
		t.Fatalf("not established: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ps := c.Peers(); len(ps) != 1 || ps[0].State != "CLOSED" {
		t.Errorf("Peers after Run = %+v, want %s CLOSED", ps, addr)
	}
}
