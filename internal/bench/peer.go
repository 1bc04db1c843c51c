package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// Peer is a lean v1 client for load generation. It speaks the protocol
// frame by frame, writes pre-encoded frames in as few system calls as
// possible, and feeds received updates to a Receiver without decoding them
// in the common case (see Layout.match). It does not reconnect.
//
// Write methods are safe for concurrent use; the read loop is owned by the
// goroutine that Start creates.
type Peer struct {
	conn      net.Conn
	f         framer
	keepalive time.Duration // agreed interval
	rcv       *Receiver     // set before Start; nil ignores routes

	wmu       sync.Mutex // serialises writes, so frames never interleave
	kaPending atomic.Bool
	closing   atomic.Bool
	started   atomic.Bool
	stray     atomic.Int64 // updates received without a receiver
	done      chan struct{}
	err       error // why the read loop ended; read after done
}

// peerOptions configure dialPeer.
type peerOptions struct {
	local      netip.Addr    // source address, if valid
	keepalive  time.Duration // proposed in HELLO
	readBuffer int           // bytes
	timeout    time.Duration // connect and handshake
	// features are the extensions advertised in HELLO (wire.Feature*);
	// zero is a plain v1 peer.
	features uint32
}

// dialPeer connects to addr and completes the v1 handshake as a client.
func dialPeer(ctx context.Context, addr string, o peerOptions) (*Peer, error) {
	d := net.Dialer{Timeout: o.timeout}
	if o.local.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: o.local.AsSlice()}
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &Peer{conn: conn, f: framer{r: conn, buf: make([]byte, o.readBuffer)}, done: make(chan struct{})}
	if err := p.handshake(o); err != nil {
		p.abort()
		return nil, fmt.Errorf("handshake with %s: %w", addr, err)
	}
	return p, nil
}

func (p *Peer) handshake(o peerOptions) error {
	if err := p.conn.SetDeadline(time.Now().Add(o.timeout)); err != nil {
		return err
	}
	hello, err := wire.AppendFrame(nil, wire.Hello{Keepalive: uint32(max(o.keepalive/time.Second, 1)), Features: o.features})
	if err != nil {
		return err
	}
	if err := p.write(hello); err != nil {
		return err
	}
	t, body, err := p.f.next()
	if err != nil {
		return err
	}
	if t != wire.TypeHello {
		return fmt.Errorf("got %s, want HELLO", t)
	}
	m, err := wire.Decode(t, body)
	if err != nil {
		return err
	}
	h := m.(wire.Hello)
	if !h.IsServer {
		return errors.New("peer's HELLO does not say it is a server")
	}
	p.keepalive = time.Duration(h.Keepalive) * time.Second
	if err := p.write(keepaliveFrame); err != nil {
		return err
	}
	if t, _, err = p.f.next(); err != nil {
		return err
	}
	if t != wire.TypeKeepalive {
		return fmt.Errorf("got %s, want KEEPALIVE", t)
	}
	return p.conn.SetDeadline(time.Time{})
}

var keepaliveFrame, _ = wire.AppendFrame(nil, wire.Keepalive{})

// Start starts the read loop, which hands updates to rcv (nil counts them
// as stray: a peer that subscribed to nothing must receive none).
func (p *Peer) Start(rcv *Receiver) {
	p.rcv = rcv
	p.started.Store(true)
	go p.readLoop()
}

func (p *Peer) readLoop() {
	defer close(p.done)
	err := p.readFrames()
	if p.closing.Load() {
		return
	}
	p.err = err
	if p.rcv != nil {
		p.rcv.connClosed(err)
	}
}

func (p *Peer) readFrames() error {
	for {
		if p.rcv != nil {
			p.rcv.beginBatch()
		}
		var err error
		for {
			var t wire.Type
			var body []byte
			var ok bool
			if t, body, ok, err = p.f.frame(); !ok || err != nil {
				break
			}
			switch t {
			case wire.TypeUpdate:
				if p.rcv != nil {
					p.rcv.updateLocked(body)
				} else {
					p.stray.Add(1)
				}
			case wire.TypeKeepalive, wire.TypeEndOfSync:
				// END_OF_SYNC comes only to peers that advertised
				// FeatureEndOfSync; the fences make it unnecessary.
			default:
				err = fmt.Errorf("server sent %s after the handshake", t)
			}
			if err != nil {
				break
			}
		}
		if p.rcv != nil {
			p.rcv.endBatch()
		}
		if err != nil {
			return err
		}
		if err := p.f.fill(); err != nil {
			return err
		}
	}
}

// write writes b whole.
func (p *Peer) write(b []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_, err := p.conn.Write(b)
	return err
}

// writev writes the buffers in order with one vectored write.
func (p *Peer) writev(bufs ...[]byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	nb := net.Buffers(bufs)
	_, err := nb.WriteTo(p.conn)
	return err
}

// Subscribe sends SUBSCRIBE for vni.
func (p *Peer) Subscribe(vni route.VNI) error {
	return p.write(subscribeFrame(vni))
}

// sendKeepalive sends one KEEPALIVE unless one is being sent already; it
// never blocks its caller.
func (p *Peer) sendKeepalive() {
	if p.kaPending.Swap(true) {
		return
	}
	go func() {
		defer p.kaPending.Store(false)
		p.write(keepaliveFrame) // an error shows in the read loop
	}()
}

// Close closes the connection with a reset (no TIME_WAIT, so that repeated
// runs with thousands of peers do not exhaust ports) and waits for the read
// loop if it was started.
func (p *Peer) Close() {
	p.closing.Store(true)
	p.abort()
	if p.started.Load() {
		<-p.done
	}
}

func (p *Peer) abort() {
	if tc, ok := p.conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	p.conn.Close()
}

// Err returns why the read loop ended, if it ended unexpectedly.
func (p *Peer) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// framer splits a byte stream into v1 frames with a buffer of fixed size,
// small enough for thousands of peers. It checks the header as
// wire.Reader does: version 1, a defined type, a body of at most
// wire.MaxBodyLen bytes.
type framer struct {
	r          io.Reader
	buf        []byte
	start, end int
}

// frame returns the next complete buffered frame, ok false if there is
// none. The body is valid until fill.
func (f *framer) frame() (t wire.Type, body []byte, ok bool, err error) {
	if f.end-f.start < wire.HeaderLen {
		return 0, nil, false, nil
	}
	h := f.buf[f.start:f.end]
	if h[0] != wire.Version {
		return 0, nil, false, fmt.Errorf("%w: %d", wire.ErrBadVersion, h[0])
	}
	t = wire.Type(h[3])
	if !t.Valid() {
		return 0, nil, false, fmt.Errorf("%w: %d", wire.ErrUnknownType, h[3])
	}
	n := int(h[1])<<8 | int(h[2])
	if n > wire.MaxBodyLen {
		return 0, nil, false, fmt.Errorf("%w: %d", wire.ErrTooLarge, n)
	}
	if len(h) < wire.HeaderLen+n {
		return 0, nil, false, nil
	}
	f.start += wire.HeaderLen + n
	return t, h[wire.HeaderLen : wire.HeaderLen+n], true, nil
}

// fill moves the unconsumed bytes to the front and reads once.
func (f *framer) fill() error {
	if f.start > 0 {
		f.end = copy(f.buf, f.buf[f.start:f.end])
		f.start = 0
	}
	n, err := f.r.Read(f.buf[f.end:])
	f.end += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// next returns the next frame, reading as needed.
func (f *framer) next() (wire.Type, []byte, error) {
	for {
		t, body, ok, err := f.frame()
		if err != nil || ok {
			return t, body, err
		}
		if err := f.fill(); err != nil {
			return 0, nil, err
		}
	}
}
