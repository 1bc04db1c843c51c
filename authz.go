package metalbond

import (
	"net"

	"github.com/metalbond/metalbond/route"
)

// Authorizer decides what a peer of a Server may do. With TLS client
// certificates it maps the certificate's identity to the VNIs the peer may
// announce into and subscribe to.
type Authorizer interface {
	// Authorize is called once per session, before the v1 handshake, with
	// the accepted connection; for a TLS listener it is a *tls.Conn whose
	// handshake has completed. An error refuses the session: the
	// connection is closed and the refusal logged and counted.
	Authorize(conn net.Conn) (Permissions, error)
}

// Permissions are what one peer may do. The Server asks for every
// SUBSCRIBE and UPDATE, so an implementation may change its answers while
// the session runs (a policy reloaded on SIGHUP). A refused message is
// ignored, logged and counted; the session stays up. Implementations must
// be safe for concurrent use and fast: they are on the update path.
type Permissions interface {
	// Identity names the peer in logs and status pages.
	Identity() string
	MayAnnounce(vni route.VNI) bool
	MaySubscribe(vni route.VNI) bool
}
