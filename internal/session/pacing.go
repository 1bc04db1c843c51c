package session

// Pacing of writes to plain v1 peers (issue 8; docs/pacing.md).
//
// The deployed v1 implementation reads its socket into a 65,535-byte buffer
// and resets the session when a read fills it. So for a peer that advertised
// no extensions, the writer keeps the bytes the peer has not read yet (its
// backlog) well below 64 KiB. On Linux the socket tells how far ahead we are:
// SIOCOUTQ counts the bytes written and not yet acknowledged, and TCP_INFO's
// tcpi_snd_wnd is the window the peer advertised last, which shrinks by what
// sits unread in its receive buffer. The backlog estimate is
//
//	outq + (largest window seen − current window)
//
// and the writer writes only while it is below a target, in chunks no larger
// than the room left. Everything else — a fast reader getting full speed, a
// slow one getting exactly what it can take — follows from polling that
// estimate often enough: a few yields first (a fast reader answers within
// microseconds), then sleeps that double up to a few milliseconds. Where the
// socket gives no evidence (not TCP, not Linux, a kernel without
// tcpi_snd_wnd) a fixed rate in small chunks stands in for it.

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metalbond/metalbond/internal/wire"
)

// paceParams are the constants of the pacing decision. They live in a struct
// so that tests can state them; production uses defaultPace.
type paceParams struct {
	// Target is the backlog the writer fills a settled peer up to.
	Target int
	// WarmTarget replaces Target until the peer's window has settled: while
	// its largest window is still growing, the estimate can miss up to the
	// growth still to come.
	WarmTarget int
	// Settle is how many bytes must be written without the largest window
	// growing by more than SettleSlack before the peer counts as settled.
	Settle, SettleSlack int
	// MinChunk is the smallest write worth making when there is room for
	// less than what is waiting.
	MinChunk int
	// Probe is the size of a write made to learn the peer's window when the
	// socket has gone quiet: a reader that emptied its buffer does not always
	// announce the larger window by itself. ProbeSlack is how far a probe
	// may take the estimate above the target, ProbeAfter how long the
	// evidence must have been unchanged first.
	Probe, ProbeSlack int
	ProbeAfter        time.Duration
	// Yields is the number of polls that only yield the processor before
	// the writer starts to sleep; MinSleep and MaxSleep bound the sleeps,
	// which double from one poll to the next.
	Yields             int
	MinSleep, MaxSleep time.Duration

	// Without evidence: FallbackRate bytes per second, in writes of at most
	// FallbackChunk bytes.
	FallbackRate, FallbackChunk int
}

// defaultPace are the production parameters. The 65,535-byte limit of the
// deployed reader is far from Target even when the estimate errs by a whole
// window growth (see docs/pacing.md for the figures).
var defaultPace = paceParams{
	Target:        32 << 10,
	WarmTarget:    16 << 10,
	Settle:        128 << 10,
	SettleSlack:   4 << 10,
	MinChunk:      1 << 10,
	Probe:         1 << 10,
	ProbeSlack:    8 << 10,
	ProbeAfter:    2 * time.Millisecond,
	Yields:        24,
	MinSleep:      250 * time.Microsecond,
	MaxSleep:      4 * time.Millisecond,
	FallbackRate:  256 << 10,
	FallbackChunk: 4 << 10,
}

// sample is what the socket says about the peer at one moment.
type sample struct {
	// Outq is the number of bytes written and not yet acknowledged
	// (SIOCOUTQ), in flight or still in our send buffer.
	Outq int
	// Wnd is the receive window the peer advertised last (tcpi_snd_wnd).
	Wnd int
}

// paceState is what the decision remembers between samples. It is owned by
// the writer goroutine.
type paceState struct {
	peak      int       // largest window seen: the peer's window when it has read everything
	sinceGrow int       // bytes allowed since peak last grew by more than SettleSlack
	last      sample    // previous sample
	lastAt    time.Time // when the samples last changed
	polls     int       // consecutive decisions to wait
	started   bool
}

// decision is the outcome of one pacing decision.
type decision struct {
	// Allow is how many bytes may be written now; zero means wait.
	Allow int
	// Wait is how long to wait before asking again when Allow is zero;
	// zero means yield the processor once.
	Wait time.Duration
	// Backlog is the estimate of bytes written that the peer has not read.
	Backlog int
	// Probe is set when Allow is a probe rather than room below the target.
	Probe bool
	// Drained is set when the estimate fell since the previous sample: the
	// peer is reading, which counts as write progress.
	Drained bool
}

// decide is the pacing decision for a peer whose socket yields samples:
// given the latest sample and want bytes waiting, it says how many to write
// now or how long to wait. It is a pure function of its arguments and st,
// which it updates.
func (p *paceParams) decide(st *paceState, s sample, want int, now time.Time) decision {
	if !st.started {
		st.started = true
		st.peak = s.Wnd
		st.last = s
		st.lastAt = now
	}
	if s.Wnd > st.peak {
		if s.Wnd-st.peak > p.SettleSlack {
			st.sinceGrow = 0
		}
		st.peak = s.Wnd
	}
	backlog := s.Outq + st.peak - s.Wnd
	prev := st.last.Outq + st.peak - st.last.Wnd
	var d decision
	d.Backlog = backlog
	d.Drained = backlog < prev
	if s != st.last {
		st.last, st.lastAt = s, now
	}

	target := p.Target
	if st.sinceGrow < p.Settle {
		target = p.WarmTarget
	}
	room := target - backlog
	switch {
	case room > 0 && room >= min(want, p.MinChunk):
		d.Allow = min(want, room)
	case s.Outq == 0 && now.Sub(st.lastAt) >= p.ProbeAfter && backlog+p.Probe <= target+p.ProbeSlack:
		// Everything is acknowledged and nothing has moved for a while:
		// the window may be stale. A small write makes the peer answer with
		// its current window.
		d.Allow = min(want, p.Probe)
		d.Probe = true
	}
	if d.Allow > 0 {
		st.polls = 0
		st.sinceGrow += d.Allow
		return d
	}
	d.Wait = p.backoff(st.polls)
	st.polls++
	return d
}

// backoff returns how long to wait after the n-th consecutive decision to
// wait: nothing (a yield) for the first Yields polls, then sleeps doubling
// from MinSleep to MaxSleep.
func (p *paceParams) backoff(n int) time.Duration {
	if n < p.Yields {
		return 0
	}
	d := p.MinSleep
	for i := p.Yields; i < n && d < p.MaxSleep; i++ {
		d *= 2
	}
	return min(d, p.MaxSleep)
}

// fallbackState is a token bucket for peers without socket evidence.
type fallbackState struct {
	tokens float64
	at     time.Time
}

// decideFallback paces without evidence: at most FallbackRate bytes per
// second in writes of at most FallbackChunk bytes. It is a pure function of
// its arguments and st, which it updates.
func (p *paceParams) decideFallback(st *fallbackState, want int, now time.Time) decision {
	burst := float64(p.FallbackChunk)
	if st.at.IsZero() {
		st.tokens = burst
	} else {
		st.tokens = min(burst, st.tokens+now.Sub(st.at).Seconds()*float64(p.FallbackRate))
	}
	st.at = now
	need := float64(min(want, p.FallbackChunk))
	if st.tokens >= need {
		st.tokens -= need
		return decision{Allow: int(need)}
	}
	wait := time.Duration((need - st.tokens) / float64(p.FallbackRate) * float64(time.Second))
	return decision{Wait: max(wait, p.MinSleep)}
}

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

	st        paceState
	fb        fallbackState
	noWindow  bool        // the socket reports no window: use the fallback
	timer     *time.Timer // reused for sleeps
	lastPace  time.Time   // when pace last returned
	kaAt      time.Time   // when a paced client sends its next keepalive
	announced bool        // pacing was logged

	active  atomic.Bool  // the peer is plain v1 and its writes are paced
	waited  atomic.Int64 // nanoseconds the writer waited for the peer
	backlog atomic.Int64 // last backlog estimate in bytes
	peak    atomic.Int64 // st.peak, for Info
}

func (pc *pacing) init(s *Session) {
	pc.once.Do(func() { pc.src = newEvidenceSource(s.conn) })
}

// pace is called by the writer before it writes a chunk of n bytes of route
// data to the peer and returns how many of them may be written now. Peers
// that advertised extensions read correctly at any speed and are not paced.
// For a plain v1 peer it waits until the peer has read enough (see the top
// of this file), while:
//   - priority frames (keepalives) are waiting: it returns 0 so that the
//     writer sends them at once;
//   - a client has been paced for half a keepalive interval: it queues a
//     keepalive of its own (the writer loop's ticker is not served while
//     the writer drains), and returns 0;
//   - the session closes: it returns ErrClosed;
//   - the peer reads nothing for WriteTimeout: it returns ErrStalled.
//
// A peer that reads counts as making write progress.
func (s *Session) pace(n int) (int, error) {
	if !s.cfg.PaceV1 || !s.PlainV1() {
		return n, nil
	}
	pc := &s.pacing
	pc.init(s)
	if !pc.announced {
		pc.announced = true
		pc.active.Store(true)
		mode := "socket evidence"
		if pc.src == nil {
			mode = "fixed rate (no socket evidence)"
		}
		s.cfg.Logger.Info("pacing writes to plain v1 peer", "mode", mode)
	}
	now := time.Now()
	ka := time.Duration(s.keepalive.Load())
	if now.Sub(pc.lastPace) > ka/4 {
		// A new drain: the writer loop's ticker kept keepalives going
		// until now.
		pc.kaAt = now.Add(ka / 2)
	}
	defer func() { pc.lastPace = time.Now() }()

	var waitStart time.Time
	defer func() {
		if !waitStart.IsZero() {
			pc.waited.Add(int64(time.Since(waitStart)))
		}
	}()
	stallAt := now.Add(s.cfg.WriteTimeout)
	for {
		d := s.paceOnce(n, now)
		if d.Allow > 0 {
			return d.Allow, nil
		}
		if waitStart.IsZero() {
			waitStart = now
		}
		if d.Drained {
			s.progress.Store(now.UnixNano())
			stallAt = now.Add(s.cfg.WriteTimeout)
		}
		if s.q.hasPrio() {
			return 0, nil
		}
		if s.cfg.Role == RoleClient && s.State() == StateEstablished && ka > 0 && !now.Before(pc.kaAt) {
			pc.kaAt = now.Add(ka / 2)
			s.sendPrio(wire.Keepalive{})
			return 0, nil
		}
		if now.After(stallAt) {
			return 0, ErrStalled
		}
		if err := pc.sleep(s, d.Wait); err != nil {
			return 0, err
		}
		now = time.Now()
	}
}

// paceOnce samples the socket and decides.
func (s *Session) paceOnce(n int, now time.Time) decision {
	pc := &s.pacing
	if pc.src != nil && !pc.noWindow {
		sm, err := pc.src.sample()
		switch {
		case err != nil:
			// The connection is going away; let the write report it.
			return decision{Allow: n}
		case sm.Wnd == 0 && !pc.st.started:
			// A kernel without tcpi_snd_wnd (before 5.4): the first
			// window is never zero otherwise.
			pc.noWindow = true
			s.cfg.Logger.Info("no TCP window evidence: pacing plain v1 peer at a fixed rate")
		default:
			d := defaultPace.decide(&pc.st, sm, n, now)
			pc.backlog.Store(int64(d.Backlog))
			pc.peak.Store(int64(pc.st.peak))
			return d
		}
	}
	return defaultPace.decideFallback(&pc.fb, n, now)
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

// hasPrio reports whether priority frames wait to be written.
func (q *queue) hasPrio() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.prio) > 0
}

// fillPacing adds the pacing figures to in. The backlog is sampled afresh
// when the socket allows, so that it falls to zero once the peer has read
// everything.
func (s *Session) fillPacing(in *Info) {
	pc := &s.pacing
	in.Paced = pc.active.Load()
	if !in.Paced {
		return
	}
	in.PacedTime = time.Duration(pc.waited.Load())
	in.BacklogBytes = int(pc.backlog.Load())
	pc.init(s)
	if pc.src == nil || s.State() == StateClosed {
		return
	}
	if peak := int(pc.peak.Load()); peak > 0 {
		if sm, err := pc.src.sample(); err == nil {
			in.BacklogBytes = sm.Outq + max(0, peak-sm.Wnd)
		}
	}
}
