package wire

import (
	"fmt"
	"net/netip"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/metalbond/metalbond/route"
)

// This file holds the hot path: UPDATE bodies encoded and decoded with
// protowire directly, without the generated pb types. Both directions
// follow proto3 and the Go protobuf runtime exactly (the tests check them
// against proto.Marshal and proto.Unmarshal):
//
//   - fields are written in field-number order and default values
//     (zero numbers, empty bytes) are omitted; sub-messages are always
//     written, since a Route always has a destination and a nexthop;
//   - unknown fields are skipped, a scalar field that occurs twice keeps
//     its last value, a sub-message that occurs twice is merged field by
//     field;
//   - a known field with an unexpected wire type is treated as an unknown
//     field (skipped), as proto.Unmarshal does;
//   - enum values are truncated to int32 and uint32 values to 32 bits.

// Field numbers of the schema in pb/metalbond.proto.
const (
	fieldUpdateAction      = 1
	fieldUpdateVNI         = 2
	fieldUpdateDestination = 3
	fieldUpdateNextHop     = 4

	fieldDestIPVersion    = 1
	fieldDestPrefix       = 2
	fieldDestPrefixLength = 3

	fieldNHTargetAddress = 1
	fieldNHTargetVNI     = 2
	fieldNHType          = 3
	fieldNHNATFrom       = 4
	fieldNHNATTo         = 5
)

// Wire values of the IPVersion enum.
const (
	ipVersion4 = 0
	ipVersion6 = 1
)

// tag returns the single-byte key of field num (< 16) with wire type typ.
func tag(num protowire.Number, typ protowire.Type) byte {
	return byte(num)<<3 | byte(typ)
}

// AppendUpdate appends the UPDATE frame (header and body) for action a
// and route r to dst and returns the extended slice. It allocates only
// when dst must grow, and the body is exactly what proto.Marshal produces
// for the same message.
//
// r must be valid (route.Route.Validate returns nil) and a must be
// ActionAdd or ActionRemove: AppendUpdate does not check. An invalid route
// still yields a well-formed frame, but one that a receiver may refuse or
// decode to other values; use AppendFrame to have the message checked.
// AppendUpdate is safe for concurrent use.
func AppendUpdate(dst []byte, a Action, r route.Route) []byte {
	start := len(dst)
	dst = append(dst, Version, 0, 0, byte(TypeUpdate))
	dst = appendUpdateBody(dst, a, r)
	putBodyLen(dst[start:], len(dst)-start-HeaderLen)
	return dst
}

// appendUpdateBody appends the protobuf encoding of the Update message.
//
// The destination and nexthop sub-messages are at most 23 and 35 bytes
// long, so their length always fits a one-byte varint: it is reserved
// first and filled in afterwards. The whole body is below 80 bytes, far
// below MaxBodyLen.
func appendUpdateBody(b []byte, a Action, r route.Route) []byte {
	if a != 0 {
		b = append(b, tag(fieldUpdateAction, protowire.VarintType))
		b = appendVarint(b, uint64(a))
	}
	if r.VNI != 0 {
		b = append(b, tag(fieldUpdateVNI, protowire.VarintType))
		b = appendVarint(b, uint64(r.VNI))
	}

	b = append(b, tag(fieldUpdateDestination, protowire.BytesType), 0)
	at := len(b)
	addr := r.Prefix.Addr()
	if addr.IsValid() && !addr.Is4() {
		b = append(b, tag(fieldDestIPVersion, protowire.VarintType), ipVersion6)
	}
	b = appendAddr(b, fieldDestPrefix, addr)
	if bits := r.Prefix.Bits(); bits > 0 {
		b = append(b, tag(fieldDestPrefixLength, protowire.VarintType))
		b = appendVarint(b, uint64(bits))
	}
	b[at-1] = byte(len(b) - at)

	b = append(b, tag(fieldUpdateNextHop, protowire.BytesType), 0)
	at = len(b)
	nh := &r.NextHop
	b = appendAddr(b, fieldNHTargetAddress, nh.Address)
	if nh.TargetVNI != 0 {
		b = append(b, tag(fieldNHTargetVNI, protowire.VarintType))
		b = appendVarint(b, uint64(nh.TargetVNI))
	}
	if nh.Type != 0 {
		b = append(b, tag(fieldNHType, protowire.VarintType))
		b = appendVarint(b, uint64(nh.Type))
	}
	if nh.NATPortFrom != 0 {
		b = append(b, tag(fieldNHNATFrom, protowire.VarintType))
		b = appendVarint(b, uint64(nh.NATPortFrom))
	}
	if nh.NATPortTo != 0 {
		b = append(b, tag(fieldNHNATTo, protowire.VarintType))
		b = appendVarint(b, uint64(nh.NATPortTo))
	}
	b[at-1] = byte(len(b) - at)
	return b
}

// appendVarint is protowire.AppendVarint with the one-byte case inlined.
func appendVarint(b []byte, v uint64) []byte {
	if v < 0x80 {
		return append(b, byte(v))
	}
	return protowire.AppendVarint(b, v)
}

// appendAddr appends addr as a bytes field: 4 bytes for IPv4, 16 for IPv6
// (including IPv4-mapped IPv6), nothing for the zero Addr.
func appendAddr(b []byte, num protowire.Number, addr netip.Addr) []byte {
	switch {
	case addr.Is4():
		a := addr.As4()
		b = append(b, tag(num, protowire.BytesType), 4)
		return append(b, a[:]...)
	case addr.Is6():
		a := addr.As16()
		b = append(b, tag(num, protowire.BytesType), 16)
		return append(b, a[:]...)
	}
	return b
}

// DecodeUpdate decodes and validates an UPDATE body without allocating
// (except for the error, on failure). The result does not alias body, and
// its prefix is normalised with Masked.
//
// Errors wrap ErrTooLarge (body longer than MaxBodyLen), ErrMalformed (not
// a valid protobuf encoding) or ErrInvalid (a field value is not allowed;
// the detail names the field as in the schema, such as
// "update destination.prefixLength 33 exceeds 32 for IPv4").
// DecodeUpdate is safe for concurrent use.
func DecodeUpdate(body []byte) (Update, error) {
	if len(body) > MaxBodyLen {
		return Update{}, fmt.Errorf("%w: update body length %d > %d", ErrTooLarge, len(body), MaxBodyLen)
	}
	var u rawUpdate
	if err := u.parse(body); err != nil {
		return Update{}, fmt.Errorf("%w: update: %v", ErrMalformed, err)
	}
	return u.update()
}

// rawUpdate holds the fields of an Update message as the protobuf decoder
// sees them, before validation. The byte slices alias the decoded body.
type rawUpdate struct {
	action int32
	vni    uint32

	hasDestination bool
	ipVersion      int32
	prefix         []byte
	prefixLength   uint32

	hasNextHop  bool
	target      []byte
	targetVNI   uint32
	nextHopType int32
	natFrom     uint32
	natTo       uint32
}

// nextField parses the field at the start of b: its number, wire type,
// value (for VarintType) or contents (for BytesType), and its whole length
// n. Fields of other wire types are skipped over (their value is not
// returned). Parsing a tag and its value in one call, with the one-byte
// varints inlined, is what makes decoding fast.
//
// On error n is negative: if num is 0 the tag is bad (see tagError),
// otherwise the value of field num (see fieldError).
func nextField(b []byte) (num protowire.Number, typ protowire.Type, v uint64, data []byte, n int) {
	num, typ, n = consumeTag(b)
	if n < 0 {
		return 0, 0, 0, nil, n
	}
	switch typ {
	case protowire.VarintType:
		switch {
		case n < len(b) && b[n] < 0x80:
			return num, typ, uint64(b[n]), nil, n + 1
		case n+1 < len(b) && b[n+1] < 0x80:
			return num, typ, uint64(b[n]&0x7f) | uint64(b[n+1])<<7, nil, n + 2
		}
		v, m := protowire.ConsumeVarint(b[n:])
		if m < 0 {
			return num, typ, 0, nil, m
		}
		return num, typ, v, nil, n + m
	case protowire.BytesType:
		var l uint64
		m := 1
		if n < len(b) && b[n] < 0x80 {
			l = uint64(b[n])
		} else if l, m = protowire.ConsumeVarint(b[n:]); m < 0 {
			return num, typ, 0, nil, m
		}
		n += m
		if l > uint64(len(b)-n) {
			_, m = protowire.ConsumeBytes(b[n-m:]) // the code for truncation
			return num, typ, 0, nil, m
		}
		return num, typ, 0, b[n : n+int(l)], n + int(l)
	}
	m := protowire.ConsumeFieldValue(num, typ, b[n:])
	if m < 0 {
		return num, typ, 0, nil, m
	}
	return num, typ, 0, nil, n + m
}

// parseError describes the failure code n that nextField returned for
// field num.
func parseError(num protowire.Number, n int) error {
	if num == 0 {
		return tagError(n)
	}
	return fieldError(num, n)
}

// parse decodes the fields of an Update message from b into u, merging
// them into what u holds already. Unknown fields, and known ones with an
// unexpected wire type, are skipped as proto.Unmarshal does.
func (u *rawUpdate) parse(b []byte) error {
	for len(b) > 0 {
		num, typ, v, data, n := nextField(b)
		if n < 0 {
			return parseError(num, n)
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			switch num {
			case fieldUpdateAction:
				u.action = int32(v)
			case fieldUpdateVNI:
				u.vni = uint32(v)
			}
		case protowire.BytesType:
			switch num {
			case fieldUpdateDestination:
				u.hasDestination = true
				if err := u.parseDestination(data); err != nil {
					return fmt.Errorf("destination: %w", err)
				}
			case fieldUpdateNextHop:
				u.hasNextHop = true
				if err := u.parseNextHop(data); err != nil {
					return fmt.Errorf("nextHop: %w", err)
				}
			}
		}
	}
	return nil
}

// parseDestination merges the fields of a Destination message into u.
func (u *rawUpdate) parseDestination(b []byte) error {
	for len(b) > 0 {
		num, typ, v, data, n := nextField(b)
		if n < 0 {
			return parseError(num, n)
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			switch num {
			case fieldDestIPVersion:
				u.ipVersion = int32(v)
			case fieldDestPrefixLength:
				u.prefixLength = uint32(v)
			}
		case protowire.BytesType:
			if num == fieldDestPrefix {
				u.prefix = data
			}
		}
	}
	return nil
}

// parseNextHop merges the fields of a NextHop message into u.
func (u *rawUpdate) parseNextHop(b []byte) error {
	for len(b) > 0 {
		num, typ, v, data, n := nextField(b)
		if n < 0 {
			return parseError(num, n)
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			switch num {
			case fieldNHTargetVNI:
				u.targetVNI = uint32(v)
			case fieldNHType:
				u.nextHopType = int32(v)
			case fieldNHNATFrom:
				u.natFrom = uint32(v)
			case fieldNHNATTo:
				u.natTo = uint32(v)
			}
		case protowire.BytesType:
			if num == fieldNHTargetAddress {
				u.target = data
			}
		}
	}
	return nil
}

// update validates u and converts it. Errors wrap ErrInvalid and name the
// field as the schema does.
func (u *rawUpdate) update() (Update, error) {
	if u.action != int32(ActionAdd) && u.action != int32(ActionRemove) {
		return Update{}, fmt.Errorf("%w: update action %d: unknown (want 0 ADD or 1 REMOVE)", ErrInvalid, u.action)
	}
	vni := route.VNI(u.vni)
	if !vni.Valid() {
		return Update{}, fmt.Errorf("%w: update vni %d exceeds 24 bits", ErrInvalid, u.vni)
	}

	if !u.hasDestination {
		return Update{}, fmt.Errorf("%w: update destination: missing", ErrInvalid)
	}
	var addr netip.Addr
	var family string
	switch u.ipVersion {
	case ipVersion4:
		if len(u.prefix) != 4 {
			return Update{}, fmt.Errorf("%w: update destination.prefix: %d bytes, want 4 for IPv4", ErrInvalid, len(u.prefix))
		}
		addr, family = netip.AddrFrom4([4]byte(u.prefix)), "IPv4"
	case ipVersion6:
		if len(u.prefix) != 16 {
			return Update{}, fmt.Errorf("%w: update destination.prefix: %d bytes, want 16 for IPv6", ErrInvalid, len(u.prefix))
		}
		addr, family = netip.AddrFrom16([16]byte(u.prefix)), "IPv6"
	default:
		return Update{}, fmt.Errorf("%w: update destination.ipVersion %d: unknown (want 0 IPv4 or 1 IPv6)", ErrInvalid, u.ipVersion)
	}
	if maxBits := uint32(addr.BitLen()); u.prefixLength > maxBits {
		return Update{}, fmt.Errorf("%w: update destination.prefixLength %d exceeds %d for %s", ErrInvalid, u.prefixLength, maxBits, family)
	}
	prefix := netip.PrefixFrom(addr, int(u.prefixLength)).Masked()

	if !u.hasNextHop {
		return Update{}, fmt.Errorf("%w: update nextHop: missing", ErrInvalid)
	}
	var nh route.NextHop
	switch len(u.target) {
	case 4:
		nh.Address = netip.AddrFrom4([4]byte(u.target))
	case 16:
		nh.Address = netip.AddrFrom16([16]byte(u.target))
	default:
		return Update{}, fmt.Errorf("%w: update nextHop.targetAddress: %d bytes, want 4 (IPv4) or 16 (IPv6)", ErrInvalid, len(u.target))
	}
	nh.TargetVNI = route.VNI(u.targetVNI)
	if !nh.TargetVNI.Valid() {
		return Update{}, fmt.Errorf("%w: update nextHop.targetVNI %d exceeds 24 bits", ErrInvalid, u.targetVNI)
	}
	if u.nextHopType < 0 || !route.NextHopType(u.nextHopType).Valid() {
		return Update{}, fmt.Errorf("%w: update nextHop.type %d: unknown (want 0 STANDARD, 1 NAT or 2 LOADBALANCER_TARGET)", ErrInvalid, u.nextHopType)
	}
	nh.Type = route.NextHopType(u.nextHopType)
	if u.natFrom > 0xffff {
		return Update{}, fmt.Errorf("%w: update nextHop.natPortRangeFrom %d exceeds 65535", ErrInvalid, u.natFrom)
	}
	if u.natTo > 0xffff {
		return Update{}, fmt.Errorf("%w: update nextHop.natPortRangeTo %d exceeds 65535", ErrInvalid, u.natTo)
	}
	if nh.Type != route.NextHopNAT {
		if u.natFrom != 0 || u.natTo != 0 {
			return Update{}, fmt.Errorf("%w: update nextHop.natPortRange %d-%d: only allowed for type NAT, not %s", ErrInvalid, u.natFrom, u.natTo, nh.Type)
		}
	} else if u.natFrom > u.natTo {
		return Update{}, fmt.Errorf("%w: update nextHop.natPortRange %d-%d: start after end", ErrInvalid, u.natFrom, u.natTo)
	}
	nh.NATPortFrom, nh.NATPortTo = uint16(u.natFrom), uint16(u.natTo)

	return Update{
		Action: Action(u.action),
		Route:  route.Route{VNI: vni, Prefix: prefix, NextHop: nh},
	}, nil
}
