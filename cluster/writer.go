package cluster

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// txnInflight is the number of transactions the writer keeps in flight at
// once. They touch disjoint keys, so their order does not matter, and etcd
// commits concurrent proposals in one raft round and one fsync.
const txnInflight = 4

// writer is the state of the write loop, owned by its goroutine.
type writer struct {
	m       *Member
	cli     *clientv3.Client
	lease   clientv3.LeaseID
	started time.Time
	maxOps  int
	// pending are keys taken from Member.dirty and not yet written.
	pending []string
	// putMember is set while the member record has to be written under
	// the current lease.
	putMember bool
}

// writeLoop holds a lease and writes the local routes under it until ctx
// is done; a lost lease is replaced and every local route written again
// under the new one. At the end it revokes the lease.
func (m *Member) writeLoop(ctx context.Context, cli *clientv3.Client) {
	w := &writer{m: m, cli: cli, started: time.Now(), maxOps: m.cfg.MaxTxnOps}
	bo := backoff{min: 100 * time.Millisecond, max: 2 * time.Second}
	quiet := false // a grant failure was logged; log again after a success
	for ctx.Err() == nil {
		gctx, cancel := context.WithTimeout(ctx, m.cfg.DialTimeout)
		resp, err := cli.Grant(gctx, int64(m.cfg.LeaseTTL/time.Second))
		cancel()
		if err != nil {
			if ctx.Err() == nil && !quiet {
				m.log.Warn("cannot obtain an etcd lease, retrying", "err", err)
				quiet = true
			}
			bo.wait(ctx)
			continue
		}
		bo.reset()
		quiet = false
		if m.stats.leaseGrants.Add(1) > 1 {
			// The lease was lost: the outage was long enough for the
			// watch to have missed something too.
			select {
			case m.relist <- struct{}{}:
			default:
			}
		}
		w.lease = resp.ID
		ttl := time.Duration(resp.TTL) * time.Second
		m.staleAfter.Store(int64(2 * ttl / 3))
		m.log.Info("lease granted", "lease", int64(resp.ID), "ttl", ttl)

		// Every local route goes under the new lease.
		m.mu.Lock()
		for k := range m.want {
			m.dirty[k] = struct{}{}
		}
		m.mu.Unlock()
		w.putMember = true
		if w.serveLease(ctx) {
			m.stats.leasesLost.Add(1)
		}
		m.leaseUp.Store(false)
	}
	if w.lease != 0 && !m.crash.Load() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		if _, err := cli.Revoke(rctx, w.lease); err != nil {
			m.log.Warn("revoke lease", "err", err)
		}
		cancel()
	}
}

// serveLease keeps w.lease alive and writes changes under it until ctx is
// done or the lease is lost, which it reports.
func (w *writer) serveLease(ctx context.Context) (lost bool) {
	m := w.m
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ka, err := w.cli.KeepAlive(kctx, w.lease)
	if err != nil {
		m.log.Warn("lease keepalive", "err", err)
		return true
	}
	m.lastAck.Store(time.Now().UnixNano())
	m.leaseUp.Store(true)

	bo := backoff{min: 100 * time.Millisecond, max: 2 * time.Second}
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	waiting := false // a failed write waits for retry
	for {
		busy := false
		if !waiting && w.hasWork() {
			err := w.flush(ctx)
			switch {
			case err == nil:
				if !m.writeOK.Swap(true) {
					m.log.Info("writes to etcd succeed")
				}
				bo.reset()
				busy = w.hasWork()
			case ctx.Err() != nil:
				return false
			case errors.Is(err, rpctypes.ErrLeaseNotFound):
				m.log.Warn("lease lost", "lease", int64(w.lease), "err", err)
				return true
			default:
				if m.writeOK.Swap(false) {
					m.log.Warn("writes to etcd fail, retrying", "err", err)
				}
				retry.Reset(bo.next())
				waiting = true
			}
		}
		if busy {
			// More to write: look at the keepalives and ctx, but do not
			// wait for them.
			select {
			case resp, ok := <-ka:
				if !w.ack(resp, ok) {
					return true
				}
			case <-ctx.Done():
				return false
			default:
			}
			continue
		}
		select {
		case resp, ok := <-ka:
			if !w.ack(resp, ok) {
				return true
			}
		case <-m.wake:
		case <-retry.C:
			waiting = false
		case <-ctx.Done():
			return false
		}
	}
}

// ack records a keepalive answer and reports whether the lease lives.
func (w *writer) ack(resp *clientv3.LeaseKeepAliveResponse, ok bool) bool {
	if !ok || resp == nil {
		w.m.log.Warn("lease lost: keepalive ended", "lease", int64(w.lease))
		return false
	}
	w.m.lastAck.Store(time.Now().UnixNano())
	return true
}

func (w *writer) hasWork() bool {
	if w.putMember || len(w.pending) > 0 {
		return true
	}
	w.m.mu.Lock()
	defer w.m.mu.Unlock()
	return len(w.m.dirty) > 0
}

// flush writes up to txnInflight transactions of changes, concurrently.
// Keys of failed transactions go back to dirty.
func (w *writer) flush(ctx context.Context) error {
	m := w.m
	if len(w.pending) == 0 {
		m.mu.Lock()
		d := m.dirty
		if len(d) > 0 {
			m.dirty = make(map[string]struct{}, len(d)/2)
		}
		m.mu.Unlock()
		w.pending = slices.AppendSeq(w.pending[:0], maps.Keys(d))
	}
	// Take up to txnInflight batches off the end of pending and decide
	// each key's operation from the current want set.
	type batch struct {
		keys []string
		ops  []clientv3.Op
	}
	var batches []batch
	dir := m.keys.routeDir(m.cfg.ServerID)
	m.mu.Lock()
	for len(batches) < txnInflight && (len(w.pending) > 0 || w.putMember && len(batches) == 0) {
		var b batch
		if w.putMember && len(batches) == 0 {
			b.ops = append(b.ops, clientv3.OpPut(m.keys.member(m.cfg.ServerID), m.memberValue(w.started), clientv3.WithLease(w.lease)))
		}
		n := min(len(w.pending), w.maxOps-len(b.ops))
		b.keys = w.pending[len(w.pending)-n:]
		w.pending = w.pending[:len(w.pending)-n]
		for _, k := range b.keys {
			if _, ok := m.want[k]; ok {
				b.ops = append(b.ops, clientv3.OpPut(dir+k, "", clientv3.WithLease(w.lease)))
			} else {
				b.ops = append(b.ops, clientv3.OpDelete(dir+k))
			}
		}
		batches = append(batches, b)
	}
	m.mu.Unlock()
	m.pending.Store(int64(len(w.pending)))

	errs := make([]error, len(batches))
	var wg sync.WaitGroup
	for i, b := range batches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tctx, cancel := context.WithTimeout(ctx, w.m.cfg.DialTimeout)
			defer cancel()
			_, errs[i] = w.cli.Txn(tctx).Then(b.ops...).Commit()
		}()
	}
	wg.Wait()

	var first error
	var failed []string
	for i, b := range batches {
		if errs[i] == nil {
			m.stats.txns.Add(1)
			m.stats.txnOps.Add(uint64(len(b.ops)))
			if i == 0 {
				w.putMember = false
			}
			continue
		}
		m.stats.txnErrors.Add(1)
		failed = append(failed, b.keys...)
		// A lost lease matters most: it decides what happens next.
		if first == nil || errors.Is(errs[i], rpctypes.ErrLeaseNotFound) {
			first = errs[i]
		}
	}
	if len(failed) > 0 {
		m.mu.Lock()
		for _, k := range failed {
			m.dirty[k] = struct{}{}
		}
		m.mu.Unlock()
	}
	if errors.Is(first, rpctypes.ErrTooManyOps) && w.maxOps > 1 {
		w.maxOps /= 2
		m.log.Warn("etcd refuses transactions this large; halving them", "max_ops", w.maxOps)
		return nil
	}
	return first
}

// backoff is an exponential delay between retries. It is owned by the
// goroutine that uses it.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur
}

func (b *backoff) reset() { b.cur = 0 }

// wait sleeps for the next delay or until ctx is done.
func (b *backoff) wait(ctx context.Context) {
	t := time.NewTimer(b.next())
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
