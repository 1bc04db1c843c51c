package metalbond_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/route"
)

// printer is an Installer that prints what it is told.
type printer struct{ done chan struct{} }

func (p printer) AddRoute(r route.Route) error {
	fmt.Println("add", r)
	close(p.done)
	return nil
}

func (p printer) RemoveRoute(r route.Route) error {
	fmt.Println("remove", r)
	return nil
}

// A route server and two clients over loopback: one announces a route,
// the other learns it.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv, _ := metalbond.NewServer(metalbond.ServerConfig{})
	go srv.Serve(ctx, ln)

	learned := printer{done: make(chan struct{})}
	hv1, _ := metalbond.NewClient(metalbond.ClientConfig{
		Servers:   []string{ln.Addr().String()},
		Installer: learned,
	})
	hv1.Subscribe(ctx, 23)
	go hv1.Run(ctx)

	hv2, _ := metalbond.NewClient(metalbond.ClientConfig{Servers: []string{ln.Addr().String()}, Name: "hv2"})
	r, _ := route.Parse("23#10.0.23.0/24#2001:db8::1")
	hv2.Announce(ctx, r)
	go hv2.Run(ctx)

	select {
	case <-learned.done:
	case <-time.After(5 * time.Second):
	}
	// Output: add 23#10.0.23.0/24#2001:db8::1
}
