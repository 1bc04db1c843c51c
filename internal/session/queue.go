package session

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// queue is a session's bounded send queue: encoded frames waiting for the
// writer goroutine. Producers append bytes (an update encoded once is copied
// into the queue of every subscriber, which is cheaper than sharing it by
// reference at these sizes); the writer takes everything queued so far and
// writes it with as few system calls as possible, so a burst of messages goes
// out in one write and the queue is flushed as soon as it is empty.
//
// queue is safe for concurrent use.
type queue struct {
	wake chan struct{} // capacity 1: there is something to write

	mu sync.Mutex // guards the following
	// prio holds frames that jump the queue (keepalives): they are written
	// before buf, so route work never starves keepalives.
	prio []byte
	// buf holds frames in the order they were queued.
	buf []byte
	// spare is a written-out buffer kept for reuse.
	spare []byte
	// inflight counts bytes taken by the writer and not yet written.
	inflight int
	closed   bool
	// marks are trackers of frames in buf; taken marks are those of the
	// buffer being written.
	marks, takenMarks []*Tracker
	// drained, when non-nil, is closed when pending bytes fall to lowWater
	// or the queue closes; producers applying back-pressure wait on it.
	drained chan struct{}
}

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
		q.buf = fn(q.buf)
	}
	pending = len(q.buf) + len(q.prio) + q.inflight
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return pending, true
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
	case len(q.buf) > 0: // waiting for the writer
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
// returned slices stay valid until the next call to take.
func (q *queue) take() (prio, buf []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	prio, buf = q.prio, q.buf
	q.takenMarks, q.marks = q.marks, q.takenMarks[:0]
	q.prio = nil
	q.buf = q.spare[:0]
	q.spare = nil
	q.inflight = len(prio) + len(buf)
	return prio, buf
}

// takePrio hands the writer the priority frames queued since take.
func (q *queue) takePrio() []byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	p := q.prio
	q.prio = nil
	q.inflight += len(p)
	return p
}

// done tells the queue the writer has written buf (returned by take) and
// may recycle it. lowWater is the back-pressure release threshold.
func (q *queue) done(buf []byte, lowWater int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, t := range q.takenMarks {
		t.Done()
		q.takenMarks[i] = nil
	}
	q.takenMarks = q.takenMarks[:0]
	q.inflight = 0
	// Keep moderately sized buffers for reuse; let big ones go so an idle
	// peer does not pin the memory of its largest burst.
	if cap(buf) <= 1<<20 && q.spare == nil {
		q.spare = buf[:0]
	}
	if q.drained != nil && len(q.buf)+len(q.prio) <= lowWater {
		close(q.drained)
		q.drained = nil
	}
}

// pending returns the number of bytes queued or being written.
func (q *queue) pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.buf) + len(q.prio) + q.inflight
}

// close drops everything queued and wakes all waiters.
func (q *queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.buf, q.prio, q.spare = nil, nil, nil
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
		if q.closed || len(q.buf)+len(q.prio)+q.inflight <= lowWater {
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
