package routetable

import "net/netip"

// prefixKey is the compact, comparable form of a netip.Prefix: the 16-byte
// address (IPv4 in its IPv4-mapped form), the prefix length and the address
// family. Keeping the family apart keeps 10.0.0.0/8 and ::ffff:10.0.0.0/104
// distinct. It round-trips every netip.Prefix, invalid ones included.
type prefixKey [18]byte

const (
	keyBits   = 16 // index of the prefix length; bitsNone if the length is invalid
	keyFamily = 17 // index of the family: famNone, famIPv4 or famIPv6
	bitsNone  = 0xff

	famNone = 0 // invalid address (the zero Prefix)
	famIPv4 = 4
	famIPv6 = 6
)

func keyOf(p netip.Prefix) prefixKey {
	var k prefixKey
	a := p.Addr()
	switch {
	case a.Is4():
		k[keyFamily] = famIPv4
	case a.Is6():
		k[keyFamily] = famIPv6
	default:
		return k
	}
	b := a.As16()
	copy(k[:16], b[:])
	if bits := p.Bits(); bits >= 0 {
		k[keyBits] = byte(bits)
	} else {
		k[keyBits] = bitsNone
	}
	return k
}

func (k *prefixKey) prefix() netip.Prefix {
	var a netip.Addr
	switch k[keyFamily] {
	case famIPv4:
		a = netip.AddrFrom4([4]byte(k[12:16]))
	case famIPv6:
		a = netip.AddrFrom16([16]byte(k[:16]))
	default:
		return netip.Prefix{}
	}
	bits := int(k[keyBits])
	if k[keyBits] == bitsNone {
		bits = -1
	}
	return netip.PrefixFrom(a, bits)
}
