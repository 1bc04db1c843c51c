package metalbond_test

import "net/netip"

func netipPrefix(v4 uint32, bits int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v4 >> 24), byte(v4 >> 16), byte(v4 >> 8), byte(v4)}), bits)
}

func netipMustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
