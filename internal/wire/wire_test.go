package wire

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/metalbond/metalbond/internal/wire/pb"
	"github.com/metalbond/metalbond/route"
)

// transcriptFrame is one line of testdata/v1-transcript.txt.
type transcriptFrame struct {
	line  int
	conn  string
	dir   string
	frame []byte
}

func (f transcriptFrame) name() string {
	return "line" + strconv.Itoa(f.line) + "_" + f.conn + strings.ReplaceAll(f.dir, ">", "to")
}

func loadTranscript(t testing.TB) []transcriptFrame {
	t.Helper()
	data, err := os.ReadFile("testdata/v1-transcript.txt")
	if err != nil {
		t.Fatal(err)
	}
	var frames []transcriptFrame
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 3 {
			t.Fatalf("transcript line %d: want 3 fields, got %q", line, text)
		}
		frame, err := hex.DecodeString(fields[2])
		if err != nil {
			t.Fatalf("transcript line %d: %v", line, err)
		}
		frames = append(frames, transcriptFrame{line: line, conn: fields[0], dir: fields[1], frame: frame})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(frames) == 0 {
		t.Fatal("transcript has no frames")
	}
	return frames
}

// transcriptStream returns all transcript frames back to back.
func transcriptStream(t testing.TB) []byte {
	var s []byte
	for _, f := range loadTranscript(t) {
		s = append(s, f.frame...)
	}
	return s
}

func mustRoute(t testing.TB, s string) route.Route {
	t.Helper()
	r, err := route.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestTranscript(t *testing.T) {
	for _, f := range loadTranscript(t) {
		t.Run(f.name(), func(t *testing.T) {
			r := NewReader(bytes.NewReader(f.frame))
			m, err := r.ReadMessage()
			if err != nil {
				t.Fatalf("decode %x: %v", f.frame, err)
			}
			if _, _, err := r.ReadFrame(); err != io.EOF {
				t.Fatalf("after the frame: got %v, want io.EOF", err)
			}
			got, err := AppendFrame(nil, m)
			if err != nil {
				t.Fatalf("encode %#v: %v", m, err)
			}
			if !bytes.Equal(got, f.frame) {
				t.Fatalf("re-encoded %#v\n got %x\nwant %x", m, got, f.frame)
			}
			if u, ok := m.(Update); ok {
				if got := AppendUpdate(nil, u.Action, u.Route); !bytes.Equal(got, f.frame) {
					t.Fatalf("AppendUpdate\n got %x\nwant %x", got, f.frame)
				}
				if err := u.Route.Validate(); err != nil {
					t.Fatalf("decoded route invalid: %v", err)
				}
			}
		})
	}
}

// TestTranscriptValues checks what the transcript's messages mean, as its
// header comment describes them.
func TestTranscriptValues(t *testing.T) {
	want := map[string]Message{
		"010002010803":     Hello{Keepalive: 3},
		"0100040108031001": Hello{Keepalive: 3, IsServer: true},
		"01000002":         Keepalive{},
		"010002030817":     Subscribe{VNI: 23},
		"010002030818":     Subscribe{VNI: 24},
		"0100200510171a0812040a001700181822120a1020010db8000000000000000000000001": Update{
			Route: mustRoute(t, "23#10.0.23.0/24#2001:db8::1"),
		},
		"0100280510171a0812040a0018001818221a0a1020010db8000000000000000000000002180120e80728d00f": Update{
			Route: mustRoute(t, "23#10.0.24.0/24#2001:db8::2#NAT#1000#2000"),
		},
		"0100300510181a160801121020010db8000500000000000000000000184022140a1020010db80000000000000000000000031802": Update{
			Route: mustRoute(t, "24#2001:db8:5::/64#2001:db8::3#LB"),
		},
		"01002a05080110171a0812040a0018001818221a0a1020010db8000000000000000000000002180120e80728d00f": Update{
			Action: ActionRemove,
			Route:  mustRoute(t, "23#10.0.24.0/24#2001:db8::2#NAT#1000#2000"),
		},
	}
	seen := map[string]bool{}
	for _, f := range loadTranscript(t) {
		key := hex.EncodeToString(f.frame)
		w, ok := want[key]
		if !ok {
			t.Errorf("line %d: frame %s not covered by this test", f.line, key)
			continue
		}
		seen[key] = true
		got, err := Decode(Type(f.frame[3]), f.frame[HeaderLen:])
		if err != nil {
			t.Errorf("line %d: %v", f.line, err)
			continue
		}
		if got != w {
			t.Errorf("line %d: got %#v, want %#v", f.line, got, w)
		}
	}
	for key := range want {
		if !seen[key] {
			t.Errorf("frame %s not in the transcript", key)
		}
	}
}

func TestStrings(t *testing.T) {
	tests := []struct {
		v    interface{ String() string }
		want string
	}{
		{TypeHello, "HELLO"},
		{TypeKeepalive, "KEEPALIVE"},
		{TypeSubscribe, "SUBSCRIBE"},
		{TypeUnsubscribe, "UNSUBSCRIBE"},
		{TypeUpdate, "UPDATE"},
		{Type(0), "Type(0)"},
		{TypeEndOfSync, "END_OF_SYNC"},
		{Type(7), "Type(7)"},
		{ActionAdd, "ADD"},
		{ActionRemove, "REMOVE"},
		{Action(2), "Action(2)"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.v.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// validPB returns a valid Update message; tests break one field of it.
func validPB() *pb.Update {
	return &pb.Update{
		Action: pb.Action_ADD,
		Vni:    23,
		Destination: &pb.Destination{
			IpVersion:    pb.IPVersion_IPv4,
			Prefix:       []byte{10, 0, 23, 0},
			PrefixLength: 24,
		},
		NextHop: &pb.NextHop{
			TargetAddress: netip.MustParseAddr("2001:db8::1").AsSlice(),
		},
	}
}

func updateWith(t testing.TB, change func(*pb.Update)) []byte {
	m := validPB()
	change(m)
	return mustMarshal(t, m)
}

func TestDecodeErrors(t *testing.T) {
	// tagBytes encodes a raw field key, for field numbers out of range.
	tagBytes := func(num uint64, typ protowire.Type) []byte {
		return protowire.AppendVarint(nil, num<<3|uint64(typ))
	}
	tests := []struct {
		name string
		typ  Type
		body []byte
		want error
		msg  string // substring of the error message
	}{
		{"type 0", 0, nil, ErrUnknownType, "unknown message type: 0"},
		{"type 7", 7, nil, ErrUnknownType, "unknown message type: 7"},
		{"type 255", 255, nil, ErrUnknownType, "unknown message type: 255"},
		{"body too large", TypeUpdate, make([]byte, MaxBodyLen+1), ErrTooLarge, "body length 1189 > 1188"},
		{"keepalive body too large", TypeKeepalive, make([]byte, MaxBodyLen+1), ErrTooLarge, "body length 1189 > 1188"},

		{"hello keepalive 0", TypeHello, mustMarshal(t, &pb.Hello{IsServer: true}), ErrInvalid, "hello keepaliveInterval 0"},
		{"hello truncated", TypeHello, []byte{0x08}, ErrMalformed, "hello"},
		{"hello bad wire type", TypeHello, []byte{0x0f}, ErrMalformed, "hello"},
		{"keepalive truncated", TypeKeepalive, []byte{0x08}, ErrMalformed, "keepalive"},
		{"keepalive field 0", TypeKeepalive, []byte{0x00, 0x00}, ErrMalformed, "invalid field number"},
		{"keepalive end group", TypeKeepalive, []byte{0x0c}, ErrMalformed, "keepalive"},
		{"subscribe vni 2^24", TypeSubscribe, mustMarshal(t, &pb.Subscription{Vni: 1 << 24}), ErrInvalid, "subscribe vni 16777216 exceeds 24 bits"},
		{"unsubscribe vni max uint32", TypeUnsubscribe, mustMarshal(t, &pb.Subscription{Vni: 1<<32 - 1}), ErrInvalid, "unsubscribe vni 4294967295 exceeds 24 bits"},
		{"subscribe truncated bytes", TypeSubscribe, []byte{0x0a, 0x05}, ErrMalformed, "subscribe"},

		{"update action 2", TypeUpdate, updateWith(t, func(m *pb.Update) { m.Action = 2 }), ErrInvalid, "update action 2: unknown"},
		{"update action -1", TypeUpdate, updateWith(t, func(m *pb.Update) { m.Action = -1 }), ErrInvalid, "update action -1: unknown"},
		{"update vni 2^24", TypeUpdate, updateWith(t, func(m *pb.Update) { m.Vni = 1 << 24 }), ErrInvalid, "update vni 16777216 exceeds 24 bits"},
		{"update destination missing", TypeUpdate, updateWith(t, func(m *pb.Update) { m.Destination = nil }), ErrInvalid, "update destination: missing"},
		{"update destination empty", TypeUpdate, updateWith(t, func(m *pb.Update) { m.Destination = &pb.Destination{} }), ErrInvalid, "update destination.prefix: 0 bytes, want 4 for IPv4"},
		{"update ipVersion 2", TypeUpdate, updateWith(t, func(m *pb.Update) { m.Destination.IpVersion = 2 }), ErrInvalid, "update destination.ipVersion 2: unknown"},
		{"update ipVersion -5", TypeUpdate, updateWith(t, func(m *pb.Update) { m.Destination.IpVersion = -5 }), ErrInvalid, "update destination.ipVersion -5: unknown"},
		{"update IPv4 prefix of 16 bytes", TypeUpdate, updateWith(t, func(m *pb.Update) { m.Destination.Prefix = make([]byte, 16) }), ErrInvalid, "update destination.prefix: 16 bytes, want 4 for IPv4"},
		{"update IPv6 prefix of 4 bytes", TypeUpdate, updateWith(t, func(m *pb.Update) { m.Destination.IpVersion = pb.IPVersion_IPv6 }), ErrInvalid, "update destination.prefix: 4 bytes, want 16 for IPv6"},
		{"update IPv4 prefixLength 33", TypeUpdate, updateWith(t, func(m *pb.Update) { m.Destination.PrefixLength = 33 }), ErrInvalid, "update destination.prefixLength 33 exceeds 32 for IPv4"},
		{"update IPv6 prefixLength 129", TypeUpdate, updateWith(t, func(m *pb.Update) {
			m.Destination = &pb.Destination{IpVersion: pb.IPVersion_IPv6, Prefix: make([]byte, 16), PrefixLength: 129}
		}), ErrInvalid, "update destination.prefixLength 129 exceeds 128 for IPv6"},
		{"update nextHop missing", TypeUpdate, updateWith(t, func(m *pb.Update) { m.NextHop = nil }), ErrInvalid, "update nextHop: missing"},
		{"update targetAddress empty", TypeUpdate, updateWith(t, func(m *pb.Update) { m.NextHop.TargetAddress = nil }), ErrInvalid, "update nextHop.targetAddress: 0 bytes"},
		{"update targetAddress 5 bytes", TypeUpdate, updateWith(t, func(m *pb.Update) { m.NextHop.TargetAddress = make([]byte, 5) }), ErrInvalid, "update nextHop.targetAddress: 5 bytes"},
		{"update targetVNI 2^24", TypeUpdate, updateWith(t, func(m *pb.Update) { m.NextHop.TargetVNI = 1 << 24 }), ErrInvalid, "update nextHop.targetVNI 16777216 exceeds 24 bits"},
		{"update type 3", TypeUpdate, updateWith(t, func(m *pb.Update) { m.NextHop.Type = 3 }), ErrInvalid, "update nextHop.type 3: unknown"},
		{"update type -1", TypeUpdate, updateWith(t, func(m *pb.Update) { m.NextHop.Type = -1 }), ErrInvalid, "update nextHop.type -1: unknown"},
		{"update NAT from 65536", TypeUpdate, updateWith(t, func(m *pb.Update) {
			m.NextHop.Type, m.NextHop.NatPortRangeFrom, m.NextHop.NatPortRangeTo = pb.NextHopType_NAT, 65536, 65536
		}), ErrInvalid, "update nextHop.natPortRangeFrom 65536 exceeds 65535"},
		{"update NAT to 70000", TypeUpdate, updateWith(t, func(m *pb.Update) {
			m.NextHop.Type, m.NextHop.NatPortRangeTo = pb.NextHopType_NAT, 70000
		}), ErrInvalid, "update nextHop.natPortRangeTo 70000 exceeds 65535"},
		{"update NAT range on STANDARD", TypeUpdate, updateWith(t, func(m *pb.Update) { m.NextHop.NatPortRangeFrom = 1 }), ErrInvalid, "update nextHop.natPortRange 1-0: only allowed for type NAT"},
		{"update NAT range on LB", TypeUpdate, updateWith(t, func(m *pb.Update) {
			m.NextHop.Type, m.NextHop.NatPortRangeTo = pb.NextHopType_LOADBALANCER_TARGET, 5
		}), ErrInvalid, "update nextHop.natPortRange 0-5: only allowed for type NAT"},
		{"update NAT range reversed", TypeUpdate, updateWith(t, func(m *pb.Update) {
			m.NextHop.Type, m.NextHop.NatPortRangeFrom, m.NextHop.NatPortRangeTo = pb.NextHopType_NAT, 2000, 1000
		}), ErrInvalid, "update nextHop.natPortRange 2000-1000: start after end"},

		{"update truncated varint", TypeUpdate, []byte{0x10, 0x80}, ErrMalformed, "field 2"},
		{"update varint overflow", TypeUpdate, append([]byte{0x10}, append(bytes.Repeat([]byte{0xff}, 9), 0x02)...), ErrMalformed, "overflow"},
		{"update bytes past end", TypeUpdate, []byte{0x1a, 0x05, 0x08}, ErrMalformed, "field 3"},
		{"update field 0", TypeUpdate, []byte{0x00, 0x00}, ErrMalformed, "invalid field number"},
		{"update field number too large", TypeUpdate, append(tagBytes(1<<29, protowire.VarintType), 0), ErrMalformed, "invalid field number"},
		{"update truncated tag", TypeUpdate, []byte{0x80}, ErrMalformed, "field tag"},
		{"update end group", TypeUpdate, []byte{0x0c}, ErrMalformed, "field 1"},
		{"update wire type 6", TypeUpdate, []byte{0x0e}, ErrMalformed, "field 1"},
		{"update wire type 7", TypeUpdate, []byte{0x7f}, ErrMalformed, "field 15"},
		{"update unterminated group", TypeUpdate, []byte{0x0b}, ErrMalformed, "field 1"},
		{"update mismatched group end", TypeUpdate, []byte{0x0b, 0x14}, ErrMalformed, "field 1"},
		{"update bad destination", TypeUpdate, []byte{0x1a, 0x02, 0x12, 0x05}, ErrMalformed, "destination: field 2"},
		{"update bad nextHop", TypeUpdate, []byte{0x22, 0x01, 0x80}, ErrMalformed, "nextHop: field tag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Decode(tt.typ, tt.body)
			if err == nil {
				t.Fatalf("Decode(%s, %x) = %#v, want error", tt.typ, tt.body, m)
			}
			s, serr := sentinelOf(err)
			if serr != nil {
				t.Fatal(serr)
			}
			if s != tt.want {
				t.Errorf("error %q wraps %v, want %v", err, s, tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.want.Error()+": ") {
				t.Errorf("error %q does not start with %q", err, tt.want.Error()+": ")
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not mention %q", err, tt.msg)
			}
			if tt.typ == TypeUpdate {
				_, rerr := referenceDecodeUpdate(tt.body)
				if len(tt.body) <= MaxBodyLen && !errors.Is(rerr, tt.want) {
					t.Errorf("reference decoder: got %v, want %v", rerr, tt.want)
				}
			}
		})
	}
}

// TestDecodeProto3 checks the proto3 decoding rules on hand-made UPDATE
// bodies, for the fast decoder and the reference decoder alike.
func TestDecodeProto3(t *testing.T) {
	// Small protowire builders.
	varint := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
	}
	bytesField := func(num protowire.Number, parts ...[]byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), bytes.Join(parts, nil))
	}
	fixed32 := func(num protowire.Number, v uint32) []byte {
		return protowire.AppendFixed32(protowire.AppendTag(nil, num, protowire.Fixed32Type), v)
	}
	fixed64 := func(num protowire.Number, v uint64) []byte {
		return protowire.AppendFixed64(protowire.AppendTag(nil, num, protowire.Fixed64Type), v)
	}
	group := func(num protowire.Number, inner ...[]byte) []byte {
		b := protowire.AppendTag(nil, num, protowire.StartGroupType)
		b = append(b, bytes.Join(inner, nil)...)
		return protowire.AppendTag(b, num, protowire.EndGroupType)
	}
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	a4 := []byte{10, 0, 23, 0}
	nh1 := netip.MustParseAddr("2001:db8::1").AsSlice()
	nh2 := netip.MustParseAddr("2001:db8::2").AsSlice()
	dest := bytesField(3, bytesField(2, a4), varint(3, 24))
	nexthop := bytesField(4, bytesField(1, nh1))
	base := mustRoute(t, "23#10.0.23.0/24#2001:db8::1")
	with := func(change func(*route.Route)) route.Route {
		r := base
		change(&r)
		return r
	}
	unknowns := join(varint(15, 7), bytesField(100, []byte("future")), fixed32(6, 1), fixed64(7, 2), group(8, varint(1, 1), group(2)), varint(1<<29-1, 1))

	tests := []struct {
		name string
		body []byte
		want Update
		err  error
	}{
		{"canonical", join(varint(2, 23), dest, nexthop), Update{Route: base}, nil},
		{"fields out of order", join(nexthop, dest, varint(2, 23)), Update{Route: base}, nil},
		{"unknown fields everywhere", join(unknowns, varint(2, 23), unknowns,
			bytesField(3, unknowns, bytesField(2, a4), unknowns, varint(3, 24), unknowns),
			bytesField(4, unknowns, bytesField(1, nh1), unknowns), unknowns), Update{Route: base}, nil},
		{"last scalar wins", join(varint(2, 5), varint(1, 1), dest, varint(2, 23), nexthop, varint(1, 0)), Update{Route: base}, nil},
		{"sub-messages merge", join(varint(2, 23), bytesField(3, bytesField(2, a4)), nexthop, bytesField(3, varint(3, 24))), Update{Route: base}, nil},
		{"merge keeps last bytes", join(varint(2, 23), dest, bytesField(4, bytesField(1, nh2), varint(3, 2)), bytesField(4, bytesField(1, nh1))),
			Update{Route: with(func(r *route.Route) { r.NextHop.Type = route.NextHopLoadBalancerTarget })}, nil},
		{"empty bytes override", join(varint(2, 23), dest, nexthop, bytesField(3, bytesField(2))), Update{}, ErrInvalid},
		{"empty sub-message is present", join(varint(2, 23), bytesField(3), nexthop), Update{}, ErrInvalid},
		{"wrong wire type is skipped", join(varint(2, 23), fixed32(2, 99), bytesField(1, []byte{1}), dest, nexthop, fixed64(1, 1)), Update{Route: base}, nil},
		{"sub-message with wrong wire type is skipped", join(varint(2, 23), dest, nexthop, varint(3, 1), group(4, varint(1, 1))), Update{Route: base}, nil},
		{"only wrong-typed destination", join(varint(2, 23), varint(3, 1), nexthop), Update{}, ErrInvalid},
		{"enum truncated to int32", join(varint(1, 1<<32|1), varint(2, 23), dest, nexthop), Update{Action: ActionRemove, Route: base}, nil},
		{"uint32 truncated", join(varint(2, 1<<32|23), dest, nexthop), Update{Route: base}, nil},
		{"non-minimal varint", join([]byte{0x10, 0x97, 0x80, 0x80, 0x00}, dest, nexthop), Update{Route: base}, nil},
		{"non-minimal tag", join([]byte{0x90, 0x00, 0x17}, dest, nexthop), Update{Route: base}, nil},
		{"host bits masked", join(varint(2, 23), bytesField(3, bytesField(2, []byte{10, 0, 23, 77}), varint(3, 24)), nexthop), Update{Route: base}, nil},
		{"IPv4 nexthop", join(varint(2, 23), dest, bytesField(4, bytesField(1, []byte{192, 0, 2, 1}))),
			Update{Route: with(func(r *route.Route) { r.NextHop.Address = netip.MustParseAddr("192.0.2.1") })}, nil},
		{"IPv4-mapped IPv6 prefix", join(varint(2, 23), bytesField(3, varint(1, 1), bytesField(2, netip.MustParseAddr("::ffff:10.0.23.0").AsSlice()), varint(3, 120)), nexthop),
			Update{Route: with(func(r *route.Route) { r.Prefix = netip.MustParsePrefix("::ffff:10.0.23.0/120") })}, nil},
		{"explicit defaults", join(varint(1, 0), varint(2, 23), bytesField(3, varint(1, 0), bytesField(2, a4), varint(3, 24)),
			bytesField(4, bytesField(1, nh1), varint(2, 0), varint(3, 0), varint(4, 0), varint(5, 0))), Update{Route: base}, nil},
		{"NAT", join(varint(2, 23), dest, bytesField(4, bytesField(1, nh1), varint(2, 5), varint(3, 1), varint(4, 0), varint(5, 65535))),
			Update{Route: with(func(r *route.Route) {
				r.NextHop.TargetVNI, r.NextHop.Type, r.NextHop.NATPortTo = 5, route.NextHopNAT, 65535
			})}, nil},
		{"empty body", nil, Update{}, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, dec := range []struct {
				name string
				f    func([]byte) (Update, error)
			}{{"fast", DecodeUpdate}, {"reference", referenceDecodeUpdate}} {
				got, err := dec.f(tt.body)
				if tt.err != nil {
					if !errors.Is(err, tt.err) {
						t.Errorf("%s: got %v, %v; want error %v", dec.name, got, err, tt.err)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", dec.name, err)
					continue
				}
				if got != tt.want {
					t.Errorf("%s: got %v %v, want %v %v", dec.name, got.Action, got.Route, tt.want.Action, tt.want.Route)
				}
			}
		})
	}
}

func TestDecodeOtherMessages(t *testing.T) {
	tests := []struct {
		name string
		typ  Type
		body []byte
		want Message
	}{
		{"hello", TypeHello, mustMarshal(t, &pb.Hello{KeepaliveInterval: 5}), Hello{Keepalive: 5}},
		{"hello server with extension fields", TypeHello, append(mustMarshal(t, &pb.Hello{KeepaliveInterval: 1<<32 - 1, IsServer: true}), 0x18, 0x01, 0x22, 0x00), Hello{Keepalive: 1<<32 - 1, IsServer: true, Features: FeatureEndOfSync}},
		{"hello with unknown future fields", TypeHello, append(mustMarshal(t, &pb.Hello{KeepaliveInterval: 3}), 0x78, 0x01), Hello{Keepalive: 3}},
		{"hello with all extensions", TypeHello, mustMarshal(t, &pb.Hello{KeepaliveInterval: 5, Features: 3, GracefulRestartTime: 120, Name: "hv-17"}), Hello{Keepalive: 5, Features: 3, GracefulRestart: 120, Name: "hv-17"}},
		{"end-of-sync vni", TypeEndOfSync, mustMarshal(t, &pb.EndOfSync{Vni: 23}), EndOfSync{VNI: 23}},
		{"end-of-sync announcements", TypeEndOfSync, mustMarshal(t, &pb.EndOfSync{Announcements: true}), EndOfSync{Announcements: true}},
		{"hello isServer non-canonical bool", TypeHello, []byte{0x08, 0x01, 0x10, 0x80, 0x01}, Hello{Keepalive: 1, IsServer: true}},
		{"keepalive empty", TypeKeepalive, nil, Keepalive{}},
		{"keepalive with unknown fields", TypeKeepalive, []byte{0x08, 0x01, 0x12, 0x00}, Keepalive{}},
		{"subscribe 0", TypeSubscribe, nil, Subscribe{}},
		{"subscribe max", TypeSubscribe, mustMarshal(t, &pb.Subscription{Vni: uint32(route.MaxVNI)}), Subscribe{VNI: route.MaxVNI}},
		{"unsubscribe", TypeUnsubscribe, mustMarshal(t, &pb.Subscription{Vni: 24}), Unsubscribe{VNI: 24}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(tt.typ, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestAppendFrame(t *testing.T) {
	nat := mustRoute(t, "23#10.0.24.0/24#2001:db8::2#NAT#1000#2000")
	tests := []struct {
		name string
		m    Message
		want string // hex
	}{
		{"hello", Hello{Keepalive: 3}, "010002010803"},
		{"hello pointer", &Hello{Keepalive: 3, IsServer: true}, "0100040108031001"},
		{"keepalive", Keepalive{}, "01000002"},
		{"keepalive pointer", &Keepalive{}, "01000002"},
		{"subscribe", Subscribe{VNI: 23}, "010002030817"},
		{"subscribe 0", Subscribe{}, "01000003"},
		{"unsubscribe", &Unsubscribe{VNI: 24}, "010002040818"},
		{"update", Update{Route: nat}, "0100280510171a0812040a0018001818221a0a1020010db8000000000000000000000002180120e80728d00f"},
		{"update pointer", &Update{Action: ActionRemove, Route: nat}, "01002a05080110171a0812040a0018001818221a0a1020010db8000000000000000000000002180120e80728d00f"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("prefix")
			got, err := AppendFrame(prefix, tt.m)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(got, []byte("prefix")) {
				t.Fatalf("dst not kept: %q", got)
			}
			if h := hex.EncodeToString(got[len(prefix):]); h != tt.want {
				t.Fatalf("got %s, want %s", h, tt.want)
			}
		})
	}
}

func TestAppendFrameErrors(t *testing.T) {
	valid := mustRoute(t, "23#10.0.23.0/24#2001:db8::1")
	tests := []struct {
		name string
		m    Message
		want error
		msg  string
	}{
		{"nil", nil, ErrInvalid, "cannot encode message <nil>"},
		{"nil pointer", (*Update)(nil), ErrInvalid, "cannot encode message *wire.Update"},
		{"hello keepalive 0", Hello{IsServer: true}, ErrInvalid, "hello keepaliveInterval 0"},
		{"subscribe vni 2^24", Subscribe{VNI: 1 << 24}, ErrInvalid, "subscribe vni 16777216 exceeds 24 bits"},
		{"unsubscribe vni 2^24", &Unsubscribe{VNI: 1 << 24}, ErrInvalid, "unsubscribe vni 16777216 exceeds 24 bits"},
		{"update action 2", Update{Action: 2, Route: valid}, ErrInvalid, "update action 2"},
		{"update zero route", Update{}, ErrInvalid, "update route: prefix: missing"},
		{"update host bits", Update{Route: route.Route{VNI: 1, Prefix: netip.MustParsePrefix("10.0.0.1/24"), NextHop: valid.NextHop}}, ErrInvalid, "host bits set"},
		{"update vni", Update{Route: route.Route{VNI: 1 << 24, Prefix: valid.Prefix, NextHop: valid.NextHop}}, ErrInvalid, "VNI 16777216"},
		{"update NAT range on LB", Update{Route: route.Route{Prefix: valid.Prefix, NextHop: route.NextHop{
			Address: valid.NextHop.Address, Type: route.NextHopLoadBalancerTarget, NATPortTo: 1}}}, ErrInvalid, "NAT port range"},
		{"update nexthop missing", Update{Route: route.Route{Prefix: valid.Prefix}}, ErrInvalid, "nexthop address: missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte{1, 2, 3}
			got, err := AppendFrame(dst, tt.m)
			if err == nil {
				t.Fatalf("got %x, want error", got)
			}
			if s, serr := sentinelOf(err); serr != nil || s != tt.want {
				t.Fatalf("error %q: wraps %v (%v), want %v", err, s, serr, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not mention %q", err, tt.msg)
			}
			if !bytes.Equal(got, dst) {
				t.Errorf("dst changed to %x", got)
			}
		})
	}
}

// randomRoute returns a random valid route covering every field's range.
func randomRoute(rng *rand.Rand) route.Route {
	var r route.Route
	switch rng.IntN(4) {
	case 0:
		r.VNI = 0
	case 1:
		r.VNI = route.MaxVNI
	default:
		r.VNI = route.VNI(rng.IntN(int(route.MaxVNI) + 1))
	}
	var addr netip.Addr
	switch rng.IntN(3) {
	case 0:
		var a [4]byte
		putRandom(rng, a[:])
		addr = netip.AddrFrom4(a)
	case 1:
		var a [16]byte
		putRandom(rng, a[:])
		addr = netip.AddrFrom16(a)
	default: // IPv4-mapped IPv6
		var a [4]byte
		putRandom(rng, a[:])
		addr = netip.AddrFrom16(netip.AddrFrom4(a).As16())
	}
	r.Prefix = netip.PrefixFrom(addr, rng.IntN(addr.BitLen()+1)).Masked()

	if rng.IntN(4) == 0 {
		var a [4]byte
		putRandom(rng, a[:])
		r.NextHop.Address = netip.AddrFrom4(a)
	} else {
		var a [16]byte
		putRandom(rng, a[:])
		r.NextHop.Address = netip.AddrFrom16(a)
	}
	if rng.IntN(2) == 0 {
		r.NextHop.TargetVNI = route.VNI(rng.IntN(int(route.MaxVNI) + 1))
	}
	r.NextHop.Type = route.NextHopType(rng.IntN(3))
	if r.NextHop.Type == route.NextHopNAT {
		a, b := uint16(rng.IntN(1<<16)), uint16(rng.IntN(1<<16))
		switch rng.IntN(4) {
		case 0:
			a = 0
		case 1:
			b = 65535
		}
		r.NextHop.NATPortFrom, r.NextHop.NATPortTo = min(a, b), max(a, b)
	}
	return r
}

func putRandom(rng *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	// Plenty of zero bytes exercise the edges of the address space.
	if rng.IntN(3) == 0 {
		clear(b[rng.IntN(len(b)):])
	}
}

func TestUpdateMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var buf []byte
	for i := range 20000 {
		r := randomRoute(rng)
		if err := r.Validate(); err != nil {
			t.Fatalf("random route %v invalid: %v", r, err)
		}
		a := Action(rng.IntN(2))
		want := referenceUpdateBody(t, a, r)
		buf = AppendUpdate(buf[:0], a, r)
		if got := buf[HeaderLen:]; !bytes.Equal(got, want) {
			t.Fatalf("%d: %s %v:\nAppendUpdate %x\nproto.Marshal %x", i, a, r, got, want)
		}
		if n := int(buf[1])<<8 | int(buf[2]); buf[0] != Version || n != len(want) || Type(buf[3]) != TypeUpdate {
			t.Fatalf("%d: bad header %x for body length %d", i, buf[:HeaderLen], len(want))
		}
		fast, err := DecodeUpdate(want)
		if err != nil {
			t.Fatalf("%d: DecodeUpdate(%x): %v", i, want, err)
		}
		ref, err := referenceDecodeUpdate(want)
		if err != nil {
			t.Fatalf("%d: reference decode(%x): %v", i, want, err)
		}
		if u := (Update{Action: a, Route: r}); fast != u || ref != u {
			t.Fatalf("%d: %x decodes to %v (fast) and %v (reference), want %v", i, want, fast, ref, u)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	msgs := []Message{
		Hello{Keepalive: 1}, Hello{Keepalive: 1<<32 - 1, IsServer: true},
		Keepalive{},
		Subscribe{}, Subscribe{VNI: route.MaxVNI}, Unsubscribe{VNI: 7},
	}
	for range 1000 {
		msgs = append(msgs, Update{Action: Action(rng.IntN(2)), Route: randomRoute(rng)})
	}
	var stream []byte
	for _, m := range msgs {
		var err error
		if stream, err = AppendFrame(stream, m); err != nil {
			t.Fatalf("AppendFrame(%#v): %v", m, err)
		}
	}
	r := NewReader(bytes.NewReader(stream))
	for i, want := range msgs {
		got, err := r.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got != want {
			t.Fatalf("message %d: got %#v, want %#v", i, got, want)
		}
	}
	if _, err := r.ReadMessage(); err != io.EOF {
		t.Fatalf("at the end: got %v, want io.EOF", err)
	}
}

func TestAllocs(t *testing.T) {
	r := mustRoute(t, "23#10.0.24.0/24#2001:db8::2#NAT#1000#2000")
	buf := make([]byte, 0, 256)
	body := AppendUpdate(nil, ActionAdd, r)[HeaderLen:]
	tests := []struct {
		name string
		f    func()
	}{
		{"AppendUpdate", func() { buf = AppendUpdate(buf[:0], ActionRemove, r) }},
		{"DecodeUpdate", func() {
			if _, err := DecodeUpdate(body); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, tt.f); n != 0 {
				t.Errorf("%v allocations per run, want 0", n)
			}
		})
	}
}

// TestAppendUpdateUnchecked checks that AppendUpdate, which does not
// validate, still writes a well-formed frame for invalid input.
func TestAppendUpdateUnchecked(t *testing.T) {
	tests := []struct {
		name string
		a    Action
		r    route.Route
	}{
		{"zero route", ActionAdd, route.Route{}},
		{"bad action", Action(200), mustRoute(t, "23#10.0.23.0/24#2001:db8::1")},
		{"every field out of range", Action(255), route.Route{
			VNI:    1<<32 - 1,
			Prefix: netip.PrefixFrom(netip.MustParseAddr("2001:db8::1%eth0"), 128),
			NextHop: route.NextHop{
				Address: netip.MustParseAddr("fe80::1%eth0"), TargetVNI: 1<<32 - 1,
				Type: 255, NATPortFrom: 65535, NATPortTo: 65535,
			},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := AppendUpdate(nil, tt.a, tt.r)
			if n := int(frame[1])<<8 | int(frame[2]); n != len(frame)-HeaderLen || n > MaxBodyLen {
				t.Fatalf("frame %x: bad length", frame)
			}
			if err := proto.Unmarshal(frame[HeaderLen:], &pb.Update{}); err != nil {
				t.Fatalf("frame %x: body is not protobuf: %v", frame, err)
			}
			if _, err := AppendFrame(nil, Update{Action: tt.a, Route: tt.r}); !errors.Is(err, ErrInvalid) {
				t.Errorf("AppendFrame: %v, want ErrInvalid", err)
			}
		})
	}
}
