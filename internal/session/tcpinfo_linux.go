//go:build linux

package session

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpSource samples a TCP socket: SIOCOUTQ for the bytes not yet
// acknowledged, TCP_INFO for the window the peer advertised.
type tcpSource struct{ rc syscall.RawConn }

// newEvidenceSource returns a source for conn's socket, or nil when conn is
// not TCP (net.Pipe, a Unix socket). A TLS connection is sampled through the
// TCP connection under it: its records are a little larger than what the
// peer reads out of them, which errs on the safe side.
func newEvidenceSource(conn net.Conn) evidenceSource {
	for {
		switch c := conn.(type) {
		case *net.TCPConn:
			rc, err := c.SyscallConn()
			if err != nil {
				return nil
			}
			return tcpSource{rc}
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
		s = sample{Outq: outq, Wnd: int(ti.Snd_wnd)}
	})
	if err != nil {
		return sample{}, err
	}
	return s, serr
}
