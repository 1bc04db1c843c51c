package wire

//go:generate go run golang.org/x/tools/cmd/stringer@v0.52.0 -type=Type,Action -linecomment -output=string.go

import (
	"errors"
)

// Framing constants of protocol v1.
const (
	// Version is the only protocol version, byte 0 of every header.
	Version = 1
	// HeaderLen is the length of a frame header: version, body length
	// (2 bytes, big endian) and type.
	HeaderLen = 4
	// MaxBodyLen is the largest body a frame may carry, so that a whole
	// message fits one packet on a minimum-MTU (1280-byte) IPv6 path.
	MaxBodyLen = 1188
)

// Type is the message type, byte 3 of a frame header.
type Type uint8

// The message types of protocol v1.
const (
	TypeHello       Type = 1 // HELLO
	TypeKeepalive   Type = 2 // KEEPALIVE
	TypeSubscribe   Type = 3 // SUBSCRIBE
	TypeUnsubscribe Type = 4 // UNSUBSCRIBE
	TypeUpdate      Type = 5 // UPDATE
	// TypeEndOfSync is an extension (docs/protocol-extensions.md): it is
	// only sent to, and only accepted from, peers that negotiated it.
	TypeEndOfSync Type = 6 // END_OF_SYNC
)

// Valid reports whether t is one of the defined message types.
func (t Type) Valid() bool { return t >= TypeHello && t <= TypeEndOfSync }

// Feature bits advertised in Hello.Features (extensions of this
// implementation; see docs/protocol-extensions.md).
const (
	// FeatureEndOfSync: the peer sends and understands END_OF_SYNC.
	FeatureEndOfSync uint32 = 1 << 0
	// FeatureGracefulRestart: the peer keeps the routes of a vanished
	// session for Hello.GracefulRestart seconds.
	FeatureGracefulRestart uint32 = 1 << 1
)

// Action says whether an Update announces or withdraws a route. The
// numeric values are those of the wire format.
type Action uint8

// The actions of an Update.
const (
	ActionAdd    Action = 0 // ADD
	ActionRemove Action = 1 // REMOVE
)

// Valid reports whether a is ActionAdd or ActionRemove.
func (a Action) Valid() bool { return a <= ActionRemove }

// Sentinel errors. Every protocol error returned by this package wraps
// exactly one of them, with details naming the offending field or value;
// test with errors.Is.
var (
	// ErrBadVersion means a frame header carries a version other than 1.
	ErrBadVersion = errors.New("bad protocol version")
	// ErrUnknownType means a frame header carries an undefined message type.
	ErrUnknownType = errors.New("unknown message type")
	// ErrTooLarge means a body is longer than MaxBodyLen.
	ErrTooLarge = errors.New("frame too large")
	// ErrMalformed means a body does not decode as the protobuf message of
	// its type.
	ErrMalformed = errors.New("malformed message")
	// ErrInvalid means a message decodes but carries an invalid value, or
	// a message to encode is invalid.
	ErrInvalid = errors.New("invalid message")
)
