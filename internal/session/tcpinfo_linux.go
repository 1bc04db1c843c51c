//go:build linux

package session

import (
	"crypto/tls"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpSource samples a TCP socket: SIOCOUTQ for the bytes not yet
// acknowledged, TCP_INFO for the window the peer advertised, the bytes not
// sent yet (tcpi_notsent_bytes, which is SIOCOUTQNSD) and the MSS.
type tcpSource struct {
	rc syscall.RawConn
	// overhead is what a layer above TCP adds to a write (TLS records).
	overhead int
}

// tlsOverhead bounds what a TLS record adds to the bytes written into it
// (header, content type, authentication tag).
const tlsOverhead = 64

// newEvidenceSource returns a source for conn's socket, or nil when conn is
// not TCP (net.Pipe, a Unix socket). A TLS connection is sampled through the
// TCP connection under it: its records are a little larger than what the
// peer reads out of them, which errs on the safe side.
func newEvidenceSource(conn net.Conn) evidenceSource {
	overhead := 0
	for {
		switch c := conn.(type) {
		case *net.TCPConn:
			rc, err := c.SyscallConn()
			if err != nil {
				return nil
			}
			return tcpSource{rc, overhead}
		case *tls.Conn:
			conn, overhead = c.NetConn(), tlsOverhead
		case interface{ NetConn() net.Conn }:
			conn = c.NetConn()
		default:
			return nil
		}
	}
}

func (t tcpSource) sample() (sample, error) {
	var s sample
	var serr error
	err := t.rc.Control(func(fd uintptr) {
		var outq int
		outq, serr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
		if serr != nil {
			return
		}
		var ti *unix.TCPInfo
		ti, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if serr != nil {
			return
		}
		s = sample{Outq: outq, Wnd: int(ti.Snd_wnd), Unsent: int(ti.Notsent_bytes),
			MSS: max(1, int(ti.Snd_mss)-t.overhead)}
	})
	if err != nil {
		return sample{}, err
	}
	return s, serr
}
