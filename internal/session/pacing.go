package session

// Pacing of writes to plain v1 peers (issue 8; docs/pacing.md).
//
// The deployed v1 implementation reads its socket into a 65,535-byte buffer
// and resets the session when a read fills it; it also spends time on every
// message. So for a peer that advertised no extensions the writer keeps the
// bytes the peer may not have read yet — its backlog — well below 64 KiB.
//
// A sender cannot see its peer read. TCP acknowledges what the peer's
// kernel received, not what the application read, and a Linux receiver
// acknowledges at once or late for reasons of its own. What does bound the
// backlog is memory: the window a receiver advertises never exceeds its free
// receive buffer, so what it acknowledged and did not read is at most its
// buffer minus its window. The writer estimates the buffer as Hidden more
// than the largest window the peer advertised (a receiver caps its window
// below its free buffer by about the size of what arrives into an empty
// buffer), and keeps a lower bound of the bytes read:
//
//	read ≥ acknowledged − (largest window + Hidden − window) − slack − grow
//
// acknowledged being written minus SIOCOUTQ and the window tcpi_snd_wnd.
// Two corrections keep the bound a bound:
//   - slack: bytes acknowledged without the window shrinking accordingly
//     (small writes merged into buffer space the peer had already charged)
//     count as unread until the window is open again;
//   - grow: bytes acknowledged while the window grows past anything seen
//     (after receive-buffer autotuning a Linux receiver grows its window and
//     acknowledges at once with every arrival) count as unread and are
//     released at the conservative GrowRate.
//
// The writer writes while written − read is below Target. When everything
// is acknowledged and nothing moves, the window may be stale — a receiver
// announces a reopened window by itself only when it doubles — and small
// probes, further and further apart, make the peer answer. A receiver also
// lowers its open window a little over time; when the window stays the same
// while the peer takes probes for Settle, the writer lowers its idea of the
// largest window by up to SettleMax.
//
// Waiting is polling: a few yields (a fast reader answers within
// microseconds), then sleeps that double up to a few milliseconds. Where the
// socket gives no evidence (not TCP, not Linux, no tcpi_snd_wnd) a fixed
// rate in small writes stands in for it.

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// paceParams are the constants of the pacing decision. They live in a struct
// so that tests can state them; production uses defaultPace.
type paceParams struct {
	// Target bounds the backlog: bytes written that the peer may not have
	// read. The writer may exceed it by the rest of a frame and by probes.
	Target int
	// Hidden is how much larger than its largest window the peer's
	// receive buffer is taken to be.
	Hidden int
	// OpenSlack is how far below its largest window a window still counts
	// as open (receivers round and lower it a little).
	OpenSlack int
	// GrowRate is the rate, in bytes per second, at which bytes
	// acknowledged while the window grew are taken as read.
	GrowRate int
	// Segment bounds one write; MinChunk is the smallest write worth
	// making when there is room for less than what is waiting (small
	// segments make a Linux receiver lower its window).
	Segment, MinChunk int
	// Probes: the first is Probe bytes, each further one twice as large up
	// to ProbeMaxSize; they come ProbeAfter apart, doubling up to
	// ProbeMaxGap; ProbeSlack is how far they may take the backlog above
	// Target.
	Probe, ProbeMaxSize, ProbeSlack int
	ProbeAfter, ProbeMaxGap         time.Duration
	// Settle is how long the window must stay the same, with everything
	// acknowledged and probes taken, before the writer lowers its idea of
	// the largest window to it, by at most SettleMax.
	Settle    time.Duration
	SettleMax int
	// Yields is the number of polls that only yield the processor before
	// the writer starts to sleep; MinSleep and MaxSleep bound the sleeps,
	// which double from one poll to the next.
	Yields             int
	MinSleep, MaxSleep time.Duration

	// Without evidence: FallbackRate bytes per second, in writes of at most
	// FallbackChunk bytes.
	FallbackRate, FallbackChunk int
}

// defaultPace are the production parameters (docs/pacing.md has the
// measurements behind them).
var defaultPace = paceParams{
	Target:        48 << 10,
	Hidden:        32 << 10,
	OpenSlack:     8 << 10,
	GrowRate:      256 << 10,
	Segment:       8 << 10,
	MinChunk:      4 << 10,
	Probe:         64,
	ProbeMaxSize:  2 << 10,
	ProbeSlack:    4 << 10,
	ProbeAfter:    2 * time.Millisecond,
	ProbeMaxGap:   128 * time.Millisecond,
	Settle:        time.Second,
	SettleMax:     16 << 10,
	Yields:        8,
	MinSleep:      250 * time.Microsecond,
	MaxSleep:      4 * time.Millisecond,
	FallbackRate:  256 << 10,
	FallbackChunk: 4 << 10,
}

// sample is what the socket says at one moment.
type sample struct {
	// Outq is the number of bytes written and not yet acknowledged
	// (SIOCOUTQ), in flight or still in our send buffer.
	Outq int
	// Wnd is the receive window the peer advertised last (tcpi_snd_wnd).
	Wnd int
}

// paceState is what the decision remembers. It is owned by the writer
// goroutine.
type paceState struct {
	started bool
	written int64 // bytes written through pace
	read    int64 // lower bound of the bytes the peer has read
	acked   int64 // written minus Outq at the previous sample
	peak    int   // largest window seen (lowered by settling)
	slack   int64 // bytes acknowledged without a matching shrink of the window
	grow    int64 // bytes acknowledged while the window grew
	last    sample
	prevAt  time.Time // previous decision
	lastAt  time.Time // when the samples last changed, or the writer last wrote
	polls   int       // consecutive decisions to wait
	probes  int       // probes since the window last changed

	stableSince  time.Time // since when the window has been last.Wnd
	stableProbes int       // probes written since then
}

// decision is the outcome of one pacing decision.
type decision struct {
	// Allow is how many bytes may be written now; zero means wait.
	Allow int
	// Probe is set when the bytes are a probe.
	Probe bool
	// Wait is how long to wait before asking again when Allow is zero;
	// zero means yield the processor once.
	Wait time.Duration
	// Backlog is the bound of bytes written that the peer has not read.
	Backlog int
	// Drained is set when the bound fell because the window showed the
	// peer reading, which counts as write progress.
	Drained bool
}

// decide is the pacing decision for a peer whose socket yields samples:
// given the latest sample and want bytes waiting, it says how many to write
// now or how long to wait. It is a pure function of its arguments and st,
// which it updates; wrote records what was then written.
func (p *paceParams) decide(st *paceState, s sample, want int, now time.Time) decision {
	if !st.started {
		st.started = true
		st.peak = s.Wnd
		st.last = s
		st.lastAt, st.stableSince, st.prevAt = now, now, now
	}
	acked := st.written - int64(s.Outq)
	dA := max(0, acked-st.acked)
	st.acked = acked
	if st.grow > 0 && now.After(st.prevAt) {
		st.grow = max(0, st.grow-int64(now.Sub(st.prevAt).Seconds()*float64(p.GrowRate)))
	}
	st.prevAt = now
	switch {
	case s.Wnd > st.peak:
		// The window grew past anything seen: while it grows the peer
		// acknowledges at once what arrives, read or not.
		st.grow += dA
		st.peak = s.Wnd
		st.slack = 0
	case s.Wnd >= st.peak-p.OpenSlack:
		st.slack = 0
	default:
		// Bytes acknowledged without the window shrinking as much may
		// sit unread in buffer space the peer had already charged.
		st.slack += max(0, dA-int64(max(0, st.last.Wnd-s.Wnd)))
	}
	var d decision
	if read := acked - int64(st.peak+p.Hidden-s.Wnd) - st.slack - st.grow; read > st.read {
		st.read = read
		d.Drained = true
	}
	if s.Wnd != st.last.Wnd {
		st.probes = 0
		st.stableSince, st.stableProbes = now, 0
	}
	if s != st.last {
		st.last, st.lastAt = s, now
	}
	if s.Outq == 0 && st.stableProbes > 0 && s.Wnd < st.peak && now.Sub(st.stableSince) >= p.Settle {
		// The window stayed put while the peer took probes: it is the
		// window of a peer that has read everything, lowered over time.
		st.peak = max(s.Wnd, st.peak-p.SettleMax)
		st.slack, st.grow = 0, 0
		st.stableSince, st.stableProbes = now, 0
	}

	backlog := int(st.written - st.read)
	d.Backlog = backlog
	room := p.Target - backlog
	probe := min(p.Probe<<min(st.probes, 10), p.ProbeMaxSize)
	gap := min(p.ProbeAfter<<min(st.probes, 10), p.ProbeMaxGap)
	switch {
	case room > 0 && room >= min(want, p.MinChunk):
		d.Allow = min(want, room, p.Segment)
	case s.Outq == 0 && now.Sub(st.lastAt) >= gap && backlog+probe <= p.Target+p.ProbeSlack:
		// Everything is acknowledged and nothing moves: the window may
		// be stale. A small write makes the peer answer.
		d.Allow, d.Probe = min(want, probe), true
	}
	if d.Allow > 0 {
		return d
	}
	d.Wait = p.backoff(st.polls)
	st.polls++
	return d
}

// wrote records that n bytes were written after a decision that allowed
// them (the writer then completes the frame it ended in; the bound does not
// need to know: what is unacknowledged cancels out).
func (st *paceState) wrote(n int, probe bool, now time.Time) {
	if n <= 0 {
		return
	}
	st.polls = 0
	st.written += int64(n)
	st.lastAt = now
	if probe {
		st.probes++
		st.stableProbes++
	}
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
	noWindow  bool        // the kernel reports no window: the fallback paces
	timer     *time.Timer // reused for sleeps
	stallAt   time.Time   // when a peer not seen reading is given up; zero: not waiting
	announced bool        // pacing was logged

	active  atomic.Bool  // the peer is plain v1 and its writes are paced
	waited  atomic.Int64 // nanoseconds the writer waited for the peer
	backlog atomic.Int64 // last backlog bound in bytes
}

func (pc *pacing) init(s *Session) {
	pc.once.Do(func() { pc.src = newEvidenceSource(s.conn) })
}

// pace is called by the writer before it writes up to n bytes of route data
// to the peer and returns how many of them may be written now (the writer
// then completes the frame that count ends in), and whether writing them
// counts as progress (a probe does not). Peers that advertised extensions
// read correctly at any speed and are not paced. For a plain v1 peer it
// waits until the peer has read enough (see the top of this file), while:
//   - priority frames (keepalives) are waiting: it returns 0 so that the
//     writer sends them at once;
//   - the session closes: it returns ErrClosed;
//   - the window shows no reading for WriteTimeout, keepalives or not: it
//     returns ErrStalled.
//
// A peer that reads counts as making write progress.
func (s *Session) pace(n int) (allow int, counts bool, err error) {
	if s.cfg.NoPaceV1 || !s.PlainV1() {
		return n, true, nil
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
	var waitStart time.Time
	defer func() {
		if !waitStart.IsZero() {
			pc.waited.Add(int64(time.Since(waitStart)))
		}
	}()
	for {
		d, err := s.paceOnce(n, now)
		if err != nil {
			return n, true, nil // the connection is going away; the write says why
		}
		if d.Drained {
			s.progress.Store(now.UnixNano())
			pc.stallAt = time.Time{}
		}
		if d.Allow > 0 {
			if !d.Probe {
				pc.stallAt = time.Time{}
			}
			pc.st.wrote(d.Allow, d.Probe, time.Now())
			return d.Allow, !d.Probe, nil
		}
		if pc.stallAt.IsZero() {
			pc.stallAt = now.Add(s.cfg.WriteTimeout)
		}
		if waitStart.IsZero() {
			waitStart = now
		}
		if s.q.hasPrio() {
			return 0, false, nil
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

// paceOnce samples the socket and decides.
func (s *Session) paceOnce(n int, now time.Time) (decision, error) {
	pc := &s.pacing
	if pc.src != nil && !pc.noWindow {
		sm, err := pc.src.sample()
		if err != nil {
			return decision{}, err
		}
		if sm.Wnd == 0 && !pc.st.started {
			// A kernel without tcpi_snd_wnd (before 5.4): a peer's
			// first window is never zero otherwise.
			pc.noWindow = true
			s.cfg.Logger.Info("no TCP window evidence: pacing plain v1 peer at a fixed rate")
		} else {
			d := defaultPace.decide(&pc.st, sm, n, now)
			pc.backlog.Store(int64(d.Backlog))
			return d, nil
		}
	}
	return defaultPace.decideFallback(&pc.fb, n, now), nil
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
