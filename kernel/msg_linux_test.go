//go:build linux

package kernel

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The builders and parsers must agree: what we send is what a dump returns.
func TestMessageRoundTrip(t *testing.T) {
	var b batch
	dst := netip.MustParseAddr("2001:db8::1")
	b.newNexthop(7, 3, dst, 254, false)
	b.newGroup(9, []uint32{7, 8}, 254, true)
	k := key{table: 1000, prefix: netip.MustParsePrefix("2001:db8:23::/64")}
	b.replaceRoute(k, 254, 9)
	if b.len() != 3 {
		t.Fatalf("len = %d", b.len())
	}
	body := func(n int) []byte {
		start := b.offs[n]
		l := int(binary.NativeEndian.Uint32(b.buf[start:]))
		return b.buf[start+sizeofNlmsghd : start+l]
	}
	nh, ok := parseNexthop(body(0))
	if !ok || nh.id != 7 || nh.oif != 3 || nh.dst != dst || nh.encap != unix.LWTUNNEL_ENCAP_IP6 || nh.proto != 254 {
		t.Errorf("nexthop = %+v", nh)
	}
	g, ok := parseNexthop(body(1))
	if !ok || g.id != 9 || !slices.Equal(g.group, []uint32{7, 8}) || !g.weights {
		t.Errorf("group = %+v", g)
	}
	r, ok := parseRoute(body(2))
	if !ok || r.table != 1000 || r.prefix != k.prefix || r.nhid != 9 || r.proto != 254 {
		t.Errorf("route = %+v", r)
	}
	if f := binary.NativeEndian.Uint16(b.buf[b.offs[1]+6:]); f&unix.NLM_F_REPLACE == 0 || f&unix.NLM_F_ACK != 0 {
		t.Errorf("group flags = %#x", f)
	}
}

func TestParseNlErr(t *testing.T) {
	// struct nlmsgerr with a capped request header and an extended-ack
	// message, as the kernel sends it.
	code := -int32(unix.ENETDOWN)
	data := binary.NativeEndian.AppendUint32(nil, uint32(code))
	data = append(data, make([]byte, sizeofNlmsghd)...)
	msg := "Nexthop device is not up\x00"
	data = binary.NativeEndian.AppendUint16(data, uint16(4+len(msg)))
	data = binary.NativeEndian.AppendUint16(data, unix.NLMSGERR_ATTR_MSG)
	data = append(data, msg...)
	m := syscall.NetlinkMessage{
		Header: syscall.NlMsghdr{Type: unix.NLMSG_ERROR, Flags: unix.NLM_F_CAPPED | unix.NLM_F_ACK_TLVS},
		Data:   data,
	}
	err := parseNlErr(m)
	if err == nil || err.Error() != "Nexthop device is not up (network is down)" {
		t.Fatalf("err = %v", err)
	}
	ack := syscall.NetlinkMessage{Data: make([]byte, 4+sizeofNlmsghd)}
	if err := parseNlErr(ack); err != nil {
		t.Errorf("ack = %v", err)
	}
}

func TestBackoff(t *testing.T) {
	prev := time.Duration(0)
	for attempt := 1; attempt < 20; attempt++ {
		d := backoff(attempt)
		if d < retryMin*9/10 || d > retryMax*11/10 {
			t.Fatalf("backoff(%d) = %v out of range", attempt, d)
		}
		if attempt < 5 && d <= prev {
			t.Errorf("backoff(%d) = %v, not above %v", attempt, d, prev)
		}
		prev = d
	}
}
