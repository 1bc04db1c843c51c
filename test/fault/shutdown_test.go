package faulttest

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// TestServerShutdownSendsNoWithdrawals stops an in-process server (what
// SIGTERM does to the command) while announcers and a subscriber are
// connected, many times over. A server that shuts down must not tell its
// subscribers that routes are gone: they are not, the announcers will
// re-announce them to the next server, and a REMOVE makes the subscriber
// withdraw them from its kernel (a flap the graceful restart exists to
// prevent).
func TestServerShutdownSendsNoWithdrawals(t *testing.T) {
	t.Parallel()
	rounds := 30
	if long() {
		rounds = 300
	}
	removes, rounds0 := 0, 0
	for round := range rounds {
		n := shutdownRound(t, round)
		if n > 0 {
			removes += n
			rounds0++
		}
	}
	logf(t, "%d shutdowns: %d sent REMOVEs to the subscriber (%d REMOVEs in all)", rounds, rounds0, removes)
	if removes > 0 {
		t.Errorf("in %d of %d shutdowns the server sent the subscriber REMOVEs for routes it was not told to withdraw (%d in all)",
			rounds0, rounds, removes)
	}
}

// shutdownRound runs one server with 8 announcers and a subscriber, stops
// it, and returns the number of REMOVEs the subscriber got before the end.
func shutdownRound(t *testing.T, round int) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := metalbond.NewServer(metalbond.ServerConfig{Keepalive: time.Second, SyncDelay: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		<-served
	}()
	addr := ln.Addr().String()

	sub, err := dialRaw(addr, ourHello(fmt.Sprintf("sub-%d", round)))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.close()
	sub.read()
	sub.keepalive(300 * time.Millisecond)
	if err := sub.send(wire.Subscribe{VNI: 7}); err != nil {
		t.Fatal(err)
	}
	var all []route.Route
	for i := range 8 {
		// Half plain v1 announcers, half ours (graceful restart
		// negotiated): the routes of both are forgotten with the server,
		// which must not broadcast that.
		hello := v1Hello()
		if i%2 == 1 {
			hello = ourHello(fmt.Sprintf("ann-%d-%d", round, i))
		}
		a, err := dialRaw(addr, hello)
		if err != nil {
			t.Fatal(err)
		}
		defer a.close()
		a.read()
		a.keepalive(300 * time.Millisecond)
		rs := hostRoutes(7, fmt.Sprintf("10.7.%d.1", i), 50, "2001:db8::7")
		if err := a.update(wire.ActionAdd, rs); err != nil {
			t.Fatal(err)
		}
		all = append(all, rs...)
	}
	sub.waitTable(t, "subscriber", newRouteSet(all), 10*time.Second)
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	served <- nil // for the deferred receive
	if _, ok := sub.waitClosed(5 * time.Second); !ok {
		t.Fatal("the subscriber's connection was not closed by the shutdown")
	}
	_, _, removes := sub.snapshot()
	return removes
}
