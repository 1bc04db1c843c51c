package session

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The paced writer: how the writer goroutine sends to a plain v1 peer
// (pacing.go has the decision, docs/pacing.md the reasons). Every write is
// whole frames — keepalives queued meanwhile first, then route data — of the
// size the decision allows, made only when the socket holds nothing unsent.

// evidenceSource samples a connection's socket. Implementations are safe
// for concurrent use.
type evidenceSource interface {
	sample() (sample, error)
}

// pacing is a session's pacing state. The writer goroutine owns the fields
// above the atomics; the atomics are read by Info from any goroutine.
type pacing struct {
	once sync.Once
	src  evidenceSource // nil: no evidence, the fallback paces

	st       paceState
	fb       fallbackState
	noWindow bool        // the kernel reports no window: the fallback paces
	timer    *time.Timer // reused for sleeps
	stallAt  time.Time   // when a peer not seen reading is given up; zero: not waiting
	buf      []byte      // the write being assembled

	active  atomic.Bool  // the peer is plain v1 and its writes are paced
	waited  atomic.Int64 // nanoseconds the writer waited for the peer
	backlog atomic.Int64 // last backlog bound in bytes
}

// start prepares pacing on the writer's first paced write.
func (pc *pacing) start(s *Session) {
	pc.once.Do(func() {
		pc.src = newEvidenceSource(s.conn)
		pc.active.Store(true)
		mode := "socket evidence"
		if pc.src == nil {
			mode = "fixed rate in small writes (no socket evidence)"
		}
		s.cfg.Logger.Info("pacing writes to plain v1 peer", "mode", mode)
	})
}

// drainPaced writes everything queued to a plain v1 peer until the queue is
// empty, in paced writes of whole frames.
func (s *Session) drainPaced() error {
	pc := &s.pacing
	pc.start(s)
	for {
		prio, segs := s.q.take()
		if len(prio) == 0 && len(segs) == 0 {
			return nil
		}
		f := newFrameCursor(segs)
		for len(prio) > 0 || !f.empty() {
			prio = append(prio, s.q.takePrio()...)
			w := waiting{Next: f.next(), Total: f.left}
			if len(prio) > 0 {
				w = waiting{Next: len(prio), Total: len(prio)}
			}
			keepalives := len(prio) > 0
			allow, probe, err := s.pace(w, keepalives)
			if err != nil {
				return err
			}
			if allow == 0 {
				continue // keepalives came meanwhile: they go first
			}
			b := pc.buf[:0]
			if keepalives {
				b, prio = append(b, prio...), prio[:0]
			} else {
				b = f.appendFrames(b, allow)
			}
			pc.buf = b
			if err := s.write(b, !keepalives && !probe); err != nil {
				return err
			}
			pc.st.wrote(len(b), probe, time.Now())
		}
		s.q.done(segs, s.highWater()/2)
	}
}

// pace waits until a write of whole frames may be made to the plain v1 peer
// and returns its size: w.Total when prio is set (the keepalives waiting go
// out as soon as the socket holds nothing unsent), otherwise what the
// decision allows. While it waits for route data, keepalives queued
// meanwhile make it return so that they go out; a peer that the window does
// not show reading for WriteTimeout, keepalives or not, ends it with
// ErrStalled, and a closing session with ErrClosed. A peer that reads counts
// as making write progress.
func (s *Session) pace(w waiting, prio bool) (allow int, probe bool, err error) {
	pc := &s.pacing
	now := time.Now()
	var waitStart time.Time
	defer func() {
		if !waitStart.IsZero() {
			pc.waited.Add(int64(time.Since(waitStart)))
		}
	}()
	for {
		d, unsent, err := s.paceOnce(w, now)
		if err != nil {
			return w.Total, false, nil // the connection is going away; the write says why
		}
		if d.Drained {
			s.progress.Store(now.UnixNano())
			pc.stallAt = time.Time{}
		}
		switch {
		case prio && unsent == 0:
			return w.Total, false, nil
		case !prio && d.Allow > 0:
			if !d.Probe {
				pc.stallAt = time.Time{}
			}
			return d.Allow, d.Probe, nil
		}
		if pc.stallAt.IsZero() {
			pc.stallAt = now.Add(s.cfg.WriteTimeout)
		}
		if waitStart.IsZero() {
			waitStart = now
		}
		if !prio && unsent == 0 && s.q.hasPrio() {
			return 0, false, nil // the caller takes the keepalives and comes back
		}
		if now.After(pc.stallAt) {
			return 0, false, fmt.Errorf("%w: a plain v1 peer read nothing for %v", ErrStalled, s.cfg.WriteTimeout)
		}
		if err := pc.sleep(s, d.Wait); err != nil {
			return 0, false, err
		}
		now = time.Now()
	}
}

// paceOnce samples the socket and decides. unsent is the socket's unsent
// byte count (zero without evidence).
func (s *Session) paceOnce(w waiting, now time.Time) (d decision, unsent int, err error) {
	pc := &s.pacing
	if pc.src != nil && !pc.noWindow {
		sm, err := pc.src.sample()
		if err != nil {
			return decision{}, 0, err
		}
		if sm.Wnd == 0 && !pc.st.started {
			// A kernel without tcpi_snd_wnd (before 5.4): a peer's
			// first window is never zero otherwise.
			pc.noWindow = true
			s.cfg.Logger.Info("no TCP window evidence: pacing plain v1 peer at a fixed rate")
		} else {
			d := defaultPace.decide(&pc.st, sm, w, now)
			pc.backlog.Store(int64(d.Backlog))
			return d, sm.Unsent, nil
		}
	}
	return defaultPace.decideFallback(&pc.fb, w, now), 0, nil
}

// sleep waits d (or yields once when d is zero) unless the session closes.
func (pc *pacing) sleep(s *Session, d time.Duration) error {
	if d <= 0 {
		runtime.Gosched()
		select {
		case <-s.done:
			return ErrClosed
		default:
			return nil
		}
	}
	if pc.timer == nil {
		pc.timer = time.NewTimer(d)
	} else {
		pc.timer.Reset(d)
	}
	select {
	case <-s.done:
		pc.timer.Stop()
		return ErrClosed
	case <-pc.timer.C:
		return nil
	}
}

// fillPacing adds the pacing figures to in. The backlog is the bound as of
// the writer's last look at the socket: it stays up after a burst until the
// next one shows the peer read it.
func (s *Session) fillPacing(in *Info) {
	pc := &s.pacing
	in.Paced = pc.active.Load()
	if in.Paced {
		in.PacedTime = time.Duration(pc.waited.Load())
		in.BacklogBytes = int(pc.backlog.Load())
	}
}

// frameCursor walks the whole frames of a take's segments.
type frameCursor struct {
	segs []segment
	cur  []byte // the rest of the current segment
	left int    // bytes not yet consumed
}

func newFrameCursor(segs []segment) frameCursor {
	f := frameCursor{segs: segs}
	for _, sg := range segs {
		f.left += len(sg.b)
	}
	f.skipEmpty()
	return f
}

// skipEmpty moves to the next segment that has bytes left.
func (f *frameCursor) skipEmpty() {
	for len(f.cur) == 0 && len(f.segs) > 0 {
		f.cur, f.segs = f.segs[0].b, f.segs[1:]
	}
}

func (f *frameCursor) empty() bool { return f.left == 0 }

// next returns the size of the next frame, zero when none is left.
func (f *frameCursor) next() int {
	if len(f.cur) == 0 {
		return 0
	}
	return frameLen(f.cur)
}

// appendFrames appends to b as many whole frames as fit in limit bytes,
// and at least one.
func (f *frameCursor) appendFrames(b []byte, limit int) []byte {
	n := 0
	for len(f.cur) > 0 {
		k := frameLen(f.cur)
		if n > 0 && n+k > limit {
			break
		}
		b = append(b, f.cur[:k]...)
		f.cur, f.left, n = f.cur[k:], f.left-k, n+k
		f.skipEmpty()
	}
	return b
}
