package compat_test

import (
	"slices"
	"testing"

	"go.uber.org/goleak"

	mb "github.com/metalbond/metalbond/compat"
	mbproto "github.com/metalbond/metalbond/compat/pb"
	"github.com/metalbond/metalbond/internal/testport"
)

// TestEndToEnd runs the two embedders against a StartServer route server
// over loopback: a speaker that only announces (NewDummyClient) and an
// agent that subscribes and receives through its callback.
func TestEndToEnd(t *testing.T) {
	before := goleak.IgnoreCurrent()
	// The server restarts on the same port: one below the ephemeral range.
	addr := testport.Free(t, "127.0.0.1")
	cfg := mb.Config{KeepaliveInterval: 1}

	server := mb.NewMetalBond(cfg, nil)
	if err := server.StartServer(addr); err != nil {
		t.Fatal(err)
	}
	if err := server.StartHTTPServer("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}

	// The speaker waits for ESTABLISHED before it announces, as it must
	// with the existing library.
	// Two embedders on one host: each needs a name of its own for
	// graceful restart (on separate hosts, the host name is enough).
	speakerCfg, agentCfg := cfg, cfg
	speakerCfg.Name, agentCfg.Name = "speaker", "agent"
	speaker := mb.NewMetalBond(speakerCfg, mb.NewDummyClient())
	if err := speaker.AddPeer(addr, ""); err != nil {
		t.Fatal(err)
	}
	waitState(t, speaker, addr, "ESTABLISHED", established)
	lb := hop("2001:db8::10", mbproto.NextHopType_LOADBALANCER_TARGET, 0, 0)
	nat := hop("2001:db8::11", mbproto.NextHopType_NAT, 1024, 2047)
	vip := dest("192.0.2.10/32")
	if err := speaker.AnnounceRoute(100, vip, lb); err != nil {
		t.Fatal(err)
	}
	if err := speaker.AnnounceRoute(100, dest("2001:db8:100::/64"), nat); err != nil {
		t.Fatal(err)
	}

	// The agent subscribes at once, before its session is up: accepted.
	agent := newAgentClient()
	agentMB := mb.NewMetalBond(agentCfg, agent)
	agent.mb.Store(agentMB)
	if err := agentMB.AddPeer(addr, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if err := agentMB.Subscribe(100); err != nil {
		t.Fatalf("Subscribe before ESTABLISHED: %v", err)
	}
	vipKey := routeKey(100, vip, lb)
	natKey := routeKey(100, dest("2001:db8:100::/64"), nat)
	agent.waitRoutes(t, vipKey, natKey)

	// Its own announcement goes to the server, not back to itself.
	vm := hop("2001:db8::20", mbproto.NextHopType_STANDARD, 0, 0)
	if err := agentMB.AnnounceRoute(100, dest("10.100.0.0/24"), vm); err != nil {
		t.Fatal(err)
	}

	// A withdrawal reaches the callback.
	if err := speaker.WithdrawRoute(100, dest("2001:db8:100::/64"), nat); err != nil {
		t.Fatal(err)
	}
	agent.waitRoutes(t, vipKey)

	// AddRoutesForVni: AddRoute again for what is known in the VNI.
	n := len(agent.callLog())
	if err := agentMB.AddRoutesForVni(100); err != nil {
		t.Fatal(err)
	}
	if got := agent.waitCalls(t, n+1)[n:]; !slices.Equal(got, []string{"add " + vipKey}) {
		t.Fatalf("calls after AddRoutesForVni: %q, want one add of %s", got, vipKey)
	}

	// The server restarts: both peers go out of ESTABLISHED and come back,
	// the speaker re-announces on its own, and the agent keeps its route
	// throughout (graceful restart: no RemoveRoute, no second AddRoute).
	n = len(agent.callLog())
	server.Shutdown()
	notEstablished := func(s mb.ConnectionState) bool { return s != mb.ESTABLISHED }
	waitState(t, agentMB, addr, "out of ESTABLISHED", notEstablished)
	waitState(t, speaker, addr, "out of ESTABLISHED", notEstablished)
	server = mb.NewMetalBond(cfg, nil)
	if err := server.StartServer(addr); err != nil {
		t.Fatal(err)
	}
	waitState(t, agentMB, addr, "ESTABLISHED", established)
	waitState(t, speaker, addr, "ESTABLISHED", established)
	// A route announced after the restart arrives, and only after the
	// one kept across it.
	lb2 := hop("2001:db8::12", mbproto.NextHopType_LOADBALANCER_TARGET, 0, 0)
	if err := speaker.AnnounceRoute(100, vip, lb2); err != nil {
		t.Fatal(err)
	}
	agent.waitRoutes(t, vipKey, routeKey(100, vip, lb2))
	if got := agent.callLog()[n:]; !slices.Equal(got, []string{"add " + routeKey(100, vip, lb2)}) {
		t.Errorf("calls across the server restart: %q, want only the new route's add", got)
	}

	// RemovePeer withdraws what only that server sent.
	if err := agentMB.RemovePeer(addr); err != nil {
		t.Fatal(err)
	}
	agent.waitRoutes(t)

	// Shutdown: Cleanup is the last call, and no goroutine is left.
	agentMB.Shutdown()
	speaker.Shutdown()
	server.Shutdown()
	calls := agent.callLog()
	if calls[len(calls)-1] != "cleanup" || slices.Index(calls, "cleanup") != len(calls)-1 {
		t.Errorf("calls end with %q, want one cleanup, last", calls[max(0, len(calls)-3):])
	}
	goleak.VerifyNone(t, before)
}
