// Package session runs one MetalBond v1 conversation over a connection: the
// handshake, keepalives and hold timer, a reader that hands messages to a
// Handler in the order they arrived, and a writer that drains a bounded send
// queue in batches.
//
// Goroutines: Run's caller is the reader and owns the protocol state; Run
// starts one writer goroutine and waits for it before returning.
package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metalbond/metalbond/internal/wire"
)

// Errors that end a session, besides protocol and I/O errors.
var (
	// ErrHoldExpired: nothing was received for 2.5 keepalive intervals.
	ErrHoldExpired = errors.New("hold timer expired")
	// ErrHandshakeTimeout: the handshake did not finish in time.
	ErrHandshakeTimeout = errors.New("handshake timed out")
	// ErrStalled: the peer accepted no data for Config.WriteTimeout.
	ErrStalled = errors.New("peer stalled: no write progress")
	// ErrQueueFull: the send queue passed Config.MaxQueue bytes.
	ErrQueueFull = errors.New("send queue over its memory bound")
	// ErrClosed: the session was closed locally.
	ErrClosed = errors.New("session closed")
	// ErrKeepaliveFlood: the peer sent a KEEPALIVE while
	// maxKeepaliveAnswers answers to its earlier ones were still waiting
	// to be written: it sends keepalives faster than it reads.
	ErrKeepaliveFlood = errors.New("peer sends keepalives faster than it reads the answers")
)

// maxKeepaliveAnswers bounds the answers to a peer's KEEPALIVEs that wait
// to be written. Every KEEPALIVE is answered with one (as a deployed v1
// server does); a peer keeping to the agreed interval (at least a second)
// would take longer than any write timeout to have this many waiting.
const maxKeepaliveAnswers = 64

// Config configures a Session. Zero fields take the defaults noted.
type Config struct {
	Role Role
	// Keepalive is the interval this side proposes (client) or the largest
	// it accepts (server). Default 5s.
	Keepalive time.Duration
	// HandshakeTimeout bounds the handshake. Default 2.5 × Keepalive.
	HandshakeTimeout time.Duration
	// Accepted, if set, is when the connection was accepted: the handshake
	// timeout counts from then, so that it bounds what came before Run (a
	// TLS handshake) and the v1 handshake together. Default Run's start.
	Accepted time.Time
	// WriteTimeout closes the session when the peer accepts no data for this
	// long while data is waiting. Default 30s.
	WriteTimeout time.Duration
	// MaxQueue is the memory bound of the send queue in bytes. Default 64 MiB.
	MaxQueue int
	// HighWater is the queue size above which WaitWritable blocks. Default 1 MiB.
	HighWater int
	// PacedHighWater replaces HighWater, when larger, for a peer whose
	// writes are paced (a plain v1 peer, see NoPaceV1): such a peer reads
	// at its own pace, and a burst that fits below this mark reaches the
	// other peers at full speed instead of at the paced peer's. Default
	// 8 MiB (about 220,000 updates).
	PacedHighWater int
	// ReadBufferSize is the size of the read buffer. Default 16 KiB.
	ReadBufferSize int
	// Logger receives session events. Default discards.
	Logger *slog.Logger

	// Features are the extensions we advertise in HELLO (wire.Feature*
	// bits); zero speaks plain v1. An extension is used only if the peer
	// advertises it too (see Negotiated).
	Features uint32
	// GracefulRestart is advertised with wire.FeatureGracefulRestart: how
	// long we keep the routes of a peer whose session ended.
	GracefulRestart time.Duration
	// Name identifies us across reconnects (advertised in HELLO).
	Name string
	// NoPaceV1 turns off the pacing of writes to plain v1 peers, which
	// keeps a deployed reader from ever finding 64 KiB unread (pacing.go,
	// docs/pacing.md).
	NoPaceV1 bool
}

func (c *Config) setDefaults() {
	if c.Keepalive <= 0 {
		c.Keepalive = 5 * time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = c.Keepalive * 5 / 2
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 30 * time.Second
	}
	if c.MaxQueue <= 0 {
		c.MaxQueue = 64 << 20
	}
	if c.HighWater <= 0 {
		c.HighWater = 1 << 20
	}
	if c.PacedHighWater <= 0 {
		c.PacedHighWater = 8 << 20
	}
	if c.ReadBufferSize <= 0 {
		c.ReadBufferSize = 16 << 10
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Handler receives what a session learns. Its methods are called from the
// session's reader goroutine, one at a time, in the order the messages
// arrived; they must not block for long.
type Handler interface {
	// Established is called once when the handshake completes.
	Established(s *Session)
	// Handle is called for each SUBSCRIBE and UNSUBSCRIBE received once
	// established. An error closes the session with that error.
	Handle(s *Session, m wire.Message) error
	// HandleUpdate is called for each UPDATE received once established; u
	// is valid only during the call. An error closes the session.
	HandleUpdate(s *Session, u *wire.Update) error
}

// BatchHandler may be implemented by a Handler that batches work across
// messages: EndBatch is called, from the reader goroutine, whenever the
// reader has handled every whole message it has buffered and may wait for
// the peer, and once more when the session ends. Work left pending between
// calls is therefore never delayed by the network.
type BatchHandler interface {
	EndBatch(s *Session)
}

// Session is one conversation with a peer. Its methods are safe for
// concurrent use.
type Session struct {
	conn net.Conn
	cfg  Config
	h    Handler
	q    *queue

	established chan struct{} // closed when the handshake completes
	done        chan struct{} // closed when the session starts closing
	closeOnce   sync.Once
	err         error // first reason to close; written once under closeOnce

	peerHello atomic.Pointer[wire.Hello] // the peer's HELLO, once received
	state     atomic.Uint32
	progress  atomic.Int64 // unix nanoseconds of the last write that made progress
	iov       [][]byte     // the writer's scratch list for vectored writes
	keepalive atomic.Int64 // agreed interval in nanoseconds
	since     atomic.Int64 // unix nanoseconds when established

	updatesIn  atomic.Uint64
	updatesOut atomic.Uint64
	msgsIn     [7]atomic.Uint64 // by wire.Type

	pacing pacing // writes to plain v1 peers (pacing.go)

	finishing atomic.Bool // set by Finish: no more keepalives
}

// New prepares a session over conn. Nothing happens until Run.
func New(conn net.Conn, cfg Config, h Handler) *Session {
	cfg.setDefaults()
	return &Session{conn: conn, cfg: cfg, h: h, q: newQueue(),
		established: make(chan struct{}), done: make(chan struct{})}
}

// Run performs the handshake and serves the session until it ends, then
// closes the connection and returns the reason: ctx's error when ctx was
// cancelled, otherwise the protocol, timeout or I/O error that ended it.
func (s *Session) Run(ctx context.Context) error {
	s.progress.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.writeLoop()
	}()
	stop := context.AfterFunc(ctx, func() { s.fail(ctx.Err()) })
	err := s.readLoop()
	stop()
	s.fail(err)
	wg.Wait()
	return s.err
}

// Close ends the session with ErrClosed; Run returns soon after.
func (s *Session) Close() { s.fail(ErrClosed) }

// fail records the first reason to close and tears the connection down,
// which unblocks both the reader and the writer.
func (s *Session) fail(err error) {
	s.closeOnce.Do(func() {
		if err == nil {
			err = ErrClosed
		}
		s.err = err
		s.state.Store(uint32(StateClosed))
		s.q.close()
		s.conn.Close()
		close(s.done)
	})
}

// Send queues encoded frames (see wire.AppendFrame) holding updates UPDATE
// messages. It never blocks. It reports whether the queue is above its
// high-water mark afterwards, so the producer can apply back-pressure with
// WaitWritable. When the queue passes its memory bound the session is closed
// with ErrQueueFull (the peer will reconnect and resync); frames sent to a
// closed session are dropped.
func (s *Session) Send(frames []byte, updates int) (congested bool) {
	return s.SendFunc(func(b []byte) ([]byte, int) { return append(b, frames...), updates })
}

// SendFunc is Send for a producer that encodes straight into the queue:
// fn appends frames to b and returns it with the number of UPDATE messages
// it appended. fn runs with the queue locked and must not call methods of s.
func (s *Session) SendFunc(fn func(b []byte) ([]byte, int)) (congested bool) {
	var updates int
	pending, ok := s.q.push(func(b []byte) []byte {
		b, updates = fn(b)
		return b
	}, false)
	return s.queued(pending, ok, updates)
}

// SendShared is Send for bytes that the producer sends to many sessions:
// they are queued by reference, not copied. frames must hold whole frames
// and must never change afterwards.
func (s *Session) SendShared(frames []byte, updates int) (congested bool) {
	pending, ok := s.q.pushShared(frames)
	return s.queued(pending, ok, updates)
}

// queued accounts for updates queued, leaving pending bytes in the queue,
// and reports whether the queue is congested.
func (s *Session) queued(pending int, ok bool, updates int) (congested bool) {
	if !ok {
		return false
	}
	s.updatesOut.Add(uint64(updates))
	if pending > s.cfg.MaxQueue {
		s.fail(fmt.Errorf("%w: %d bytes queued", ErrQueueFull, pending))
		return false
	}
	return pending > s.highWater()
}

// highWater is the queue size above which producers wait (Config.HighWater
// and PacedHighWater).
func (s *Session) highWater() int {
	if s.pacedPeer() {
		return max(s.cfg.HighWater, s.cfg.PacedHighWater)
	}
	return s.cfg.HighWater
}

// Track calls t.Done once everything queued so far has been written. It
// reports false, without calling Done, on a closed session.
func (s *Session) Track(t *Tracker) bool { return s.q.mark(t) }

// stuckAfter is how long a session may go without write progress before
// producers stop waiting for it: a slow peer slows its producers down, a
// stuck one does not (it is closed after Config.WriteTimeout instead).
const stuckAfter = 250 * time.Millisecond

// WaitWritable blocks while the send queue is above half its high-water
// mark, at most max, applying back-pressure to whoever produces the data
// (an announcer on the server, Announce on the client). It returns at once
// for a peer that has made no write progress for a while. It reports whether
// the queue drained.
func (s *Session) WaitWritable(ctx context.Context, max time.Duration) bool {
	if time.Since(time.Unix(0, s.progress.Load())) > stuckAfter && s.q.pending() > 0 {
		return false
	}
	return s.q.waitBelow(ctx, s.highWater()/2, max)
}

// Established returns a channel closed once the handshake has completed.
func (s *Session) EstablishedC() <-chan struct{} { return s.established }

// PeerHello returns the HELLO the peer sent, or false before it arrived.
func (s *Session) PeerHello() (wire.Hello, bool) {
	if h := s.peerHello.Load(); h != nil {
		return *h, true
	}
	return wire.Hello{}, false
}

// Negotiated returns the extensions both sides advertised (wire.Feature*
// bits). It is zero before the HELLO exchange and with plain v1 peers.
func (s *Session) Negotiated() uint32 {
	if h := s.peerHello.Load(); h != nil {
		return h.Features & s.cfg.Features
	}
	return 0
}

// PlainV1 reports whether the peer advertised no extensions at all: a
// deployed v1 implementation, to be treated with its limits in mind.
func (s *Session) PlainV1() bool {
	h := s.peerHello.Load()
	return h == nil || h.Features == 0
}

// hello returns our HELLO.
func (s *Session) hello(keepalive time.Duration, isServer bool) wire.Hello {
	h := wire.Hello{Keepalive: seconds(keepalive), IsServer: isServer, Features: s.cfg.Features, Name: s.cfg.Name}
	if s.cfg.Features&wire.FeatureGracefulRestart != 0 {
		h.GracefulRestart = seconds(s.cfg.GracefulRestart)
	}
	return h
}

// State returns the current state.
func (s *Session) State() State { return State(s.state.Load()) }

// RemoteAddr returns the peer's address.
func (s *Session) RemoteAddr() net.Addr { return s.conn.RemoteAddr() }

// Info is a snapshot of a session for status pages and metrics.
type Info struct {
	Remote, Local   string
	Role            Role // our role
	State           State
	Keepalive       time.Duration // agreed interval, zero before the HELLO exchange
	EstablishedAt   time.Time     // zero unless established
	UpdatesReceived uint64
	UpdatesSent     uint64
	Messages        [7]uint64 // received, by wire.Type
	QueueBytes      int

	// Pacing of writes to a plain v1 peer (pacing.go, docs/pacing.md).
	Paced        bool          // the peer is plain v1 and writes to it are paced
	PacedTime    time.Duration // time the writer spent waiting for the peer to read, in total
	BacklogBytes int           // estimate of the bytes sent that the peer has not read yet
}

// Info returns a snapshot of the session's state and counters.
func (s *Session) Info() Info {
	in := Info{
		Remote:          s.conn.RemoteAddr().String(),
		Local:           s.conn.LocalAddr().String(),
		Role:            s.cfg.Role,
		State:           s.State(),
		Keepalive:       time.Duration(s.keepalive.Load()),
		UpdatesReceived: s.updatesIn.Load(),
		UpdatesSent:     s.updatesOut.Load(),
		QueueBytes:      s.q.pending(),
	}
	if ns := s.since.Load(); ns != 0 {
		in.EstablishedAt = time.Unix(0, ns)
	}
	for i := range in.Messages {
		in.Messages[i] = s.msgsIn[i].Load()
	}
	s.fillPacing(&in)
	return in
}

// sendPrio queues m ahead of route data. It counts against MaxQueue like
// any other frame. Our own messages are encodable: Config is checked by
// its users (a HELLO name over 255 bytes is refused by NewClient).
func (s *Session) sendPrio(m wire.Message) {
	if _, ok := m.(wire.Keepalive); ok && s.finishing.Load() {
		return // Finish: nothing may follow the end of stream
	}
	frame, err := wire.AppendFrame(nil, m)
	if err != nil {
		s.fail(fmt.Errorf("encode %T: %w", m, err))
		return
	}
	pending, ok := s.q.push(func(b []byte) []byte { return append(b, frame...) }, true)
	s.queued(pending, ok, 0)
}

// keepaliveFrame is an encoded KEEPALIVE: a header and no body.
var keepaliveFrame = []byte{wire.Version, 0, 0, byte(wire.TypeKeepalive)}

// sendKeepalive queues a KEEPALIVE. It reports an error, and queues
// nothing, when maxKeepaliveAnswers wait to be written already.
func (s *Session) sendKeepalive() error {
	pending, ok, flood := s.q.pushKeepalive(keepaliveFrame, maxKeepaliveAnswers)
	if flood {
		return fmt.Errorf("%w: %d answers waiting", ErrKeepaliveFlood, maxKeepaliveAnswers)
	}
	s.queued(pending, ok, 0)
	return nil
}

// readLoop runs the handshake and then hands messages to the handler until
// an error. It owns the protocol state.
func (s *Session) readLoop() error {
	st := StateConnecting
	if s.cfg.Role == RoleClient {
		s.sendPrio(s.hello(s.cfg.Keepalive, false))
		st = StateHelloSent
	}
	s.state.Store(uint32(st))
	r := wire.NewReaderSize(s.conn, s.cfg.ReadBufferSize)
	var u wire.Update
	hold := s.cfg.HandshakeTimeout
	start := s.cfg.Accepted
	if start.IsZero() {
		start = time.Now()
	}
	deadline := start.Add(hold)
	if err := s.conn.SetReadDeadline(deadline); err != nil {
		return err
	}
	var lastSet time.Time = time.Now()
	bh, _ := s.h.(BatchHandler)
	if bh != nil {
		defer bh.EndBatch(s)
	}
	for {
		if bh != nil && st == StateEstablished && !r.HasFrame() {
			bh.EndBatch(s)
		}
		// Refresh the hold timer when a read may block, at most every
		// hold/8, so the common case of a full buffer costs nothing.
		if st == StateEstablished && r.Buffered() < wire.HeaderLen+wire.MaxBodyLen {
			if now := time.Now(); now.Sub(lastSet) > hold/8 {
				lastSet = now
				if err := s.conn.SetReadDeadline(now.Add(hold)); err != nil {
					return err
				}
			}
		}
		t, body, err := r.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if st == StateEstablished {
					return fmt.Errorf("%w after %v of silence", ErrHoldExpired, hold)
				}
				return fmt.Errorf("%w in state %s after %v", ErrHandshakeTimeout, st, s.cfg.HandshakeTimeout)
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("connection closed by peer in state %s", st)
			}
			return err
		}
		s.msgsIn[t].Add(1) // ReadFrame returns only valid types
		next, acts, err := transition(s.cfg.Role, st, t)
		if err != nil {
			return err
		}
		if t == wire.TypeUpdate && len(acts) == 1 && acts[0] == actDeliver {
			// The hot path: no interface boxing, no allocation.
			if u, err = wire.DecodeUpdate(body); err != nil {
				return err
			}
			s.updatesIn.Add(1)
			if err := s.h.HandleUpdate(s, &u); err != nil {
				return err
			}
			continue
		}
		m, err := wire.Decode(t, body)
		if err != nil {
			return err
		}
		if h, ok := m.(wire.Hello); ok {
			s.peerHello.Store(&h)
		}
		if t == wire.TypeEndOfSync && s.Negotiated()&wire.FeatureEndOfSync == 0 {
			return fmt.Errorf("%w: END_OF_SYNC from a peer that did not negotiate it", ErrProtocol)
		}
		for _, a := range acts {
			switch a {
			case actSendHello:
				hello := m.(wire.Hello)
				ka := min(time.Duration(hello.Keepalive)*time.Second, s.cfg.Keepalive.Truncate(time.Second))
				s.agree(ka)
				reply := s.hello(ka, true)
				if hello.Features == 0 {
					// A plain v1 peer gets a plain v1 answer, byte for byte.
					reply = wire.Hello{Keepalive: reply.Keepalive, IsServer: true}
				}
				s.sendPrio(reply)
			case actSendKeepalive:
				if hello, ok := m.(wire.Hello); ok { // client: the server's answer
					s.agree(min(time.Duration(hello.Keepalive)*time.Second, s.cfg.Keepalive))
				}
				if err := s.sendKeepalive(); err != nil {
					return err
				}
			case actEstablished:
				hold = time.Duration(s.keepalive.Load()) * 5 / 2
				lastSet = time.Time{}
				s.since.Store(time.Now().UnixNano())
				s.state.Store(uint32(StateEstablished))
				st = StateEstablished
				close(s.established)
				s.h.Established(s)
			case actDeliver:
				if err := s.h.Handle(s, m); err != nil {
					return err
				}
			}
		}
		if next != st {
			st = next
			s.state.Store(uint32(st))
		}
	}
}

// agree records the agreed keepalive interval.
func (s *Session) agree(d time.Duration) {
	if d < time.Second {
		d = time.Second
	}
	s.keepalive.Store(int64(d))
}

func seconds(d time.Duration) uint32 {
	sec := uint32(d / time.Second)
	if sec == 0 {
		sec = 1
	}
	return sec
}
