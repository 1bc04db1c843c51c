package compat_test

import (
	"errors"
	"net/netip"
	"testing"

	"go.uber.org/goleak"

	mb "github.com/metalbond/metalbond/compat"
	mbproto "github.com/metalbond/metalbond/compat/pb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestAPI calls every method of MetalBond in turn on one instance that is
// connected to nothing, and checks each result: nil, or an error that
// contains the text embedders match (lowercase, as they compare it).
func TestAPI(t *testing.T) {
	m := mb.NewMetalBond(mb.Config{KeepaliveInterval: 3}, nil)
	std := hop("2001:db8::1", mbproto.NextHopType_STANDARD, 0, 0)
	nat := hop("2001:db8::2", mbproto.NextHopType_NAT, 1024, 2047)
	d := dest("10.0.23.0/24")
	steps := []struct {
		name string
		call func() error
		want string // "" for success, else a lowercase substring of the error
	}{
		{"Subscribe", func() error { return m.Subscribe(23) }, ""},
		{"Subscribe again", func() error { return m.Subscribe(23) }, "already subscribed to vni"},
		{"Subscribe VNI over 24 bits", func() error { return m.Subscribe(1 << 24) }, "16777216"},
		{"Unsubscribe not subscribed", func() error { return m.Unsubscribe(24) }, "already unsubscribed from vni"},
		{"Subscribe 24", func() error { return m.Subscribe(24) }, ""},
		{"Unsubscribe", func() error { return m.Unsubscribe(24) }, ""},
		{"Unsubscribe again", func() error { return m.Unsubscribe(24) }, "already unsubscribed from vni"},

		{"AnnounceRoute", func() error { return m.AnnounceRoute(23, d, std) }, ""},
		{"AnnounceRoute again", func() error { return m.AnnounceRoute(23, d, std) }, "nexthop already exists"},
		{"AnnounceRoute host bits set, same network", func() error { return m.AnnounceRoute(23, dest("10.0.23.7/24"), std) }, "nexthop already exists"},
		{"AnnounceRoute NAT", func() error { return m.AnnounceRoute(23, d, nat) }, ""},
		{"AnnounceRoute without IPVersion", func() error {
			return m.AnnounceRoute(23, mb.Destination{Prefix: netip.MustParsePrefix("2001:db8:23::/48")}, std)
		}, ""},
		{"AnnounceRoute IPVersion not the prefix's", func() error {
			return m.AnnounceRoute(23, mb.Destination{IPVersion: mb.IPV6, Prefix: netip.MustParsePrefix("10.1.0.0/16")}, std)
		}, "10.1.0.0/16"},
		{"AnnounceRoute no prefix", func() error { return m.AnnounceRoute(23, mb.Destination{}, std) }, "invalid prefix"},
		{"AnnounceRoute no nexthop address", func() error { return m.AnnounceRoute(23, d, mb.NextHop{}) }, "nexthop address"},
		{"AnnounceRoute unknown nexthop type", func() error { return m.AnnounceRoute(23, d, hop("2001:db8::3", 7, 0, 0)) }, "unknown type 7"},
		{"AnnounceRoute ports on a STANDARD nexthop", func() error {
			return m.AnnounceRoute(23, d, hop("2001:db8::3", mbproto.NextHopType_STANDARD, 1, 2))
		}, "port range 1-2"},
		{"AnnounceRoute VNI over 24 bits", func() error { return m.AnnounceRoute(1<<24, d, std) }, "16777216"},

		{"WithdrawRoute VNI with nothing announced", func() error { return m.WithdrawRoute(99, d, std) }, "vni does not exist"},
		{"WithdrawRoute prefix not announced", func() error { return m.WithdrawRoute(23, dest("10.9.0.0/16"), std) }, "destination does not exist"},
		{"WithdrawRoute nexthop not announced", func() error {
			return m.WithdrawRoute(23, d, hop("2001:db8::9", mbproto.NextHopType_STANDARD, 0, 0))
		}, "nexthop does not exist"},
		{"WithdrawRoute", func() error { return m.WithdrawRoute(23, d, nat) }, ""},
		{"WithdrawRoute again", func() error { return m.WithdrawRoute(23, d, nat) }, "nexthop does not exist"},

		{"AddRoutesForVni", func() error { return m.AddRoutesForVni(23) }, ""},
		{"AddRoutesForVni VNI over 24 bits", func() error { return m.AddRoutesForVni(1 << 24) }, "16777216"},

		{"AddPeer", func() error { return m.AddPeer("127.0.0.1:1", "") }, ""},
		{"AddPeer again", func() error { return m.AddPeer("127.0.0.1:1", "") }, "127.0.0.1:1"},
		{"AddPeer without port", func() error { return m.AddPeer("nocolon", "") }, "nocolon"},
		{"AddPeer bad local IP", func() error { return m.AddPeer("127.0.0.1:2", "not-an-ip") }, "not-an-ip"},
		{"PeerState", func() error { _, err := m.PeerState("127.0.0.1:1"); return err }, ""},
		{"PeerState unknown", func() error { _, err := m.PeerState("127.0.0.1:3"); return err }, "does not exist"},
		{"RemovePeer", func() error { return m.RemovePeer("127.0.0.1:1") }, ""},
		{"RemovePeer again", func() error { return m.RemovePeer("127.0.0.1:1") }, "does not exist"},

		{"StartServer bad address", func() error { return m.StartServer("nocolon") }, "nocolon"},
		{"StartHTTPServer bad address", func() error { return m.StartHTTPServer("nocolon") }, "nocolon"},
	}
	for _, s := range steps {
		err := s.call()
		switch {
		case s.want == "" && err != nil:
			t.Errorf("%s: %v", s.name, err)
		case s.want != "" && !errMatches(err, s.want):
			t.Errorf("%s = %v, want an error containing %q", s.name, err, s.want)
		}
	}

	if !m.IsSubscribed(23) || m.IsSubscribed(24) {
		t.Errorf("IsSubscribed(23), IsSubscribed(24) = %v, %v; want true, false", m.IsSubscribed(23), m.IsSubscribed(24))
	}
	if got := m.GetSubscribedVnis(); len(got) != 1 || got[0] != 23 {
		t.Errorf("GetSubscribedVnis() = %v, want [23]", got)
	}
	if !m.IsRouteAnnounced(23, d, std) || !m.IsRouteAnnounced(23, dest("10.0.23.7/24"), std) || m.IsRouteAnnounced(23, d, nat) {
		t.Error("IsRouteAnnounced disagrees with the announcements")
	}
	if m.GetClient() == nil {
		t.Error("GetClient() = nil, want the DummyClient NewMetalBond took instead of nil")
	}

	m.Shutdown()
	m.Shutdown() // a second call does nothing
	for name, call := range map[string]func() error{
		"Subscribe":       func() error { return m.Subscribe(25) },
		"Unsubscribe":     func() error { return m.Unsubscribe(23) },
		"AnnounceRoute":   func() error { return m.AnnounceRoute(23, dest("10.5.0.0/16"), std) },
		"WithdrawRoute":   func() error { return m.WithdrawRoute(23, d, std) },
		"AddRoutesForVni": func() error { return m.AddRoutesForVni(23) },
		"AddPeer":         func() error { return m.AddPeer("127.0.0.1:4", "") },
		"RemovePeer":      func() error { return m.RemovePeer("127.0.0.1:4") },
		"StartServer":     func() error { return m.StartServer("127.0.0.1:0") },
		"StartHTTPServer": func() error { return m.StartHTTPServer("127.0.0.1:0") },
	} {
		if err := call(); !errors.Is(err, mb.ErrClosed) {
			t.Errorf("%s after Shutdown = %v, want ErrClosed", name, err)
		}
	}
}

func TestConnectionStateString(t *testing.T) {
	for s, want := range map[mb.ConnectionState]string{
		mb.CONNECTING: "CONNECTING", mb.HELLO_SENT: "HELLO_SENT", mb.HELLO_RECEIVED: "HELLO_RECEIVED",
		mb.ESTABLISHED: "ESTABLISHED", mb.RETRY: "RETRY", mb.CLOSED: "CLOSED", 9: "ConnectionState(9)",
	} {
		if got := s.String(); got != want {
			t.Errorf("ConnectionState(%d).String() = %q, want %q", s, got, want)
		}
	}
}

func TestNextHopTypeIsTheWireEnum(t *testing.T) {
	for typ, want := range map[mbproto.NextHopType]string{
		mbproto.NextHopType_STANDARD: "STANDARD", mbproto.NextHopType_NAT: "NAT", mbproto.NextHopType_LOADBALANCER_TARGET: "LOADBALANCER_TARGET",
	} {
		if typ.String() != want || mbproto.NextHopType_value[want] != int32(typ) {
			t.Errorf("NextHopType %d: String() = %q, value of %q = %d", typ, typ.String(), want, mbproto.NextHopType_value[want])
		}
	}
	if mbproto.NextHopType_STANDARD != 0 || mbproto.NextHopType_NAT != 1 || mbproto.NextHopType_LOADBALANCER_TARGET != 2 {
		t.Error("NextHopType values differ from the wire format's 0, 1, 2")
	}
}
