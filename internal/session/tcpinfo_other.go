//go:build !linux

package session

import "net"

// newEvidenceSource returns nil: outside Linux the socket is not sampled
// and plain v1 peers are paced at a fixed rate.
func newEvidenceSource(net.Conn) evidenceSource { return nil }
