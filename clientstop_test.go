package metalbond_test

// How a client stops: a clean stop (Shutdown, or the end of Run's context)
// withdraws every route it announced; StopForRestart keeps them for the
// graceful restart time (graceful_test.go).

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/deployedv1"
	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// runClient runs a client with Run's context under the test's control.
func runClient(t *testing.T, ctx context.Context, cfg metalbond.ClientConfig) (*metalbond.Client, <-chan struct{}) {
	t.Helper()
	cfg.RetryMin, cfg.RetryMax = 20*time.Millisecond, 100*time.Millisecond
	c, err := metalbond.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		c.Shutdown(context.Background())
		<-done
	})
	return c, done
}

// A program withdraws a route and cancels the context it used for both
// Withdraw and Run, as on its way out: the withdrawal and the clean stop's
// withdrawal of the other route reach the subscriber at once, not after the
// graceful restart time; another announcer's route is not touched.
func TestWithdrawThenCancel(t *testing.T) {
	srv, addr := startServer(t, metalbond.ServerConfig{})
	sub := startClient(t, []string{addr})
	sub.subscribe(t, 50)
	other := startClient(t, []string{addr})
	kept := mustRoute(t, "50#10.50.9.0/24#2001:db8::9")
	other.announce(t, kept)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, done := runClient(t, ctx, metalbond.ClientConfig{Servers: []string{addr}, Name: "leaving"})
	r1 := mustRoute(t, "50#10.50.1.0/24#2001:db8::1")
	r2 := mustRoute(t, "50#10.50.2.0/24#2001:db8::1")
	for _, r := range []route.Route{r1, r2} {
		if err := c.Announce(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	sub.inst.WaitRoutes(t, []route.Route{kept, r1, r2})

	if err := c.Withdraw(ctx, r1); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
	if n := len(srv.Routes(50)); n != 1 {
		t.Errorf("server holds %d routes of VNI 50 when Run has returned, want 1 (the other announcer's)", n)
	}
	if n := srv.Stats().StaleRoutes; n != 0 {
		t.Errorf("server keeps %d stale routes after a clean stop", n)
	}
	sub.inst.WaitRoutes(t, []route.Route{kept})
	if adds, removes, problems := sub.inst.Counts(); adds != 3 || removes != 2 || len(problems) > 0 {
		t.Errorf("subscriber's installer saw %d adds and %d removes (%v), want 3 and 2", adds, removes, problems)
	}
	if err := c.Announce(context.Background(), r1); !errors.Is(err, metalbond.ErrClosed) {
		t.Errorf("Announce after the stop: %v, want ErrClosed", err)
	}
}

// Shutdown right after a burst of announcements and withdrawals delivers
// all of them, then withdraws the rest: when it returns, the server holds
// none of the client's routes.
func TestShutdownAfterBurst(t *testing.T) {
	srv, addr := startServer(t, metalbond.ServerConfig{})
	sub := startClient(t, []string{addr})
	sub.subscribe(t, 51)
	c, _ := runClient(t, context.Background(), metalbond.ClientConfig{Servers: []string{addr}, Name: "burst"})
	if err := c.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	rs := manyRoutes(51, 3000, "2001:db8::1")
	bg := context.Background()
	for i, r := range rs {
		if err := c.Announce(bg, r); err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			if err := c.Withdraw(bg, rs[i-1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := c.Shutdown(bg); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Routes(51)); n != 0 {
		t.Fatalf("server holds %d of the client's routes after Shutdown returned", n)
	}
	sub.inst.WaitRoutes(t, nil)
	if _, _, problems := sub.inst.Counts(); len(problems) > 0 {
		t.Fatal(problems)
	}
}

// teeConn records what is read from a connection.
type teeConn struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *teeConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	c.buf.Write(b[:n])
	c.mu.Unlock()
	return n, err
}

func (c *teeConn) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}

// A plain v1 server (the deployed implementation's behaviour) gets a REMOVE
// for every route our client announced when the client stops cleanly, and
// reads them all before the connection ends.
func TestPlainV1ServerSeesRemovesOnStop(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		peer *deployedv1.Peer
		tee  *teeConn
		err  error
	}
	established := make(chan struct{})
	peers := make(chan *deployedv1.Peer, 1)
	res := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		tee := &teeConn{Conn: conn}
		p := deployedv1.New(tee, deployedv1.Config{})
		peers <- p
		err = p.RunServer(context.Background(), established)
		res <- result{peer: p, tee: tee, err: err}
	}()
	c, _ := runClient(t, context.Background(), metalbond.ClientConfig{Servers: []string{ln.Addr().String()}})
	rs := manyRoutes(52, 1000, "2001:db8::1")
	for _, r := range rs {
		if err := c.Announce(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	<-established
	p := <-peers
	for p.Len() < len(rs) {
		select {
		case <-p.Changed():
		case r := <-res:
			t.Fatalf("deployed-style server ended with %d of %d routes: %v", p.Len(), len(rs), r.err)
		}
	}
	if err := c.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if !strings.Contains(r.err.Error(), "EOF") {
		t.Errorf("deployed-style server ended with %v, want the end of the stream", r.err)
	}
	adds, removes := map[route.Route]int{}, map[route.Route]int{}
	rd := wire.NewReader(bytes.NewReader(r.tee.bytes()))
	for {
		typ, body, err := rd.ReadFrame()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if typ != wire.TypeUpdate {
			continue
		}
		u, err := wire.DecodeUpdate(body)
		if err != nil {
			t.Fatal(err)
		}
		if u.Action == wire.ActionAdd {
			adds[u.Route]++
		} else if adds[u.Route] == 1 {
			removes[u.Route]++
		}
	}
	for _, r := range rs {
		if adds[r] != 1 || removes[r] != 1 {
			t.Fatalf("route %v: %d ADDs and %d REMOVEs after them, want 1 and 1", r, adds[r], removes[r])
		}
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Two connected clients that give the same name are taken for one across
// restarts: the server says so.
func TestServerWarnsOfSharedName(t *testing.T) {
	var log syncBuffer
	_, addr := startServer(t, metalbond.ServerConfig{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	same := func(c *metalbond.ClientConfig) { c.Name = "twin" }
	a := startClient(t, []string{addr}, same)
	a.mustReady(t)
	b := startClient(t, []string{addr}, same)
	b.mustReady(t)
	waitFor(t, func() bool { return strings.Contains(log.String(), "another connected session has the same name") })
}
