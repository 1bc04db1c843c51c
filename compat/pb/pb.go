// Package pb exports the protobuf enum NextHopType that the existing Go
// library's API uses in NextHop.Type, for programs migrating to package
// compat. It is the enum of metalbond's own generated protobuf code
// (internal/wire/pb), not a copy: a pb.NextHopType here is the same type.
package pb

import wirepb "github.com/metalbond/metalbond/internal/wire/pb"

// NextHopType says how traffic reaches a nexthop. Its values are fixed by
// the v1 wire format.
type NextHopType = wirepb.NextHopType

// The values of NextHopType.
const (
	NextHopType_STANDARD            = wirepb.NextHopType_STANDARD
	NextHopType_NAT                 = wirepb.NextHopType_NAT
	NextHopType_LOADBALANCER_TARGET = wirepb.NextHopType_LOADBALANCER_TARGET
)

// NextHopType_name and NextHopType_value map the values of NextHopType to
// their names and back, as in generated protobuf code.
var (
	NextHopType_name  = wirepb.NextHopType_name
	NextHopType_value = wirepb.NextHopType_value
)
