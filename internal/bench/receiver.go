package bench

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/metalbond/metalbond/route"
)

// Receiver is what one subscriber holds: the set of layout routes of its
// VNI it has been told about, with counters of everything that should not
// happen. Raw peers and library clients feed it alike.
//
// Counters, in the terms of the report:
//   - duplicate: an ADD of a route held already, or a REMOVE of a route not
//     held (the server sent a change twice or out of order);
//   - foreign: an update for a route outside the receiver's scope (another
//     VNI, its own route echoed back, an unknown route, or an undecodable
//     body); foreign updates count as extra.
//
// A Receiver is safe for concurrent use.
type Receiver struct {
	l    *Layout
	vi   int       // index of the VNI among the layout's
	vni  route.VNI // l.VNIOf(vi)
	self int       // owner number of this peer, or -1

	mu sync.Mutex // guards the following
	// set has a bit per route of the VNI, by local index (Layout.local).
	set       []uint64
	present   int   // bits set
	updates   int64 // route updates received, foreign ones included
	dup       int64
	foreign   int64
	fences    map[int]bool // fences held
	cond      func(*Receiver) bool
	met       chan struct{}
	metAt     time.Time
	lag       *lagRecorder // nil unless lag is sampled
	lagSent   []atomic.Int64
	lagNow    time.Time // time of the batch being applied, zero if not taken
	closedErr error
}

// NewReceiver returns an empty Receiver for the vi-th VNI of l. self is
// the owner number of the receiving peer when it also announces routes of
// l (they must not come back to it), or -1.
func NewReceiver(l *Layout, vi, self int) *Receiver {
	return &Receiver{
		l:      l,
		vi:     vi,
		vni:    l.VNIOf(vi),
		self:   self,
		set:    make([]uint64, (l.VNISize(vi)+63)/64),
		fences: make(map[int]bool),
	}
}

// VNI returns the VNI the receiver subscribes to.
func (r *Receiver) VNI() route.VNI { return r.vni }

// sampleLag makes the receiver record, for every 8th route added, the time
// since sent[g] (unix nanoseconds, 0 if unknown) into rec.
func (r *Receiver) sampleLag(rec *lagRecorder, sent []atomic.Int64) {
	r.mu.Lock()
	r.lag, r.lagSent = rec, sent
	r.mu.Unlock()
}

// beginBatch locks the receiver for a batch of updates.
func (r *Receiver) beginBatch() {
	r.mu.Lock()
	r.lagNow = time.Time{}
}

// endBatch checks the pending condition and unlocks.
func (r *Receiver) endBatch() {
	r.checkLocked()
	r.mu.Unlock()
}

// updateLocked applies one UPDATE body. r.mu is held.
func (r *Receiver) updateLocked(body []byte) {
	kind, g, add := r.l.match(body)
	switch kind {
	case matchFence:
		if add {
			r.fences[g] = true
		} else {
			delete(r.fences, g)
		}
		return
	case matchForeign:
		r.updates++
		r.foreign++
		return
	}
	r.applyLocked(g, add)
}

// applyLocked applies an ADD or REMOVE of layout route g. r.mu is held.
func (r *Receiver) applyLocked(g int, add bool) {
	r.updates++
	c := g / r.l.perOwner
	if c%r.l.vnis != r.vi || c == r.self {
		r.foreign++
		return
	}
	i := r.l.local(g)
	w, b := i>>6, uint64(1)<<(i&63)
	switch {
	case add && r.set[w]&b != 0, !add && r.set[w]&b == 0:
		r.dup++
	case add:
		r.set[w] |= b
		r.present++
		if r.lag != nil && g&7 == 0 {
			if s := r.lagSent[g].Load(); s != 0 {
				if r.lagNow.IsZero() {
					r.lagNow = time.Now()
				}
				r.lag.add(time.Duration(r.lagNow.UnixNano() - s))
			}
		}
	default:
		r.set[w] &^= b
		r.present--
	}
}

// apply applies one change outside a batch (library clients).
func (r *Receiver) apply(g int, add bool) {
	r.beginBatch()
	r.applyLocked(g, add)
	r.endBatch()
}

// fence records a fence seen outside a batch (library clients).
func (r *Receiver) fence(k int, add bool) {
	r.mu.Lock()
	if add {
		r.fences[k] = true
	} else {
		delete(r.fences, k)
	}
	r.checkLocked()
	r.mu.Unlock()
}

// foreignUpdate counts an update outside the receiver's scope.
func (r *Receiver) foreignUpdate() {
	r.mu.Lock()
	r.updates++
	r.foreign++
	r.mu.Unlock()
}

// connClosed records why the receiver's connection ended, which releases
// anyone waiting on it.
func (r *Receiver) connClosed(err error) {
	r.mu.Lock()
	if r.closedErr == nil {
		r.closedErr = err
	}
	r.checkLocked()
	r.mu.Unlock()
}

func (r *Receiver) checkLocked() {
	if r.cond != nil && (r.closedErr != nil || r.cond(r)) {
		r.metAt = time.Now()
		close(r.met)
		r.cond = nil
	}
}

// await arranges for the returned channel to be closed as soon as cond
// holds (it is evaluated with r locked, after every batch of updates) or
// the connection ends. It replaces any previous condition.
func (r *Receiver) await(cond func(*Receiver) bool) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cond != nil {
		close(r.met)
	}
	r.cond, r.met = cond, make(chan struct{})
	ch := r.met
	r.checkLocked()
	return ch
}

// Conditions for await.

func hasCount(n int) func(*Receiver) bool {
	return func(r *Receiver) bool { return r.present == n }
}

func hasFence(k int, present bool) func(*Receiver) bool {
	return func(r *Receiver) bool { return r.fences[k] == present }
}

// check compares the held set with the expected one: want reports, for a
// route g of the receiver's VNI, whether it should be held (routes of the
// receiver itself are never expected).
func (r *Receiver) check(want func(g int) bool) Exactness {
	r.mu.Lock()
	defer r.mu.Unlock()
	var e Exactness
	e.Receivers = 1
	n := r.l.VNISize(r.vi)
	for w, word := range r.set {
		for i := w * 64; i < min(n, w*64+64); i++ {
			g := r.l.global(r.vi, i)
			have := word&(1<<(i&63)) != 0
			expected := g/r.l.perOwner != r.self && want(g)
			switch {
			case expected && !have:
				e.Missing++
			case have && !expected:
				e.Extra++
			}
		}
	}
	e.Extra += r.foreign
	e.Duplicate += r.dup
	if r.closedErr != nil {
		e.Failed++
		e.Errors = append(e.Errors, r.closedErr.Error())
	}
	return e
}

// consistency returns the counters of a receiver whose final table is not
// known (a subscriber that left during the run): duplicates and foreign
// updates only.
func (r *Receiver) consistency() Exactness {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Exactness{Receivers: 1, Extra: r.foreign, Duplicate: r.dup}
}

// counts returns the number of updates received.
func (r *Receiver) counts() (updates int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.updates
}

// Exactness sums what receivers got wrong.
type Exactness struct {
	// Receivers is the number of receivers checked.
	Receivers int `json:"receivers"`
	// Missing counts expected routes a receiver does not hold.
	Missing int64 `json:"missing"`
	// Extra counts routes a receiver holds but should not, plus updates
	// outside its scope.
	Extra int64 `json:"extra"`
	// Duplicate counts ADDs of routes already held and REMOVEs of routes
	// not held.
	Duplicate int64 `json:"duplicate"`
	// Failed counts receivers whose connection ended unexpectedly.
	Failed int64 `json:"failed"`
	// Errors holds a few of the reasons (at most 5).
	Errors []string `json:"errors,omitempty"`
}

// Exact reports whether nothing went wrong.
func (e Exactness) Exact() bool {
	return e.Missing == 0 && e.Extra == 0 && e.Duplicate == 0 && e.Failed == 0
}

func (e *Exactness) merge(o Exactness) {
	e.Receivers += o.Receivers
	e.Missing += o.Missing
	e.Extra += o.Extra
	e.Duplicate += o.Duplicate
	e.Failed += o.Failed
	for _, s := range o.Errors {
		if len(e.Errors) < 5 {
			e.Errors = append(e.Errors, s)
		}
	}
}
