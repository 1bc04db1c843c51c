package compat_test

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	mb "github.com/metalbond/metalbond/compat"
	mbproto "github.com/metalbond/metalbond/compat/pb"
)

// printClient prints the routes it is told about.
type printClient struct{ added chan struct{} }

func (c printClient) AddRoute(vni mb.VNI, dest mb.Destination, hop mb.NextHop) error {
	fmt.Println("add", vni, dest, hop)
	c.added <- struct{}{}
	return nil
}

func (c printClient) RemoveRoute(vni mb.VNI, dest mb.Destination, hop mb.NextHop) error {
	fmt.Println("remove", vni, dest, hop)
	return nil
}

// A route server and two embedders over loopback, with the existing
// library's API: one announces a load-balancer target, the other learns it.
func Example() {
	quiet := slog.New(slog.DiscardHandler)
	ln, _ := net.Listen("tcp", "127.0.0.1:0") // find a free port
	addr := ln.Addr().String()
	ln.Close()

	server := mb.NewMetalBond(mb.Config{Logger: quiet}, nil)
	defer server.Shutdown()
	if err := server.StartServer(addr); err != nil {
		fmt.Println(err)
		return
	}

	speaker := mb.NewMetalBond(mb.Config{Logger: quiet, Name: "speaker"}, mb.NewDummyClient())
	defer speaker.Shutdown()
	speaker.AddPeer(addr, "")
	speaker.AnnounceRoute(23,
		mb.Destination{IPVersion: mb.IPV4, Prefix: netip.MustParsePrefix("192.0.2.10/32")},
		mb.NextHop{TargetAddress: netip.MustParseAddr("2001:db8::10"), Type: mbproto.NextHopType_LOADBALANCER_TARGET})

	client := printClient{added: make(chan struct{}, 1)}
	agent := mb.NewMetalBond(mb.Config{Logger: quiet, Name: "agent"}, client)
	defer agent.Shutdown()
	agent.AddPeer(addr, "")
	agent.Subscribe(23) // accepted before the session is up

	select {
	case <-client.added:
	case <-time.After(10 * time.Second):
	}
	// Output: add 23 192.0.2.10/32 2001:db8::10 LOADBALANCER_TARGET
}
