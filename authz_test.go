package metalbond_test

import (
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// vniPolicy lets every peer announce into and subscribe to one VNI, and
// refuses peers from one address.
type vniPolicy struct {
	vni     route.VNI
	refused string
}

func (p vniPolicy) Authorize(conn net.Conn) (metalbond.Permissions, error) {
	if p.refused != "" && conn.LocalAddr().String() == p.refused {
		return nil, errors.New("not welcome")
	}
	return p, nil
}
func (p vniPolicy) Identity() string              { return "test" }
func (p vniPolicy) MayAnnounce(v route.VNI) bool  { return v == p.vni }
func (p vniPolicy) MaySubscribe(v route.VNI) bool { return v == p.vni }

func TestAuthorizerRefusesOutsidePolicy(t *testing.T) {
	srv, addr := startServer(t, metalbond.ServerConfig{Authorizer: vniPolicy{vni: 1}})
	p := dialRaw(t, addr)
	allowed := mustRoute(t, "1#10.1.0.0/16#2001:db8::1")
	denied := mustRoute(t, "2#10.2.0.0/16#2001:db8::1")
	p.send(wire.Update{Action: wire.ActionAdd, Route: denied})
	p.send(wire.Subscribe{VNI: 2})
	p.send(wire.Update{Action: wire.ActionAdd, Route: allowed})
	p.send(wire.Subscribe{VNI: 1})
	// The session stays up: the allowed subscription delivers the allowed route.
	if u := p.expectUpdate(t); u.Route != allowed {
		t.Fatalf("got %v, want %v", u.Route, allowed)
	}
	p.expectSilence(t, 100*time.Millisecond)
	if st := srv.Stats(); st.AuthRefusedMessages != 2 {
		t.Fatalf("AuthRefusedMessages = %d, want 2", st.AuthRefusedMessages)
	}
	if len(srv.Routes(2)) != 0 {
		t.Fatal("refused route was stored")
	}
	if got := srv.Peers()[0].Identity; got != "test" {
		t.Fatalf("peer identity %q, want test", got)
	}
}

// switchPolicy allows one VNI, which can change while sessions run.
type switchPolicy struct{ vni *atomic.Uint32 }

func (p switchPolicy) Authorize(net.Conn) (metalbond.Permissions, error) { return p, nil }
func (p switchPolicy) Identity() string                                  { return "switch" }
func (p switchPolicy) MayAnnounce(v route.VNI) bool                      { return uint32(v) == p.vni.Load() }
func (p switchPolicy) MaySubscribe(v route.VNI) bool                     { return true }

func TestReauthorizeWithdrawsRevokedAnnouncements(t *testing.T) {
	vni := new(atomic.Uint32)
	vni.Store(7)
	srv, addr := startServer(t, metalbond.ServerConfig{Authorizer: switchPolicy{vni}})
	sub := startClient(t, []string{addr})
	sub.subscribe(t, 7)
	a := startClient(t, []string{addr})
	r := mustRoute(t, "7#10.7.0.0/16#2001:db8::7")
	a.announce(t, r)
	sub.inst.WaitRoutes(t, []route.Route{r})
	vni.Store(8) // the policy no longer lets anyone announce into 7
	srv.Reauthorize()
	sub.inst.WaitRoutes(t, nil)
	if len(srv.Peers()) != 2 {
		t.Fatal("Reauthorize closed a session")
	}
}
