//go:build linux

package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netlink constants that golang.org/x/sys/unix does not define.
const (
	rtaNHID       = 30 // RTA_NH_ID: a route's nexthop object
	lwtIP6Dst     = 2  // LWTUNNEL_IP6_DST inside RTA_ENCAP / NHA_ENCAP
	grpTypeMpath  = 0  // NEXTHOP_GRP_TYPE_MPATH
	sizeofNhmsg   = 8  // struct nhmsg
	sizeofNhGrp   = 8  // struct nexthop_grp
	sizeofRtmsg   = unix.SizeofRtMsg
	sizeofNlmsghd = unix.SizeofNlMsghdr
)

// Limits of one pipelined chunk: at most maxChunkMsgs requests (so that the
// kernel's answers to a chunk full of failures fit into the receive buffer)
// and at most maxChunkBytes bytes in one write (below the send buffer).
const (
	maxChunkMsgs  = 1024
	maxChunkBytes = 192 << 10
	rcvBufBytes   = 8 << 20
	sndBufBytes   = 1 << 20
)

// errAckLost marks requests whose answer the kernel dropped because the
// receive buffer overflowed (ENOBUFS). Their outcome is unknown; callers
// treat them as failed and let reconciliation sort them out.
var errAckLost = errors.New("netlink answer lost (receive buffer overflow)")

// nlError is a request refused by the kernel: the errno and, when the
// kernel gave one, its extended-ack message ("Nexthop device is not up").
type nlError struct {
	errno unix.Errno
	msg   string
}

func (e *nlError) Error() string {
	if e.msg != "" {
		return e.msg + " (" + e.errno.Error() + ")"
	}
	return e.errno.Error()
}

func (e *nlError) Unwrap() error { return e.errno }

// conn is a NETLINK_ROUTE socket that writes many requests before it reads
// the answers: requests go out without NLM_F_ACK, so the kernel answers
// only the ones it refuses, and each chunk ends with an NLMSG_NOOP that
// asks for an ack. When that ack arrives every earlier answer has arrived
// too; errors are matched to requests by sequence number.
//
// A conn is not safe for concurrent use; Installer.ioMu serialises it.
type conn struct {
	fd   int
	pid  uint32
	seq  uint32
	rbuf []byte
	// kernel is the destination of sends; unix.Sendto writes into it,
	// so each conn has its own.
	kernel unix.SockaddrNetlink
}

// dial opens the socket in network namespace ns, or in the caller's own
// namespace when ns is not set (see nsSet).
func dial(ns netns.NsHandle) (*conn, error) {
	fd, err := socketAt(ns)
	if err != nil {
		return nil, fmt.Errorf("open netlink socket: %w", err)
	}
	c := &conn{fd: fd, rbuf: make([]byte, 1<<17), kernel: unix.SockaddrNetlink{Family: unix.AF_NETLINK}}
	if err := c.setup(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return c, nil
}

// nsSet reports whether ns names a namespace to work in. The zero value
// (fd 0, which is never a namespace handle in practice) and netns.None()
// mean "the current namespace".
func nsSet(ns netns.NsHandle) bool { return ns > 0 }

// socketAt creates a netlink socket inside ns. A socket stays bound to the
// namespace it was created in, so only its creation needs the switch. The
// switch happens on a dedicated, locked OS thread; if switching back fails,
// the goroutine exits with the thread still locked and the runtime throws
// that thread away instead of reusing it in the wrong namespace.
func socketAt(ns netns.NsHandle) (int, error) {
	return socketIn(ns, unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE)
}

// socketIn creates a socket of any kind inside ns (see socketAt); it is
// close-on-exec.
func socketIn(ns netns.NsHandle, domain, typ, proto int) (int, error) {
	typ |= unix.SOCK_CLOEXEC
	if !nsSet(ns) {
		return unix.Socket(domain, typ, proto)
	}
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("get current namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("enter namespace: %w", err)}
			return
		}
		fd, serr := unix.Socket(domain, typ, proto)
		if err := netns.Set(orig); err != nil {
			if serr == nil {
				unix.Close(fd)
			}
			ch <- result{-1, fmt.Errorf("leave namespace: %w", err)} // thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		ch <- result{fd, serr}
	}()
	r := <-ch
	return r.fd, r.err
}

func (c *conn) setup() error {
	// Large buffers keep a chunk's answers from overflowing. The FORCE
	// variants need CAP_NET_ADMIN; fall back to the capped ones.
	if err := unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBufBytes); err != nil {
		_ = unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBufBytes)
	}
	if err := unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sndBufBytes); err != nil {
		_ = unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndBufBytes)
	}
	// Answers carry only the request's header, not its body, plus the
	// kernel's error text. Strict checking lets dumps filter by table and
	// protocol in the kernel. All three are optional: old kernels work,
	// just with less detail or more filtering in user space.
	_ = unix.SetsockoptInt(c.fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	_ = unix.SetsockoptInt(c.fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
	_ = unix.SetsockoptInt(c.fd, unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1)
	// A safety net: never wait for the kernel forever.
	tv := unix.Timeval{Sec: 30}
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("netlink socket: set receive timeout: %w", err)
	}
	if err := unix.Bind(c.fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink socket: bind: %w", err)
	}
	sa, err := unix.Getsockname(c.fd)
	if err != nil {
		return fmt.Errorf("netlink socket: getsockname: %w", err)
	}
	c.pid = sa.(*unix.SockaddrNetlink).Pid
	return nil
}

func (c *conn) close() error { return unix.Close(c.fd) }

func (c *conn) nextSeq() uint32 {
	c.seq++
	if c.seq == 0 {
		c.seq = 1
	}
	return c.seq
}

func (c *conn) send(b []byte) error {
	for {
		err := unix.Sendto(c.fd, b, 0, &c.kernel)
		if err == unix.EINTR {
			continue
		}
		return err
	}
}

// recv reads one datagram and returns the netlink messages in it.
func (c *conn) recv() ([]syscall.NetlinkMessage, error) {
	for {
		n, _, err := unix.Recvfrom(c.fd, c.rbuf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		return syscall.ParseNetlinkMessage(c.rbuf[:n])
	}
}

// batch is a sequence of encoded requests to be sent with conn.exec.
// Requests are appended with the builders in msg_linux.go.
type batch struct {
	buf  []byte
	offs []int // start of each request in buf
}

func (b *batch) len() int { return len(b.offs) }

func (b *batch) reset() {
	b.buf = b.buf[:0]
	b.offs = b.offs[:0]
}

// exec sends the requests of b and returns one error per request (nil
// where the kernel accepted it). The returned error is set only when the
// socket itself failed; then the per-request results are meaningless.
func (c *conn) exec(b *batch) ([]error, error) {
	errs := make([]error, len(b.offs))
	for start := 0; start < len(b.offs); {
		end := start
		for end < len(b.offs) && end-start < maxChunkMsgs {
			next := len(b.buf)
			if end+1 < len(b.offs) {
				next = b.offs[end+1]
			}
			if end > start && next-b.offs[start] > maxChunkBytes {
				break
			}
			end++
		}
		if err := c.execChunk(b, start, end, errs); err != nil {
			return errs, err
		}
		start = end
	}
	return errs, nil
}

func (c *conn) execChunk(b *batch, start, end int, errs []error) error {
	// Give every request of the chunk a fresh sequence number, so that
	// answers map back to indices by subtraction; keep them contiguous.
	if c.seq > math.MaxUint32-maxChunkMsgs-4 {
		c.seq = 0
	}
	first := c.seq + 1
	for k := start; k < end; k++ {
		seq := c.nextSeq()
		binary.NativeEndian.PutUint32(b.buf[b.offs[k]+8:], seq)
		binary.NativeEndian.PutUint32(b.buf[b.offs[k]+12:], c.pid)
	}
	stop := len(b.buf)
	if end < len(b.offs) {
		stop = b.offs[end]
	}
	msgs := b.buf[b.offs[start]:stop]
	barrier := c.nextSeq()
	msgs = appendBarrier(msgs[:len(msgs):len(msgs)], barrier, c.pid)
	if err := c.send(msgs); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	lost := false
	for {
		ms, err := c.recv()
		if errors.Is(err, unix.ENOBUFS) {
			// Some answers were dropped. Finish the chunk behind a new
			// barrier and report the unanswered requests as unknown.
			lost = true
			barrier = c.nextSeq()
			if err := c.send(appendBarrier(nil, barrier, c.pid)); err != nil {
				return fmt.Errorf("netlink send: %w", err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		for _, m := range ms {
			if m.Header.Type != unix.NLMSG_ERROR || m.Header.Pid != c.pid {
				continue
			}
			seq := m.Header.Seq
			if seq == barrier {
				if lost {
					for k := start; k < end; k++ {
						if errs[k] == nil {
							errs[k] = errAckLost
						}
					}
				}
				return nil
			}
			k := start + int(seq-first)
			if seq-first >= uint32(end-start) {
				continue // an old barrier or a stray answer
			}
			if e := parseNlErr(m); e != nil {
				errs[k] = e
			}
		}
	}
}

// appendBarrier appends an NLMSG_NOOP request that asks for an ack.
func appendBarrier(b []byte, seq, pid uint32) []byte {
	var h [sizeofNlmsghd]byte
	binary.NativeEndian.PutUint32(h[0:], sizeofNlmsghd)
	binary.NativeEndian.PutUint16(h[4:], unix.NLMSG_NOOP)
	binary.NativeEndian.PutUint16(h[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(h[8:], seq)
	binary.NativeEndian.PutUint32(h[12:], pid)
	return append(b, h[:]...)
}

// parseNlErr returns the error in an NLMSG_ERROR message, or nil for an ack.
func parseNlErr(m syscall.NetlinkMessage) error {
	if len(m.Data) < 4 {
		return &nlError{errno: unix.EBADMSG}
	}
	code := int32(binary.NativeEndian.Uint32(m.Data))
	if code == 0 {
		return nil
	}
	e := &nlError{errno: unix.Errno(-code)}
	if m.Header.Flags&unix.NLM_F_ACK_TLVS == 0 {
		return e
	}
	// struct nlmsgerr: error, then the request's header (and its body
	// unless NLM_F_CAPPED), then the TLVs.
	off := 4 + sizeofNlmsghd
	if m.Header.Flags&unix.NLM_F_CAPPED == 0 && len(m.Data) >= 4+sizeofNlmsghd {
		off = 4 + int(binary.NativeEndian.Uint32(m.Data[4:]))
	}
	if off > len(m.Data) {
		return e
	}
	forEachAttr(m.Data[off:], func(typ uint16, val []byte) {
		if typ == unix.NLMSGERR_ATTR_MSG {
			e.msg = cString(val)
		}
	})
	return e
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// dump sends a dump request and calls fn for each answer until the kernel
// says it is done. An interrupted dump (the table changed while it was
// read) is reported as errDumpInterrupted; callers retry.
func (c *conn) dump(req []byte, fn func(typ uint16, data []byte)) error {
	seq := c.nextSeq()
	binary.NativeEndian.PutUint32(req[8:], seq)
	binary.NativeEndian.PutUint32(req[12:], c.pid)
	if err := c.send(req); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	intr := false
	for {
		ms, err := c.recv()
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		for _, m := range ms {
			if m.Header.Seq != seq || m.Header.Pid != c.pid {
				continue
			}
			if m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
				intr = true
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				if intr {
					return errDumpInterrupted
				}
				return nil
			case unix.NLMSG_ERROR:
				if err := parseNlErr(m); err != nil {
					return err
				}
				return nil
			default:
				fn(m.Header.Type, m.Data)
			}
		}
	}
}

var errDumpInterrupted = errors.New("netlink dump interrupted by a concurrent change")

// forEachAttr calls fn for every attribute (struct rtattr/nlattr) in b.
func forEachAttr(b []byte, fn func(typ uint16, val []byte)) {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		typ := binary.NativeEndian.Uint16(b[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < 4 || l > len(b) {
			return
		}
		fn(typ, b[4:l])
		al := (l + 3) &^ 3
		if al > len(b) {
			return
		}
		b = b[al:]
	}
}
