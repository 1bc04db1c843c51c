package session

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// queue is a session's bounded send queue: encoded frames waiting for the
// writer goroutine, as a list of segments, each of whole frames. Small
// producers append to a segment the queue owns (chunks recycled through a
// pool once written); a producer that sends the same bytes to many
// sessions — a fan-out batch, a VNI's table — queues them by reference
// (pushShared), so they exist once however many queues hold them. The
// writer takes everything queued so far and writes it with as few system
// calls as possible (vectored writes across segments), so a burst of
// messages goes out in few writes and the queue is flushed as soon as it is
// empty.
//
// queue is safe for concurrent use.
type queue struct {
	wake chan struct{} // capacity 1: there is something to write

	mu sync.Mutex // guards the following
	// prio holds frames that jump the queue (keepalives): they are written
	// before segs, so route work never starves keepalives.
	prio []byte
	// keepalives counts the KEEPALIVE answers in prio, which the writer
	// has not taken.
	keepalives int
	// dues record, for runs of the route data waiting in segs, when
	// their first bytes were queued and how many bytes were pending ahead
	// of them then; takenDues are those of the writer's take, of which it
	// has written takeWritten bytes (priority frames included, takePrioN
	// of them). The writer must write each byte within a time derived from
	// them (Session.setWriteDeadline), so that a peer that reads a trickle
	// cannot keep a growing queue waiting for ever.
	dues, takenDues []due
	takeWritten     int
	takePrioN       int
	// segs holds frames in the order they were queued; the last segment
	// is ours to append to if tailOwned.
	segs      []segment
	tailOwned bool
	queued    int // bytes in segs
	// spare is the segment list of a written-out take, kept for reuse.
	spare []segment
	// inflight counts bytes taken by the writer and not yet written.
	inflight int
	closed   bool
	// marks are trackers of frames in segs; taken marks are those of the
	// segments being written.
	marks, takenMarks []*Tracker
	// drained, when non-nil, is closed when pending bytes fall to lowWater
	// or the queue closes; producers applying back-pressure wait on it.
	drained chan struct{}
}

// segment is a run of whole frames. Owned segments are the queue's and
// go back to the chunk pool once written; shared ones are read-only bytes
// that other queues may hold too.
type segment struct {
	b     []byte
	owned bool
}

// chunkSize is the capacity of an owned segment: appends start a new one
// when the last has this much, so a queue that grows to megabytes never
// copies what it holds.
const chunkSize = 32 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, chunkSize); return &b }}

func newQueue() *queue {
	return &queue{wake: make(chan struct{}, 1)}
}

// push appends frames to the queue with fn, which appends to the buffer it
// is given and returns it. It reports the number of pending bytes afterwards
// and false if the queue is closed.
func (q *queue) push(fn func([]byte) []byte, prio bool) (pending int, ok bool) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return 0, false
	}
	if prio {
		q.prio = fn(q.prio)
	} else {
		if !q.tailOwned || len(q.segs[len(q.segs)-1].b) >= chunkSize {
			q.segs = append(q.segs, segment{b: (*chunkPool.Get().(*[]byte))[:0], owned: true})
			q.tailOwned = true
		}
		q.noteQueued()
		tail := &q.segs[len(q.segs)-1]
		n := len(tail.b)
		tail.b = fn(tail.b)
		q.queued += len(tail.b) - n
	}
	pending = q.queued + len(q.prio) + q.inflight
	q.mu.Unlock()
	q.signal()
	return pending, true
}

// pushShared queues frames by reference: b must hold whole frames and
// must not change until the writer has written it, which may be long after
// pushShared returns.
func (q *queue) pushShared(b []byte) (pending int, ok bool) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return 0, false
	}
	if len(b) > 0 {
		q.noteQueued()
		q.segs = append(q.segs, segment{b: b[:len(b):len(b)]})
		q.tailOwned = false
		q.queued += len(b)
	}
	pending = q.queued + len(q.prio) + q.inflight
	q.mu.Unlock()
	q.signal()
	return pending, true
}

// pushKeepalive queues a KEEPALIVE frame as a priority frame, unless max
// of them already wait untaken: then it queues nothing and reports false
// for flood. A peer that sends keepalives faster than it reads the answers
// so costs us at most max frames, and the session closes it
// (Session.sendKeepalive).
func (q *queue) pushKeepalive(frame []byte, max int) (pending int, ok, flood bool) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return 0, false, false
	}
	if q.keepalives >= max {
		q.mu.Unlock()
		return 0, true, true
	}
	q.prio = append(q.prio, frame...)
	q.keepalives++
	pending = q.queued + len(q.prio) + q.inflight
	q.mu.Unlock()
	q.signal()
	return pending, true, false
}

// due is a run of route data in the queue: from offset start of the
// queued route data on, queued at at, with ahead bytes pending before it.
type due struct {
	start, ahead int
	at           time.Time
}

// dueRun is the size of the runs of route data that share a due record.
const dueRun = 32 << 10

// noteQueued records the due of route data about to be queued at the end of
// segs, unless the last record covers it: one record per dueRun bytes, of
// the run's first bytes (the earliest). q.mu is held.
func (q *queue) noteQueued() {
	start := q.queued
	if n := len(q.dues); n > 0 && start-q.dues[n-1].start < dueRun {
		return
	}
	q.dues = append(q.dues, due{start: start, ahead: start + len(q.prio) + q.inflight, at: time.Now()})
}

// wrote tells the queue the writer wrote n bytes of its take.
func (q *queue) wrote(n int) {
	q.mu.Lock()
	q.takeWritten += n
	q.mu.Unlock()
}

// nextDue returns when the next byte of route data the writer is to write
// was queued (at the latest) and how many bytes were pending ahead of it
// then (at least), and false when the writer holds none.
func (q *queue) nextDue() (at time.Time, ahead int, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	pos := q.takeWritten - q.takePrioN // route data written (or fewer)
	var d due
	for _, x := range q.takenDues {
		if x.start > pos {
			break
		}
		d, ok = x, true
	}
	// The run's bytes were queued behind its first ones.
	return d.at, d.ahead + pos - d.start, ok
}

// signal wakes the writer.
func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// mark attaches t to the frames queued so far: t.Done is called once
// they have been written.
func (q *queue) mark(t *Tracker) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	switch {
	case q.queued > 0: // waiting for the writer
		q.marks = append(q.marks, t)
	case q.inflight > 0: // taken by the writer, being written
		q.takenMarks = append(q.takenMarks, t)
	default: // already written
		q.mu.Unlock()
		t.Done()
		q.mu.Lock()
	}
	return true
}

// take hands the writer everything queued, priority frames first. The
// returned slices stay valid until the writer passes segs to done.
func (q *queue) take() (prio []byte, segs []segment) {
	q.mu.Lock()
	defer q.mu.Unlock()
	prio, segs = q.prio, q.segs
	q.takenMarks, q.marks = q.marks, q.takenMarks[:0]
	q.takenDues, q.dues = q.dues, q.takenDues[:0]
	q.takeWritten, q.takePrioN = 0, len(prio)
	q.prio, q.keepalives = nil, 0
	q.segs, q.spare = q.spare[:0], nil
	q.tailOwned = false
	q.inflight = len(prio) + q.queued
	q.queued = 0
	return prio, segs
}

// takePrio hands the writer the priority frames queued since take.
func (q *queue) takePrio() []byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	p := q.prio
	if len(p) == 0 {
		return nil
	}
	q.prio, q.keepalives = nil, 0
	q.inflight += len(p)
	q.takePrioN += len(p)
	return p
}

// hasPrio reports whether priority frames wait to be written.
func (q *queue) hasPrio() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.prio) > 0
}

// done tells the queue the writer has written segs (returned by take): owned
// chunks go back to the pool (an idle peer keeps no memory), the list is
// kept for reuse. lowWater is the back-pressure release threshold.
func (q *queue) done(segs []segment, lowWater int) {
	for i, sg := range segs {
		if sg.owned && cap(sg.b) == chunkSize {
			b := sg.b[:0]
			chunkPool.Put(&b)
		}
		segs[i] = segment{}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, t := range q.takenMarks {
		t.Done()
		q.takenMarks[i] = nil
	}
	q.takenMarks = q.takenMarks[:0]
	q.inflight = 0
	q.takenDues = q.takenDues[:0]
	q.takeWritten, q.takePrioN = 0, 0
	if q.spare == nil && cap(segs) <= 1024 && !q.closed {
		q.spare = segs[:0]
	}
	if q.drained != nil && q.queued+len(q.prio) <= lowWater {
		close(q.drained)
		q.drained = nil
	}
}

// pending returns the number of bytes queued or being written.
func (q *queue) pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.queued + len(q.prio) + q.inflight
}

// close drops everything queued and wakes all waiters.
func (q *queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.prio, q.segs, q.spare, q.queued = nil, nil, nil, 0
	q.dues, q.takenDues = nil, nil
	q.marks, q.takenMarks = nil, nil
	if q.drained != nil {
		close(q.drained)
		q.drained = nil
	}
}

// waitBelow blocks until at most lowWater bytes are pending, the queue is
// closed, ctx is done or max has passed. It reports whether the queue drained.
func (q *queue) waitBelow(ctx context.Context, lowWater int, max time.Duration) bool {
	var timer *time.Timer
	for {
		q.mu.Lock()
		if q.closed || q.queued+len(q.prio)+q.inflight <= lowWater {
			q.mu.Unlock()
			return true
		}
		if q.drained == nil {
			q.drained = make(chan struct{})
		}
		ch := q.drained
		q.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(max)
			defer timer.Stop()
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		case <-timer.C:
			return false
		}
	}
}

// Tracker measures how long a message takes to reach several peers: Done
// is called once per peer after the message was written to it, and the
// last call reports the time since NewTracker. A Tracker is safe for
// concurrent use.
type Tracker struct {
	start     time.Time
	remaining atomic.Int32
	observe   func(time.Duration)
}

// NewTracker returns a Tracker expecting n calls of Done; observe is called
// with the elapsed time at the last one.
func NewTracker(n int, observe func(time.Duration)) *Tracker {
	t := &Tracker{start: time.Now(), observe: observe}
	t.remaining.Store(int32(n))
	return t
}

// Done records one peer. Peers whose session closes never call it, so an
// observation is only made when every peer got the message.
func (t *Tracker) Done() {
	if t.remaining.Add(-1) == 0 {
		t.observe(time.Since(t.start))
	}
}
