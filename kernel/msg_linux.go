//go:build linux

package kernel

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Message builders. Each appends one complete request to the batch; the
// sequence number and port id are filled in by conn.exec. Requests carry
// no NLM_F_ACK: see conn.

func (b *batch) begin(typ, flags uint16) int {
	start := len(b.buf)
	b.offs = append(b.offs, start)
	var h [sizeofNlmsghd]byte
	binary.NativeEndian.PutUint16(h[4:], typ)
	binary.NativeEndian.PutUint16(h[6:], flags|unix.NLM_F_REQUEST)
	b.buf = append(b.buf, h[:]...)
	return start
}

func (b *batch) end(start int) {
	binary.NativeEndian.PutUint32(b.buf[start:], uint32(len(b.buf)-start))
}

func (b *batch) attr(typ uint16, val []byte) {
	l := 4 + len(val)
	b.buf = binary.NativeEndian.AppendUint16(b.buf, uint16(l))
	b.buf = binary.NativeEndian.AppendUint16(b.buf, typ)
	b.buf = append(b.buf, val...)
	for ; l%4 != 0; l++ {
		b.buf = append(b.buf, 0)
	}
}

func (b *batch) attrU32(typ uint16, v uint32) {
	var a [4]byte
	binary.NativeEndian.PutUint32(a[:], v)
	b.attr(typ, a[:])
}

func (b *batch) attrU16(typ uint16, v uint16) {
	var a [2]byte
	binary.NativeEndian.PutUint16(a[:], v)
	b.attr(typ, a[:])
}

// nestBegin opens a nested attribute; nestEnd fixes its length.
func (b *batch) nestBegin(typ uint16) int {
	start := len(b.buf)
	b.buf = binary.NativeEndian.AppendUint16(b.buf, 0)
	b.buf = binary.NativeEndian.AppendUint16(b.buf, typ|unix.NLA_F_NESTED)
	return start
}

func (b *batch) nestEnd(start int) {
	binary.NativeEndian.PutUint16(b.buf[start:], uint16(len(b.buf)-start))
}

func family(p netip.Prefix) uint8 {
	if p.Addr().Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// rtmsg appends a struct rtmsg.
func (b *batch) rtmsg(fam, dstLen uint8, table uint32, proto, scope, typ uint8) {
	t := uint8(unix.RT_TABLE_UNSPEC)
	if table < 256 {
		t = uint8(table)
	}
	b.buf = append(b.buf, fam, dstLen, 0, 0, t, proto, scope, typ, 0, 0, 0, 0)
}

// replaceRoute appends "ip route replace PREFIX nhid NHID table T proto P".
func (b *batch) replaceRoute(k key, proto uint8, nhid uint32) {
	s := b.begin(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE)
	b.rtmsg(family(k.prefix), uint8(k.prefix.Bits()), k.table, proto, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST)
	b.attr(unix.RTA_DST, k.prefix.Addr().AsSlice())
	b.attrU32(unix.RTA_TABLE, k.table)
	b.attrU32(rtaNHID, nhid)
	b.end(s)
}

// deleteRoute appends "ip route del PREFIX table T proto P"; the protocol
// makes sure that only a route of ours is removed.
func (b *batch) deleteRoute(k key, proto uint8) {
	s := b.begin(unix.RTM_DELROUTE, 0)
	b.rtmsg(family(k.prefix), uint8(k.prefix.Bits()), k.table, proto, unix.RT_SCOPE_NOWHERE, unix.RTN_UNICAST)
	b.attr(unix.RTA_DST, k.prefix.Addr().AsSlice())
	b.attrU32(unix.RTA_TABLE, k.table)
	b.end(s)
}

func (b *batch) nhmsg(fam, proto uint8) {
	b.buf = append(b.buf, fam, 0, proto, 0, 0, 0, 0, 0)
}

func nexthopFlags(replace bool) uint16 {
	if replace {
		return unix.NLM_F_CREATE | unix.NLM_F_REPLACE
	}
	return unix.NLM_F_CREATE | unix.NLM_F_EXCL
}

// newNexthop appends "ip -6 nexthop add id ID encap ip6 dst DST dev OIF proto P".
func (b *batch) newNexthop(id uint32, oif int, dst netip.Addr, proto uint8, replace bool) {
	s := b.begin(unix.RTM_NEWNEXTHOP, nexthopFlags(replace))
	b.nhmsg(unix.AF_INET6, proto)
	b.attrU32(unix.NHA_ID, id)
	b.attrU32(unix.NHA_OIF, uint32(oif))
	b.attrU16(unix.NHA_ENCAP_TYPE, unix.LWTUNNEL_ENCAP_IP6)
	n := b.nestBegin(unix.NHA_ENCAP)
	b.attr(lwtIP6Dst, dst.AsSlice())
	b.nestEnd(n)
	b.end(s)
}

// newGroup appends "ip nexthop add id ID group M1/M2/... proto P", in the
// order given.
func (b *batch) newGroup(id uint32, members []uint32, proto uint8, replace bool) {
	s := b.begin(unix.RTM_NEWNEXTHOP, nexthopFlags(replace))
	b.nhmsg(unix.AF_UNSPEC, proto)
	b.attrU32(unix.NHA_ID, id)
	grp := make([]byte, 0, sizeofNhGrp*len(members))
	for _, m := range members {
		grp = binary.NativeEndian.AppendUint32(grp, m)
		grp = append(grp, 0, 0, 0, 0) // weight 1 (stored minus one), reserved
	}
	b.attr(unix.NHA_GROUP, grp)
	b.attrU16(unix.NHA_GROUP_TYPE, grpTypeMpath)
	b.end(s)
}

// deleteNexthop appends "ip nexthop del id ID".
func (b *batch) deleteNexthop(id uint32) {
	s := b.begin(unix.RTM_DELNEXTHOP, 0)
	b.nhmsg(unix.AF_UNSPEC, 0)
	b.attrU32(unix.NHA_ID, id)
	b.end(s)
}

// routeDumpReq builds a dump request for one family and table. With
// NETLINK_GET_STRICT_CHK the kernel filters by table and protocol itself;
// parseRoute filters again for kernels that ignore the hints.
func routeDumpReq(fam uint8, table uint32, proto uint8) []byte {
	var b batch
	s := b.begin(unix.RTM_GETROUTE, unix.NLM_F_DUMP)
	b.rtmsg(fam, 0, table, proto, 0, 0)
	b.attrU32(unix.RTA_TABLE, table)
	b.end(s)
	return b.buf
}

// routeDumpAllReq builds a dump request for one family in all tables,
// filtered by protocol.
func routeDumpAllReq(fam uint8, proto uint8) []byte {
	var b batch
	s := b.begin(unix.RTM_GETROUTE, unix.NLM_F_DUMP)
	b.rtmsg(fam, 0, 0, proto, 0, 0)
	b.end(s)
	return b.buf
}

func nexthopDumpReq() []byte {
	var b batch
	s := b.begin(unix.RTM_GETNEXTHOP, unix.NLM_F_DUMP)
	b.nhmsg(unix.AF_UNSPEC, 0)
	b.end(s)
	return b.buf
}

// kernelRoute is the part of a dumped route that the installer compares.
type kernelRoute struct {
	table  uint32
	prefix netip.Prefix
	proto  uint8
	nhid   uint32 // 0: not a nexthop-object route
}

func parseRoute(data []byte) (kernelRoute, bool) {
	if len(data) < sizeofRtmsg {
		return kernelRoute{}, false
	}
	fam, dstLen := data[0], int(data[1])
	r := kernelRoute{table: uint32(data[4]), proto: data[5]}
	if data[7] != unix.RTN_UNICAST {
		return kernelRoute{}, false
	}
	addr := netip.IPv4Unspecified()
	if fam == unix.AF_INET6 {
		addr = netip.IPv6Unspecified()
	} else if fam != unix.AF_INET {
		return kernelRoute{}, false
	}
	forEachAttr(data[sizeofRtmsg:], func(typ uint16, val []byte) {
		switch typ {
		case unix.RTA_DST:
			if a, ok := netip.AddrFromSlice(val); ok {
				addr = a
			}
		case unix.RTA_TABLE:
			if len(val) == 4 {
				r.table = binary.NativeEndian.Uint32(val)
			}
		case rtaNHID:
			if len(val) == 4 {
				r.nhid = binary.NativeEndian.Uint32(val)
			}
		}
	})
	p, err := addr.Prefix(dstLen)
	if err != nil {
		return kernelRoute{}, false
	}
	r.prefix = p
	return r, true
}

// kernelNexthop is a dumped nexthop object.
type kernelNexthop struct {
	id      uint32
	proto   uint8
	oif     uint32
	encap   uint16     // LWTUNNEL_ENCAP_*
	dst     netip.Addr // encap ip6 dst
	group   []uint32   // member ids of a group, in order
	weights bool       // every member has weight 1
}

func parseNexthop(data []byte) (kernelNexthop, bool) {
	if len(data) < sizeofNhmsg {
		return kernelNexthop{}, false
	}
	n := kernelNexthop{proto: data[2], weights: true}
	forEachAttr(data[sizeofNhmsg:], func(typ uint16, val []byte) {
		switch typ {
		case unix.NHA_ID:
			if len(val) == 4 {
				n.id = binary.NativeEndian.Uint32(val)
			}
		case unix.NHA_OIF:
			if len(val) == 4 {
				n.oif = binary.NativeEndian.Uint32(val)
			}
		case unix.NHA_ENCAP_TYPE:
			if len(val) == 2 {
				n.encap = binary.NativeEndian.Uint16(val)
			}
		case unix.NHA_ENCAP:
			forEachAttr(val, func(typ uint16, val []byte) {
				if typ == lwtIP6Dst {
					n.dst, _ = netip.AddrFromSlice(val)
				}
			})
		case unix.NHA_GROUP:
			for ; len(val) >= sizeofNhGrp; val = val[sizeofNhGrp:] {
				n.group = append(n.group, binary.NativeEndian.Uint32(val))
				if val[4] != 0 || val[5] != 0 {
					n.weights = false
				}
			}
		}
	})
	return n, n.id != 0
}
