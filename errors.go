package metalbond

import (
	"errors"
	"sync/atomic"
	"syscall"

	"github.com/metalbond/metalbond/internal/session"
	"github.com/metalbond/metalbond/internal/wire"
)

// Errors returned by the library. Check them with errors.Is.
var (
	// ErrClosed is returned by calls on a Client that has been closed.
	ErrClosed = errors.New("metalbond: closed")
	// ErrInvalidRoute wraps the validation error of a route passed to
	// Announce or Withdraw.
	ErrInvalidRoute = errors.New("metalbond: invalid route")
	// ErrInvalidVNI is returned for a VNI that does not fit 24 bits.
	ErrInvalidVNI = errors.New("metalbond: invalid VNI")
)

// protocolErrorKind classifies why a peer's message was refused.
type protocolErrorKind uint8

const (
	errBadVersion protocolErrorKind = iota
	errUnknownType
	errTooLarge
	errMalformed
	errInvalid
	errUnexpected
	numProtocolErrorKinds
)

var protocolErrorNames = [numProtocolErrorKinds]string{
	"bad_version", "unknown_type", "too_large", "malformed", "invalid", "unexpected_message",
}

func (k protocolErrorKind) String() string { return protocolErrorNames[k] }

func protocolErrorKindOf(err error) (protocolErrorKind, bool) {
	switch {
	case errors.Is(err, wire.ErrBadVersion):
		return errBadVersion, true
	case errors.Is(err, wire.ErrUnknownType):
		return errUnknownType, true
	case errors.Is(err, wire.ErrTooLarge):
		return errTooLarge, true
	case errors.Is(err, wire.ErrMalformed):
		return errMalformed, true
	case errors.Is(err, wire.ErrInvalid):
		return errInvalid, true
	case errors.Is(err, session.ErrProtocol):
		return errUnexpected, true
	}
	return 0, false
}

func isProtocolError(err error) bool {
	_, ok := protocolErrorKindOf(err)
	return ok
}

// isTemporaryAcceptError reports accept errors worth retrying: running out
// of file descriptors or buffers, or a connection aborted before accept.
func isTemporaryAcceptError(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}

// atomicCounter is a counter safe for concurrent use.
type atomicCounter struct{ n atomic.Uint64 }

func (c *atomicCounter) add() uint64  { return c.n.Add(1) }
func (c *atomicCounter) load() uint64 { return c.n.Load() }
