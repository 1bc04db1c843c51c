package wire

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/metalbond/metalbond/internal/wire/pb"
	"github.com/metalbond/metalbond/route"
)

// The reference codec: the generated pb types with proto.Marshal and
// proto.Unmarshal. The tests hold the protowire hot path to it.

// referenceDecodeUpdate decodes an UPDATE body with proto.Unmarshal and
// validates it with the same rules as DecodeUpdate.
func referenceDecodeUpdate(body []byte) (Update, error) {
	var m pb.Update
	if err := proto.Unmarshal(body, &m); err != nil {
		return Update{}, fmt.Errorf("%w: update: %v", ErrMalformed, err)
	}
	u := rawUpdate{
		action:         int32(m.Action),
		vni:            m.Vni,
		hasDestination: m.Destination != nil,
		hasNextHop:     m.NextHop != nil,
	}
	if d := m.Destination; d != nil {
		u.ipVersion = int32(d.IpVersion)
		u.prefix = d.Prefix
		u.prefixLength = d.PrefixLength
	}
	if nh := m.NextHop; nh != nil {
		u.target = nh.TargetAddress
		u.targetVNI = nh.TargetVNI
		u.nextHopType = int32(nh.Type)
		u.natFrom = nh.NatPortRangeFrom
		u.natTo = nh.NatPortRangeTo
	}
	return u.update()
}

// updateToPB converts an update to its generated protobuf message.
func updateToPB(a Action, r route.Route) *pb.Update {
	ipv := pb.IPVersion_IPv4
	if r.Prefix.Addr().Is6() {
		ipv = pb.IPVersion_IPv6
	}
	return &pb.Update{
		Action: pb.Action(a),
		Vni:    uint32(r.VNI),
		Destination: &pb.Destination{
			IpVersion:    ipv,
			Prefix:       addrBytes(r.Prefix.Addr()),
			PrefixLength: uint32(r.Prefix.Bits()),
		},
		NextHop: &pb.NextHop{
			TargetAddress:    addrBytes(r.NextHop.Address),
			TargetVNI:        uint32(r.NextHop.TargetVNI),
			Type:             pb.NextHopType(r.NextHop.Type),
			NatPortRangeFrom: uint32(r.NextHop.NATPortFrom),
			NatPortRangeTo:   uint32(r.NextHop.NATPortTo),
		},
	}
}

// referenceUpdateBody encodes an update body with proto.Marshal.
func referenceUpdateBody(t testing.TB, a Action, r route.Route) []byte {
	t.Helper()
	b, err := proto.Marshal(updateToPB(a, r))
	if err != nil {
		t.Fatalf("proto.Marshal: %v", err)
	}
	return b
}

func addrBytes(a netip.Addr) []byte {
	if !a.IsValid() {
		return nil
	}
	return a.AsSlice()
}

// mustMarshal returns proto.Marshal(m) and fails the test on error.
func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("proto.Marshal: %v", err)
	}
	return b
}

var sentinels = []error{ErrBadVersion, ErrUnknownType, ErrTooLarge, ErrMalformed, ErrInvalid}

// sentinelOf returns the one sentinel that err wraps, or an error that
// explains why there is not exactly one.
func sentinelOf(err error) (error, error) {
	var found []error
	for _, s := range sentinels {
		if errors.Is(err, s) {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("error %q wraps %d sentinels, want exactly 1", err, len(found))
	}
	return found[0], nil
}
