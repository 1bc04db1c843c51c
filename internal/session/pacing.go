package session

// Pacing of writes to plain v1 peers (docs/pacing.md).
//
// The deployed v1 implementation reads its socket into a 65,535-byte buffer
// and resets the session when a read fills it; it parses every read from its
// first byte as if the read held whole messages; and it spends time on every
// message. So for a peer that advertised no extensions the writer keeps two
// rules:
//
//   - every read the peer makes returns whole messages: each write is whole
//     frames, no larger than the connection's MSS and the peer's open
//     window, and is made only when the socket holds no unsent bytes, so
//     that the kernel sends it as one segment of its own (a read returns
//     the bytes up to the end of the last segment that arrived);
//   - the bytes the peer may not have read yet — its backlog — stay well
//     below 64 KiB.
//
// The rest of this comment is about the second rule.
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
//     released at the conservative GrowRate, or at half the highest rate
//     at which the peer was seen to read while its window told
//     (ReadRateWindow), when that is lower: while the window grows it
//     cannot show a reader that falls behind.
//
// The writer writes while written − read is below Target. When everything
// is acknowledged and nothing moves, the window may be stale — a receiver
// announces a reopened window by itself only when it doubles — and small
// probes, further and further apart, make the peer answer. A receiver also
// lowers its open window a little over time; when the window stays the same
// while the peer takes probes for Settle, the writer lowers its idea of the
// largest window — by at most SettleMax in all until the window opens again,
// since a peer that stopped reading can show the same: its receiver keeps
// the window while the buffer has room, and rounds small probes away.
//
// Waiting is polling: a few yields (a fast reader answers within
// microseconds), then sleeps that double up to a few milliseconds. Where the
// socket gives no evidence (not TCP, not Linux, no tcpi_snd_wnd) a fixed
// rate in small writes stands in for it.

import "time"

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
	// ReadRateWindow is the interval over which the peer's read rate is
	// measured while the writer waits for it; MinGrowRate is the lowest
	// rate of release of the growth bytes.
	ReadRateWindow time.Duration
	MinGrowRate    int
	// Segment bounds one write (the MSS and the open window bound it
	// further); MinChunk is the smallest write worth making when there is
	// room for less than what is waiting (small segments make a Linux
	// receiver lower its window).
	Segment, MinChunk int
	// Probes: the first is Probe bytes, each further one twice as large up
	// to ProbeMaxSize; they come ProbeAfter apart, doubling up to
	// ProbeMaxGap; ProbeSlack is how far they may take the backlog above
	// Target.
	Probe, ProbeMaxSize, ProbeSlack int
	ProbeAfter, ProbeMaxGap         time.Duration
	// Settle is how long the window must stay the same, with everything
	// acknowledged and probes taken, before the writer lowers its idea of
	// the largest window to it; SettleMax bounds the lowering until the
	// window opens again.
	Settle    time.Duration
	SettleMax int
	// Yields is the number of polls that only yield the processor before
	// the writer starts to sleep; MinSleep and MaxSleep bound the sleeps,
	// which double from one poll to the next.
	Yields             int
	MinSleep, MaxSleep time.Duration

	// Without evidence: FallbackRate bytes per second, in writes of at most
	// FallbackChunk bytes (small enough for one segment on any IPv6 path).
	FallbackRate, FallbackChunk int
}

// defaultPace are the production parameters (docs/pacing.md has the
// measurements behind them).
var defaultPace = paceParams{
	Target:         48 << 10,
	Hidden:         32 << 10,
	OpenSlack:      8 << 10,
	GrowRate:       256 << 10,
	ReadRateWindow: 100 * time.Millisecond,
	MinGrowRate:    16 << 10,
	Segment:        8 << 10,
	MinChunk:       4 << 10,
	Probe:          64,
	ProbeMaxSize:   2 << 10,
	ProbeSlack:     4 << 10,
	ProbeAfter:     2 * time.Millisecond,
	ProbeMaxGap:    128 * time.Millisecond,
	Settle:         time.Second,
	SettleMax:      8 << 10,
	Yields:         8,
	MinSleep:       250 * time.Microsecond,
	MaxSleep:       4 * time.Millisecond,
	FallbackRate:   256 << 10,
	FallbackChunk:  1220,
}

// sample is what the socket says at one moment.
type sample struct {
	// Outq is the number of bytes written and not yet acknowledged
	// (SIOCOUTQ), in flight or still in our send buffer.
	Outq int
	// Wnd is the receive window the peer advertised last (tcpi_snd_wnd).
	Wnd int
	// Unsent is the part of Outq not sent yet (SIOCOUTQNSD): bytes the
	// kernel would merge a new write with.
	Unsent int
	// MSS is the largest segment the connection sends now (tcpi_snd_mss,
	// less what a TLS record adds); zero when unknown.
	MSS int
}

// waiting describes the frames waiting to be written.
type waiting struct {
	// Next is the size of the first frame, Total the bytes of all of them.
	Next, Total int
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
	// settled is how far settling lowered the peak since the window last
	// opened (bounded by SettleMax).
	settled int

	// The peer's read rate: the highest measured over ReadRateWindow
	// intervals in which the writer waited for it and the window told (no
	// growth). A lower measurement says more about what the writer sent
	// than about the reader.
	rate       float64 // bytes per second; zero: not measured yet
	rateAt     time.Time
	rateRead   int64 // read at rateAt
	rateWaited bool  // the writer waited since rateAt
	last       sample
	prevAt     time.Time // previous decision
	lastAt     time.Time // when the samples last changed, or the writer last wrote
	polls      int       // consecutive decisions to wait
	probes     int       // probes since the window last changed

	stableSince  time.Time // since when the window has been last.Wnd
	stableProbes int       // probes written since then
}

// decision is the outcome of one pacing decision.
type decision struct {
	// Allow is how many bytes may be written now: the writer writes as
	// many whole frames as fit (Allow is at least the next frame's size).
	// Zero means wait.
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
// given the latest sample and the frames waiting, it says how many bytes to
// write now or how long to wait. It is a pure function of its arguments and
// st, which it updates; wrote records what was then written.
func (p *paceParams) decide(st *paceState, s sample, w waiting, now time.Time) decision {
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
		st.grow = max(0, st.grow-int64(now.Sub(st.prevAt).Seconds()*p.growRate(st)))
	}
	st.prevAt = now
	switch {
	case s.Wnd > st.peak:
		// The window grew past anything seen: while it grows the peer
		// acknowledges at once what arrives, read or not.
		st.grow += dA
		st.peak = s.Wnd
		st.slack = 0
	case s.Wnd >= st.peak-p.openSlack(st.peak):
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
	if s.Wnd > st.last.Wnd && dA == 0 {
		// The window opened with nothing arriving: the peer read.
		st.settled = 0
	}
	if s.Outq == 0 && st.stableProbes > 0 && s.Wnd < st.peak && st.settled < p.SettleMax && now.Sub(st.stableSince) >= p.Settle {
		// The window stayed put while the peer took probes: it may be
		// the window of a peer that has read everything, lowered over
		// time — or of one that stopped reading, whose receiver keeps
		// its window while its buffer has room and rounds small probes
		// away. So the peak falls by at most SettleMax in all until the
		// window opens again, which only a read does.
		lower := min(st.peak-s.Wnd, p.SettleMax-st.settled)
		st.peak -= lower
		st.settled += lower
		st.slack = 0
		st.stableSince, st.stableProbes = now, 0
	}

	p.measureRate(st, now)
	backlog := int(st.written - st.read)
	d.Backlog = backlog
	if s.Unsent == 0 {
		d.Allow, d.Probe = p.allow(st, s, w, backlog, now)
	}
	if d.Allow > 0 {
		return d
	}
	d.Wait = p.backoff(st.polls)
	st.polls++
	st.rateWaited = true
	return d
}

// measureRate updates the read rate at the end of each ReadRateWindow in
// which the writer waited for the peer and no growth was pending.
func (p *paceParams) measureRate(st *paceState, now time.Time) {
	if st.rateAt.IsZero() || st.grow > 0 {
		st.rateAt, st.rateRead, st.rateWaited = now, st.read, false
		return
	}
	dt := now.Sub(st.rateAt)
	if dt < p.ReadRateWindow {
		return
	}
	if st.rateWaited {
		st.rate = max(st.rate, float64(st.read-st.rateRead)/dt.Seconds())
	}
	st.rateAt, st.rateRead, st.rateWaited = now, st.read, false
}

// growRate is the rate at which growth bytes are taken as read.
func (p *paceParams) growRate(st *paceState) float64 {
	r := float64(p.GrowRate)
	if st.rate > 0 {
		r = min(r, max(float64(p.MinGrowRate), st.rate/2))
	}
	return r
}

// allow is the size of the write that may be made now, by the backlog
// bound or as a probe, or zero. It is called only when the socket holds
// nothing unsent, and returns either zero or at least w.Next.
func (p *paceParams) allow(st *paceState, s sample, w waiting, backlog int, now time.Time) (n int, probe bool) {
	limit := min(w.Total, p.Segment)
	if s.MSS > 0 {
		limit = min(limit, max(s.MSS, w.Next)) // a frame larger than the MSS goes alone
	}
	if s.Wnd > 0 {
		limit = min(limit, s.Wnd-s.Outq) // more would wait in our socket
	}
	if limit < w.Next {
		return 0, false
	}
	room := p.Target - backlog
	probeSize := min(p.Probe<<min(st.probes, 10), p.ProbeMaxSize)
	gap := min(p.ProbeAfter<<min(st.probes, 10), p.ProbeMaxGap)
	switch {
	case room >= w.Next && room >= min(limit, p.MinChunk):
		if room < limit && room >= 2*p.MinChunk {
			// The writer will wait after this: leave it in two
			// segments. A receiver that takes one small segment may
			// acknowledge it only when its delayed-ACK timer fires;
			// after two it acknowledges as soon as it has read them.
			return room / 2, false
		}
		return min(limit, room), false
	case s.Outq == 0 && now.Sub(st.lastAt) >= gap && backlog+probeSize <= p.Target+p.ProbeSlack:
		// Everything is acknowledged and nothing moves: the window may
		// be stale. A small write of whole frames makes the peer answer.
		return min(limit, max(w.Next, probeSize)), true
	}
	return 0, false
}

// openSlack is how far below the largest window a window still counts as
// open: OpenSlack, or a sixteenth of a large window (a receiver whose
// buffer has grown to megabytes moves its window by more than a few
// kilobytes for reasons of its own, such as the truesize of small segments).
func (p *paceParams) openSlack(peak int) int { return max(p.OpenSlack, peak/16) }

// wrote records that n bytes were written after a decision that allowed
// them.
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
// second in writes of whole frames of at most FallbackChunk bytes (or one
// frame). It is a pure function of its arguments and st, which it updates.
func (p *paceParams) decideFallback(st *fallbackState, w waiting, now time.Time) decision {
	burst := float64(p.FallbackChunk)
	if st.at.IsZero() {
		st.tokens = burst
	} else {
		st.tokens = min(burst, st.tokens+now.Sub(st.at).Seconds()*float64(p.FallbackRate))
	}
	st.at = now
	need := float64(max(w.Next, min(w.Total, p.FallbackChunk)))
	if st.tokens >= need {
		st.tokens -= need
		return decision{Allow: int(need)}
	}
	wait := time.Duration((need - st.tokens) / float64(p.FallbackRate) * float64(time.Second))
	return decision{Wait: max(wait, p.MinSleep)}
}
