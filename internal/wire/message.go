package wire

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/metalbond/metalbond/internal/wire/pb"
	"github.com/metalbond/metalbond/route"
)

// Message is a decoded message body. It is sealed: its implementations are
// Hello, Keepalive, Subscribe, Unsubscribe, Update and EndOfSync. Decode returns them
// as values (not pointers), so a type switch uses the plain type names.
type Message interface {
	// Type returns the message type that carries this body.
	Type() Type
	isMessage()
}

// Hello opens a session. Both sides send one; the agreed keepalive
// interval is the smaller of the two.
type Hello struct {
	// Keepalive is the proposed keepalive interval in seconds; 0 is invalid.
	Keepalive uint32
	// IsServer is set by route servers.
	IsServer bool
	// Features is the set of extensions the sender supports (Feature*
	// bits); zero for plain v1 peers.
	Features uint32
	// GracefulRestart is how many seconds the sender keeps the routes of
	// a peer whose session ended (with FeatureGracefulRestart).
	GracefulRestart uint32
	// Name identifies the sender across reconnects; empty for v1 peers.
	Name string
}

// EndOfSync marks the end of an initial synchronisation (an extension):
// from a server, the table of VNI is complete; from a client with
// Announcements set, all its routes have been announced.
type EndOfSync struct {
	VNI           route.VNI
	Announcements bool
}

// Keepalive proves that the peer is alive. It has an empty body.
type Keepalive struct{}

// Subscribe asks for the routes of a VNI.
type Subscribe struct{ VNI route.VNI }

// Unsubscribe stops the routes of a VNI.
type Unsubscribe struct{ VNI route.VNI }

// Update announces (ActionAdd) or withdraws (ActionRemove) one route.
type Update struct {
	Action Action
	Route  route.Route
}

// Type returns TypeHello.
func (Hello) Type() Type { return TypeHello }

// Type returns TypeKeepalive.
func (Keepalive) Type() Type { return TypeKeepalive }

// Type returns TypeSubscribe.
func (Subscribe) Type() Type { return TypeSubscribe }

// Type returns TypeUnsubscribe.
func (Unsubscribe) Type() Type { return TypeUnsubscribe }

// Type returns TypeUpdate.
func (Update) Type() Type { return TypeUpdate }

// Type returns TypeEndOfSync.
func (EndOfSync) Type() Type { return TypeEndOfSync }

func (Hello) isMessage()       {}
func (Keepalive) isMessage()   {}
func (Subscribe) isMessage()   {}
func (Unsubscribe) isMessage() {}
func (Update) isMessage()      {}
func (EndOfSync) isMessage()   {}

// Decode decodes and validates the body of a message of type t. The
// result is one of Hello, Keepalive, Subscribe, Unsubscribe, Update or
// EndOfSync (as a value) and does not alias body.
//
// It returns an error wrapping ErrUnknownType for an undefined type,
// ErrTooLarge for a body longer than MaxBodyLen, ErrMalformed for a body
// that is not valid protobuf and ErrInvalid for a value that is not
// allowed. A KEEPALIVE body must be a valid (normally empty) protobuf
// message; unknown fields are ignored in every type.
//
// Decode boxes the message in an interface, which allocates for Update;
// DecodeUpdate does not. Decode is safe for concurrent use.
func Decode(t Type, body []byte) (Message, error) {
	if !t.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrUnknownType, uint8(t))
	}
	if len(body) > MaxBodyLen {
		return nil, fmt.Errorf("%w: %s body length %d > %d", ErrTooLarge, t, len(body), MaxBodyLen)
	}
	switch t {
	case TypeHello:
		var h pb.Hello
		if err := proto.Unmarshal(body, &h); err != nil {
			return nil, fmt.Errorf("%w: hello: %v", ErrMalformed, err)
		}
		if h.KeepaliveInterval == 0 {
			return nil, fmt.Errorf("%w: hello keepaliveInterval 0: must be at least 1 second", ErrInvalid)
		}
		if len(h.Name) > 255 {
			return nil, fmt.Errorf("%w: hello name: %d bytes, at most 255", ErrInvalid, len(h.Name))
		}
		return Hello{Keepalive: h.KeepaliveInterval, IsServer: h.IsServer,
			Features: h.Features, GracefulRestart: h.GracefulRestartTime, Name: h.Name}, nil
	case TypeKeepalive:
		if err := skipMessage(body); err != nil {
			return nil, fmt.Errorf("%w: keepalive: %v", ErrMalformed, err)
		}
		return Keepalive{}, nil
	case TypeSubscribe, TypeUnsubscribe:
		var s pb.Subscription
		if err := proto.Unmarshal(body, &s); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, typeName(t), err)
		}
		vni := route.VNI(s.Vni)
		if !vni.Valid() {
			return nil, fmt.Errorf("%w: %s vni %d exceeds 24 bits", ErrInvalid, typeName(t), s.Vni)
		}
		if t == TypeSubscribe {
			return Subscribe{VNI: vni}, nil
		}
		return Unsubscribe{VNI: vni}, nil
	case TypeEndOfSync:
		var e pb.EndOfSync
		if err := proto.Unmarshal(body, &e); err != nil {
			return nil, fmt.Errorf("%w: end-of-sync: %v", ErrMalformed, err)
		}
		vni := route.VNI(e.Vni)
		if !vni.Valid() {
			return nil, fmt.Errorf("%w: end-of-sync vni %d exceeds 24 bits", ErrInvalid, e.Vni)
		}
		return EndOfSync{VNI: vni, Announcements: e.Announcements}, nil
	default: // TypeUpdate
		u, err := DecodeUpdate(body)
		if err != nil {
			return nil, err
		}
		return u, nil
	}
}

// typeName is the lowercase message name used in error details.
func typeName(t Type) string {
	switch t {
	case TypeSubscribe:
		return "subscribe"
	case TypeUnsubscribe:
		return "unsubscribe"
	}
	return t.String()
}

// AppendFrame appends the frame (header and body) of m to dst and returns
// the extended slice. It accepts the message types by value or by pointer.
// It returns an error wrapping ErrInvalid, and dst unchanged, if m is nil,
// not one of this package's types or carries a value that Decode would
// refuse, and ErrTooLarge if the body would exceed MaxBodyLen.
//
// Bodies are encoded as proto.Marshal encodes them, byte for byte. Updates
// take the allocation-free path of AppendUpdate after validation.
// AppendFrame is safe for concurrent use.
func AppendFrame(dst []byte, m Message) ([]byte, error) {
	switch v := m.(type) {
	case *Hello:
		if v != nil {
			return AppendFrame(dst, *v)
		}
	case *Keepalive:
		if v != nil {
			return AppendFrame(dst, *v)
		}
	case *Subscribe:
		if v != nil {
			return AppendFrame(dst, *v)
		}
	case *Unsubscribe:
		if v != nil {
			return AppendFrame(dst, *v)
		}
	case *Update:
		if v != nil {
			return AppendFrame(dst, *v)
		}
	case *EndOfSync:
		if v != nil {
			return AppendFrame(dst, *v)
		}
	case Hello:
		if v.Keepalive == 0 {
			return dst, fmt.Errorf("%w: hello keepaliveInterval 0: must be at least 1 second", ErrInvalid)
		}
		if len(v.Name) > 255 {
			return dst, fmt.Errorf("%w: hello name: %d bytes, at most 255", ErrInvalid, len(v.Name))
		}
		return appendProto(dst, TypeHello, &pb.Hello{KeepaliveInterval: v.Keepalive, IsServer: v.IsServer,
			Features: v.Features, GracefulRestartTime: v.GracefulRestart, Name: v.Name})
	case EndOfSync:
		if !v.VNI.Valid() {
			return dst, fmt.Errorf("%w: end-of-sync vni %d exceeds 24 bits", ErrInvalid, v.VNI)
		}
		return appendProto(dst, TypeEndOfSync, &pb.EndOfSync{Vni: uint32(v.VNI), Announcements: v.Announcements})
	case Keepalive:
		return append(dst, Version, 0, 0, byte(TypeKeepalive)), nil
	case Subscribe:
		return appendSubscription(dst, TypeSubscribe, v.VNI)
	case Unsubscribe:
		return appendSubscription(dst, TypeUnsubscribe, v.VNI)
	case Update:
		if err := validateUpdate(v.Action, v.Route); err != nil {
			return dst, err
		}
		return AppendUpdate(dst, v.Action, v.Route), nil
	}
	return dst, fmt.Errorf("%w: cannot encode message %T", ErrInvalid, m)
}

func appendSubscription(dst []byte, t Type, vni route.VNI) ([]byte, error) {
	if !vni.Valid() {
		return dst, fmt.Errorf("%w: %s vni %d exceeds 24 bits", ErrInvalid, typeName(t), vni)
	}
	return appendProto(dst, t, &pb.Subscription{Vni: uint32(vni)})
}

// appendProto appends a frame whose body is proto.Marshal(m).
func appendProto(dst []byte, t Type, m proto.Message) ([]byte, error) {
	start := len(dst)
	out := append(dst, Version, 0, 0, byte(t))
	out, err := proto.MarshalOptions{}.MarshalAppend(out, m)
	if err != nil {
		return dst, fmt.Errorf("%w: %s: %v", ErrInvalid, t, err)
	}
	n := len(out) - start - HeaderLen
	if n > MaxBodyLen {
		return dst, fmt.Errorf("%w: %s body length %d > %d", ErrTooLarge, t, n, MaxBodyLen)
	}
	putBodyLen(out[start:], n)
	return out, nil
}

// putBodyLen stores n as the body length of the header at the start of hdr.
func putBodyLen(hdr []byte, n int) {
	hdr[1] = byte(n >> 8)
	hdr[2] = byte(n)
}

// validateUpdate checks that AppendUpdate can encode (a, r) so that
// DecodeUpdate gives back exactly the same values.
func validateUpdate(a Action, r route.Route) error {
	if !a.Valid() {
		return fmt.Errorf("%w: update action %d: unknown (want 0 ADD or 1 REMOVE)", ErrInvalid, a)
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("%w: update route: %v", ErrInvalid, err)
	}
	return nil
}

// skipMessage checks that b is a valid encoding of a protobuf message
// whose fields are all unknown, by the rules proto.Unmarshal applies.
func skipMessage(b []byte) error {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return tagError(n)
		}
		b = b[n:]
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return fieldError(num, n)
		}
		b = b[n:]
	}
	return nil
}

// errCodeFieldNumber is the code consumeTag returns for a field number out
// of range; it is below the codes of package protowire.
const errCodeFieldNumber = -1000

// consumeTag parses a field tag as proto.Unmarshal does: the field number
// must be between 1 and protowire.MaxValidNumber (protowire.ConsumeTag
// accepts larger numbers). It returns a negative length on error; see
// tagError.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	var v uint64
	var n int
	if len(b) > 0 && b[0] < 0x80 {
		v, n = uint64(b[0]), 1
	} else if v, n = protowire.ConsumeVarint(b); n < 0 {
		return 0, 0, n
	}
	if num := v >> 3; num < uint64(protowire.MinValidNumber) || num > uint64(protowire.MaxValidNumber) {
		return 0, 0, errCodeFieldNumber
	}
	return protowire.Number(v >> 3), protowire.Type(v & 7), n
}

// tagError describes the failure code n of consumeTag. It does not wrap a
// sentinel; callers wrap it in ErrMalformed with %v.
func tagError(n int) error {
	if n == errCodeFieldNumber {
		return errors.New("invalid field number")
	}
	return fmt.Errorf("field tag: %v", protowire.ParseError(n))
}

// fieldError describes the failure code n of parsing the value of field num.
func fieldError(num protowire.Number, n int) error {
	return fmt.Errorf("field %d: %v", num, protowire.ParseError(n))
}
