package session

// The writer goroutine: it drains the send queue into the connection.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"time"

	"github.com/metalbond/metalbond/internal/wire"
)

// maxWrite bounds one write so that the stall timer measures progress.
const maxWrite = 256 << 10

// writeLoop drains the queue.
func (s *Session) writeLoop() {
	if s.cfg.Role == RoleClient {
		kaDone := make(chan struct{})
		defer func() { <-kaDone }()
		go func() {
			defer close(kaDone)
			s.keepaliveLoop()
		}()
	}
	for {
		select {
		case <-s.done:
			return
		case <-s.q.wake:
		}
		// Let producers that are running queue more, so that it goes out
		// in the same write.
		runtime.Gosched()
		if err := s.drain(); err != nil {
			s.fail(err)
			return
		}
	}
}

// keepaliveLoop queues a client's keepalives once the session is
// established, every agreed interval, until the session closes. It runs
// apart from the writer so that keepalives are queued on time however long
// the writer drains; the writer sends them between frames.
func (s *Session) keepaliveLoop() {
	select {
	case <-s.done:
		return
	case <-s.established:
	}
	t := time.NewTicker(time.Duration(s.keepalive.Load()))
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.sendKeepalive() // our own, one per interval: never a flood
		}
	}
}

// drain writes everything queued until the queue is empty: paced, in
// writes of whole frames, to a plain v1 peer (pacer.go); otherwise in as
// few writes as it can.
func (s *Session) drain() error {
	if s.pacedPeer() {
		return s.drainPaced()
	}
	for {
		prio, segs := s.q.take()
		if len(prio) == 0 && len(segs) == 0 {
			return nil
		}
		if err := s.write(prio, false); err != nil {
			return err
		}
		for i := 0; i < len(segs); {
			// Runs of small segments go out in one vectored write.
			j, n := i, 0
			for j < len(segs) && n+len(segs[j].b) <= maxWrite {
				n += len(segs[j].b)
				j++
			}
			var err error
			if j-i > 1 {
				err = s.writev(segs[i:j])
				i = j
			} else {
				err = s.writeFrames(segs[i].b)
				i++
			}
			if err != nil {
				return err
			}
			if err := s.writePrio(); err != nil {
				return err
			}
		}
		s.q.done(segs, s.highWater()/2)
	}
}

// writeFrames writes b, whole frames, in writes of at most maxWrite bytes
// that end between frames; keepalives queued meanwhile go out between
// them, so a long backlog never starves them.
func (s *Session) writeFrames(b []byte) error {
	for len(b) > 0 {
		n := wholeFrames(b, maxWrite)
		if err := s.write(b[:n], true); err != nil {
			return err
		}
		b = b[n:]
		if err := s.writePrio(); err != nil {
			return err
		}
	}
	return nil
}

// wholeFrames returns the length of the longest run of whole frames at the
// start of b that fits in limit bytes, and at least one frame.
func wholeFrames(b []byte, limit int) int {
	n := 0
	for n < len(b) {
		k := frameLen(b[n:])
		if n > 0 && n+k > limit {
			break
		}
		n += k
	}
	return n
}

// writePrio writes the priority frames queued since the last take.
func (s *Session) writePrio() error {
	if p := s.q.takePrio(); len(p) > 0 {
		return s.write(p, false)
	}
	return nil
}

// pacedPeer reports whether writes to the peer are paced (pacer.go).
func (s *Session) pacedPeer() bool { return !s.cfg.NoPaceV1 && s.PlainV1() }

// frameLen returns the length of the frame at the start of b, which holds
// whole frames as queued.
func frameLen(b []byte) int {
	return wire.HeaderLen + (int(b[1])<<8 | int(b[2]))
}

// writev writes the segments in one vectored write where the connection
// supports it; as write, each write must make progress within WriteTimeout,
// and the route data written counts as progress.
func (s *Session) writev(segs []segment) error {
	iov, left := s.iov[:0], 0
	for _, sg := range segs {
		if len(sg.b) > 0 { // the kernel is never asked to write nothing
			iov = append(iov, sg.b)
			left += len(sg.b)
		}
	}
	s.iov = iov[:0]
	bufs := net.Buffers(iov)
	for left > 0 {
		if err := s.setWriteDeadline(); err != nil {
			return err
		}
		n, err := bufs.WriteTo(s.conn)
		left -= int(n)
		s.q.wrote(int(n))
		if n > 0 {
			s.progress.Store(time.Now().UnixNano())
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if n == 0 {
					return s.stalled()
				}
				continue
			}
			return fmt.Errorf("write: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("write: %w", io.ErrShortWrite) // never loop on nothing
		}
	}
	clear(iov)
	return nil
}

// write writes b; each write must make progress within WriteTimeout. Route
// data that the peer accepts counts as write progress (see WaitWritable);
// keepalives and pacing probes do not, since a peer that has stopped
// reading still takes them for a while.
func (s *Session) write(b []byte, counts bool) error {
	for len(b) > 0 {
		if err := s.setWriteDeadline(); err != nil {
			return err
		}
		n, err := s.conn.Write(b)
		s.q.wrote(n)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && n == 0 {
				return s.stalled()
			}
			if !(errors.As(err, &ne) && ne.Timeout()) {
				return fmt.Errorf("write: %w", err)
			}
		}
		if n > 0 && counts {
			s.progress.Store(time.Now().UnixNano())
		}
		b = b[n:]
	}
	return nil
}

// minReadRate is the slowest a peer may read what it is sent, in bytes per
// second, once data has waited WriteTimeout for it: about 800 updates a
// second, far below any real reader (docs/security.md).
const minReadRate = 32 << 10

// setWriteDeadline sets the deadline of the next write: WriteTimeout from
// now, and no later than the time by which a peer reading at minReadRate
// would have read the next byte of route data: WriteTimeout plus the bytes
// that were pending ahead of it at minReadRate, after it was queued. A peer
// that reads a trickle makes every write progress, and would otherwise keep
// a growing queue waiting for ever; this way it is closed, however it
// reads, while a slow reader given a large table has all the time that
// table needs at minReadRate. It returns ErrStalled once that time passed.
func (s *Session) setWriteDeadline() error {
	return s.writeDeadline(true)
}

// stalled returns the error of a write that timed out without progress:
// the route data was due, or the peer took nothing for WriteTimeout.
func (s *Session) stalled() error {
	if err := s.writeDeadline(false); err != nil {
		return err
	}
	return fmt.Errorf("%w for %v", ErrStalled, s.cfg.WriteTimeout)
}

// writeDeadline computes the deadline of setWriteDeadline, setting it on
// the connection if set is true.
func (s *Session) writeDeadline(set bool) error {
	now := time.Now()
	deadline := now.Add(s.cfg.WriteTimeout)
	if at, ahead, ok := s.q.nextDue(); ok {
		allowed := s.cfg.WriteTimeout + time.Duration(ahead)*time.Second/minReadRate
		if due := at.Add(allowed); due.Before(deadline) {
			deadline = due
		}
		if !now.Before(deadline) {
			return fmt.Errorf("%w: data queued %v ago behind %d bytes not yet written (reading slower than %d bytes/s)",
				ErrStalled, now.Sub(at).Truncate(time.Millisecond), ahead, minReadRate)
		}
	}
	if !set {
		return nil
	}
	return s.conn.SetWriteDeadline(deadline)
}
