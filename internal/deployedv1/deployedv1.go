// Package deployedv1 stands in for the MetalBond v1 implementation deployed
// today, as far as its handling of the bytes it reads is concerned, so that
// tests and benchmarks can check that our writers never break it. It
// reproduces every behaviour that the protocol description ("What a
// deployed v1 reader does with your bytes") lists:
//
//   - each read goes into one 65,535-byte buffer, reused across reads; a
//     read that fills it is taken as overload (a session reset);
//   - each read is parsed from its first byte as if it held whole messages:
//     version, length and type from the buffer, the body the next length
//     bytes of the buffer, never compared with the count the read returned.
//     A read that ends inside a message is a failure (the deployed reader
//     decodes stale bytes of the buffer: a reset or a wrong route), and so
//     is a read whose first byte is not the version ("Incompatible Client
//     version");
//   - a message of an unknown type stops the reading of the connection
//     without closing it (the session then dies on its keepalive timer);
//   - every message is handed to one processing goroutine, UPDATEs through a
//     100-slot queue, which spends a fixed time per UPDATE; when it falls
//     behind the reader blocks and unread bytes pile up in the kernel;
//   - it accepts KEEPALIVE at any time once established and, as a server,
//     answers each with a KEEPALIVE; it writes one message per write call;
//     2.5 keepalive intervals without a KEEPALIVE end the session, however
//     many other messages arrive meanwhile.
//
// Every failure ends Run with an error wrapping one of the sentinels below:
// where the deployed implementation resets a session, the emulation stops,
// so a test sees the first defect and nothing is hidden by a reconnect.
package deployedv1

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// ReadBuffer is the size of the deployed reader's buffer.
const ReadBuffer = 65535

// QueueSlots is the capacity of the deployed reader's UPDATE queue.
const QueueSlots = 100

// The ways the deployed reader fails.
var (
	// ErrFullRead: a read returned ReadBuffer bytes (overload: reset).
	ErrFullRead = errors.New("a read filled the 65,535-byte buffer")
	// ErrSplitMessage: a read ended inside a message, which the deployed
	// reader would decode from stale bytes of its buffer.
	ErrSplitMessage = errors.New("a read ended inside a message")
	// ErrVersion: a message (or a read) did not start with version 1.
	ErrVersion = errors.New("incompatible client version")
	// ErrUnknownType: a message of an unknown type stopped the reading.
	ErrUnknownType = errors.New("unknown message type: reading stopped")
	// ErrDecode: a message body did not decode.
	ErrDecode = errors.New("message did not decode")
	// ErrHold: no KEEPALIVE for 2.5 keepalive intervals.
	ErrHold = errors.New("keepalive timer expired")
	// ErrProtocol: a message that the session does not allow.
	ErrProtocol = errors.New("unexpected message")
)

// Config configures a Peer.
type Config struct {
	// Delay is the processing time of one UPDATE (a log line and a
	// netlink call in the deployed implementation).
	Delay time.Duration
	// Keepalive is the interval a client proposes and the largest a server
	// accepts. Default 5 s.
	Keepalive time.Duration
}

// Stats are a Peer's counters. They may be read while it runs.
type Stats struct {
	Reads    atomic.Int64
	MaxRead  atomic.Int64 // largest read, in bytes
	Updates  atomic.Int64 // UPDATEs processed
	Messages atomic.Int64 // messages parsed
	// Anomalies counts ADDs of a route held already and REMOVEs of a route
	// not held: the deployed implementation logs them; tests expect none.
	Anomalies atomic.Int64
	// MaxKeepaliveGap is the longest time between two KEEPALIVEs received
	// once established, in nanoseconds.
	MaxKeepaliveGap atomic.Int64
}

// Peer is one deployed-style v1 session over a connection.
type Peer struct {
	conn net.Conn
	cfg  Config
	// Stats may be read at any time.
	Stats Stats

	writeMu sync.Mutex

	mu     sync.Mutex // guards routes
	routes map[route.Route]bool
	// changed is signalled (capacity 1) after every processed UPDATE.
	changed chan struct{}

	delay atomic.Int64 // processing time of one UPDATE, in nanoseconds
	stall atomic.Int64 // extra processing time of the next UPDATE

	stopped   atomic.Value // error: why the reader stopped reading without closing
	lastKA    atomic.Int64 // unix nanoseconds of the last HELLO or KEEPALIVE read
	keepalive atomic.Int64 // agreed interval in nanoseconds, once known
}

// New returns a Peer over conn. Nothing happens until RunClient or
// RunServer.
func New(conn net.Conn, cfg Config) *Peer {
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = 5 * time.Second
	}
	p := &Peer{conn: conn, cfg: cfg, routes: make(map[route.Route]bool), changed: make(chan struct{}, 1)}
	p.delay.Store(int64(cfg.Delay))
	return p
}

// Routes returns the routes the peer holds.
func (p *Peer) Routes() map[route.Route]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[route.Route]bool, len(p.routes))
	for r := range p.routes {
		out[r] = true
	}
	return out
}

// Len returns the number of routes the peer holds.
func (p *Peer) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.routes)
}

// Changed returns a channel that receives after UPDATEs were processed.
func (p *Peer) Changed() <-chan struct{} { return p.changed }

// Close closes the connection, which ends Run.
func (p *Peer) Close() error { return p.conn.Close() }

// send writes one message in one write call, as the deployed peer does.
func (p *Peer) send(m wire.Message) error {
	frame, err := wire.AppendFrame(nil, m)
	if err != nil {
		return err
	}
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	_, err = p.conn.Write(frame)
	return err
}

// item is what the reader hands the processing goroutine.
type item struct {
	t    wire.Type
	body []byte // a copy
}

// run reads the connection and processes what it reads with handle, on
// one processing goroutine, until ctx ends, the connection fails or a
// failure is found. The first error is returned; the connection is closed.
func (p *Peer) run(ctx context.Context, handle func(t wire.Type, body []byte) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(ctx, func() { p.conn.Close() })
	defer stop()
	p.lastKA.Store(time.Now().UnixNano())

	updates := make(chan item, QueueSlots)
	control := make(chan item)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		cancel(p.process(ctx, updates, control, handle))
	}()
	go func() {
		defer wg.Done()
		cancel(p.hold(ctx))
	}()
	cancel(p.read(ctx, updates, control))
	p.conn.Close()
	wg.Wait()
	return context.Cause(ctx) // the first reason
}

// read is the deployed reader: one buffer, every read parsed from its first
// byte. A message of unknown type stops it (it then waits for the session
// to end).
func (p *Peer) read(ctx context.Context, updates, control chan<- item) error {
	buf := make([]byte, ReadBuffer)
	for {
		n, err := p.conn.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return fmt.Errorf("read: %w", err)
		}
		reads := p.Stats.Reads.Add(1)
		if int64(n) > p.Stats.MaxRead.Load() {
			p.Stats.MaxRead.Store(int64(n))
		}
		if err := CheckRead(buf[:n]); err != nil {
			return fmt.Errorf("read %d: %w", reads, err)
		}
		for off := 0; off < n; {
			l := int(binary.BigEndian.Uint16(buf[off+1:]))
			t := wire.Type(buf[off+3])
			end := off + wire.HeaderLen + l
			if t == wire.TypeKeepalive || t == wire.TypeHello {
				p.lastKA.Store(time.Now().UnixNano())
			}
			p.Stats.Messages.Add(1)
			it := item{t: t, body: append([]byte(nil), buf[off+wire.HeaderLen:end]...)}
			off = end
			ch := control
			switch t {
			case wire.TypeUpdate:
				ch = updates
			case wire.TypeHello, wire.TypeKeepalive, wire.TypeSubscribe, wire.TypeUnsubscribe:
			default:
				// It reads no more and keeps the connection: the
				// keepalive timer ends the session.
				p.stopped.Store(fmt.Errorf("type %d: %w", t, ErrUnknownType))
				<-ctx.Done()
				return context.Cause(ctx)
			}
			select {
			case ch <- it:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	}
}

// CheckRead reports how the deployed reader fails on a read that returned
// b: ErrFullRead when b fills its buffer, ErrVersion when a message does not
// start with the version, ErrSplitMessage when b ends inside a message (the
// reader would take the rest of it from stale bytes of its buffer). A nil
// error means b holds whole messages only.
func CheckRead(b []byte) error {
	if len(b) >= ReadBuffer {
		return fmt.Errorf("%d bytes: %w", len(b), ErrFullRead)
	}
	for off := 0; off < len(b); {
		if off+wire.HeaderLen > len(b) {
			return fmt.Errorf("%d bytes: header at %d: %w", len(b), off, ErrSplitMessage)
		}
		if b[off] != wire.Version {
			return fmt.Errorf("%d bytes: byte %d is %d: %w", len(b), off, b[off], ErrVersion)
		}
		end := off + wire.HeaderLen + int(binary.BigEndian.Uint16(b[off+1:]))
		if end > len(b) {
			return fmt.Errorf("%d bytes: message at %d ends at %d: %w", len(b), off, end, ErrSplitMessage)
		}
		off = end
	}
	return nil
}

// Stall makes the processing of the next UPDATE take d longer: the reader
// then blocks on the full queue and unread bytes pile up in the kernel, as
// when the deployed implementation's processing falls behind (a slow
// netlink call, a pause of its process). The keepalive timer runs on: a
// stall longer than 2.5 intervals ends the session.
func (p *Peer) Stall(d time.Duration) { p.stall.Store(int64(d)) }

// SetDelay changes the processing time of one UPDATE (Config.Delay) from
// the next UPDATE on.
func (p *Peer) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// process is the processing goroutine.
func (p *Peer) process(ctx context.Context, updates, control <-chan item, handle func(wire.Type, []byte) error) error {
	due := time.Now()
	for {
		var it item
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case it = <-updates:
		case it = <-control:
		}
		if err := handle(it.t, it.body); err != nil {
			return err
		}
		delay := time.Duration(p.delay.Load())
		if it.t == wire.TypeUpdate {
			delay += time.Duration(p.stall.Swap(0))
		}
		if it.t != wire.TypeUpdate || delay <= 0 {
			continue
		}
		// Spend Delay per UPDATE on average: sleeps are coarse, so the
		// time is kept against a due date rather than slept each time.
		now := time.Now()
		due = later(due, now).Add(delay)
		if d := due.Sub(now); d > time.Millisecond {
			time.Sleep(d)
		}
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// hold ends the session after 2.5 keepalive intervals without a KEEPALIVE,
// whatever else arrives: the deployed peer's timer is fed by keepalives.
func (p *Peer) hold(ctx context.Context) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case now := <-t.C:
			ka := time.Duration(p.keepalive.Load())
			if ka == 0 {
				ka = p.cfg.Keepalive
			}
			if silent := now.Sub(time.Unix(0, p.lastKA.Load())); silent > ka*5/2 {
				err := fmt.Errorf("%w: no KEEPALIVE for %v (interval %v)", ErrHold, silent.Round(time.Millisecond), ka)
				if why, ok := p.stopped.Load().(error); ok {
					err = errors.Join(why, err)
				}
				return err
			}
		}
	}
}

// update applies one UPDATE to the table.
func (p *Peer) update(body []byte) error {
	u, err := wire.DecodeUpdate(body)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrDecode, err)
	}
	p.mu.Lock()
	held := p.routes[u.Route]
	if u.Action == wire.ActionAdd {
		p.routes[u.Route] = true
	} else {
		delete(p.routes, u.Route)
	}
	p.mu.Unlock()
	if held == (u.Action == wire.ActionAdd) {
		p.Stats.Anomalies.Add(1)
	}
	p.Stats.Updates.Add(1)
	select {
	case p.changed <- struct{}{}:
	default:
	}
	return nil
}

// keepaliveSeen records a KEEPALIVE received once established.
func (p *Peer) keepaliveSeen(last *time.Time) {
	now := time.Now()
	if !last.IsZero() {
		if gap := int64(now.Sub(*last)); gap > p.Stats.MaxKeepaliveGap.Load() {
			p.Stats.MaxKeepaliveGap.Store(gap)
		}
	}
	*last = now
}
