// Package wire implements the MetalBond v1 wire format: framing, the
// protobuf message bodies, and their validation.
//
// Every message is a 4-byte header followed by a protobuf body:
//
//	 0        1        2        3        4
//	+--------+--------+--------+--------+------------------------+
//	|version |   body length   |  type  | body (length bytes)    |
//	|  = 1   | (big endian)    |        | protobuf, <= 1188 bytes|
//	+--------+--------+--------+--------+------------------------+
//
// The version is always 1 (Version). The body is at most MaxBodyLen (1188)
// bytes, so that a whole message fits a minimum-MTU IPv6 packet; a receiver
// rejects a larger length before reading the body. The types and their
// bodies (schema in package pb) are:
//
//	1 HELLO        Hello        keepaliveInterval (seconds, > 0), isServer
//	2 KEEPALIVE    (empty)
//	3 SUBSCRIBE    Subscription vni
//	4 UNSUBSCRIBE  Subscription vni
//	5 UPDATE       Update       action, vni, destination, nextHop
//
// Decoding follows proto3 rules, so that later versions can add fields:
// unknown fields are skipped, a repeated scalar field keeps its last value
// and repeated sub-messages are merged. Encoding produces exactly the bytes
// that proto.Marshal produces for the same message, as deployed peers do.
//
// Each message type has its own Go type (Hello, Keepalive, Subscribe,
// Unsubscribe, Update) behind the sealed Message interface. Decode and
// AppendFrame check every value (VNIs fit 24 bits, address lengths match
// the family, prefix lengths, NAT port ranges) and refuse what is invalid.
//
// UPDATE is the hot message: DecodeUpdate and AppendUpdate work on the
// protobuf encoding directly and allocate nothing. Reader parses frames
// out of a byte stream without copying or allocating.
//
// Errors wrap one of the sentinels ErrBadVersion, ErrUnknownType,
// ErrTooLarge, ErrMalformed and ErrInvalid (test with errors.Is), or an
// error of the underlying reader. The codec does not log and makes no
// policy decisions: a caller that gets a protocol error closes the
// connection.
package wire
