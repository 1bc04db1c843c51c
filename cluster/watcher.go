package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/metalbond/metalbond"
)

// listPage is the number of keys fetched per request when listing.
const listPage = 5000

// errRelist ends a watch because a lost lease calls for a fresh listing.
var errRelist = errors.New("lease was lost")

// watcher mirrors the routes of the other servers into the Server, one
// ExternalSource per server. It is owned by the goroutine running run.
type watcher struct {
	m     *Member
	cli   *clientv3.Client
	srv   *metalbond.Server
	peers map[string]*remote
	// epoch numbers the listings; a key not seen by the latest listing is
	// gone.
	epoch uint32
}

// remote is what we know of another server.
type remote struct {
	src *metalbond.ExternalSource
	// keys are its encoded routes, each with the epoch of the last listing
	// (or the watch event after it) that saw it.
	keys map[string]uint32
	// member is set while its member record exists; memberEpoch is when
	// it was last seen.
	member      bool
	memberEpoch uint32
}

func newWatcher(m *Member, cli *clientv3.Client, srv *metalbond.Server) *watcher {
	return &watcher{m: m, cli: cli, srv: srv, peers: make(map[string]*remote)}
}

// run lists and watches the prefix until ctx is done, listing again
// whenever the watch fails, is compacted away or a lease was lost.
func (w *watcher) run(ctx context.Context) {
	m := w.m
	bo := backoff{min: 100 * time.Millisecond, max: 2 * time.Second}
	quiet := false
	for ctx.Err() == nil {
		rev, err := w.list(ctx)
		if err != nil {
			if ctx.Err() == nil && !quiet {
				m.log.Warn("cannot list the cluster's routes, retrying", "err", err)
				quiet = true
			}
			bo.wait(ctx)
			continue
		}
		bo.reset()
		quiet = false
		m.synced.Store(true)
		err = w.watch(ctx, rev)
		m.synced.Store(false)
		if ctx.Err() == nil {
			m.log.Warn("watch ended, listing again", "err", err)
		}
	}
}

// list reads every key under the prefix at one revision, in pages, makes
// the ExternalSources hold exactly the routes read, and returns the
// revision.
func (w *watcher) list(ctx context.Context) (int64, error) {
	m := w.m
	select { // this listing answers any pending request for one
	case <-m.relist:
	default:
	}
	m.stats.lists.Add(1)
	w.epoch++
	key, end := m.keys.prefix, clientv3.GetPrefixRangeEnd(m.keys.prefix)
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		gctx, cancel := context.WithTimeout(ctx, m.cfg.DialTimeout)
		resp, err := w.cli.Get(gctx, key, opts...)
		cancel()
		if err != nil {
			return 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			w.apply(kv, true)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	// Sweep what the listing did not see.
	removed := 0
	for id, p := range w.peers {
		for k, e := range p.keys {
			if e != w.epoch {
				w.remove(id, p, k)
				removed++
			}
		}
		if p.member && p.memberEpoch != w.epoch {
			p.member = false
			m.log.Info("server left", "peer", id)
		}
		w.dropIfEmpty(id, p)
	}
	w.publish()
	n := 0
	for _, p := range w.peers {
		n += len(p.keys)
	}
	m.log.Info("listed cluster routes", "revision", rev, "servers", len(w.peers), "routes", n, "removed", removed)
	return rev, nil
}

// watch follows the prefix from revision rev+1 until the watch ends, a
// lost lease calls for a new listing, or ctx is done.
func (w *watcher) watch(ctx context.Context, rev int64) error {
	m := w.m
	// WithRequireLeader ends the watch when our etcd member loses its
	// cluster's quorum, instead of leaving it silent.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := w.cli.Watch(wctx, m.keys.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for {
		select {
		case resp, ok := <-wch:
			if !ok {
				return errors.New("watch channel closed")
			}
			if err := resp.Err(); err != nil {
				return err
			}
			for _, ev := range resp.Events {
				m.stats.watchEvents.Add(1)
				if ev.Type == mvccpb.DELETE {
					w.applyDelete(string(ev.Kv.Key))
				} else {
					w.apply(ev.Kv, false)
				}
			}
			if len(resp.Events) > 0 {
				w.publish()
			}
		case <-m.relist:
			return errRelist
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// peer returns the state of server id, creating it if needed.
func (w *watcher) peer(id string) *remote {
	p := w.peers[id]
	if p == nil {
		p = &remote{src: w.srv.NewExternalSource("cluster:" + id), keys: make(map[string]uint32)}
		w.peers[id] = p
	}
	return p
}

// apply handles a key that exists, from a listing or a PUT event.
func (w *watcher) apply(kv *mvccpb.KeyValue, listing bool) {
	m := w.m
	kind, id, rest := m.keys.split(string(kv.Key))
	switch kind {
	case kindRoute:
		if id == m.cfg.ServerID {
			return // our own, already in the server
		}
		p := w.peer(id)
		if _, ok := p.keys[rest]; ok {
			p.keys[rest] = w.epoch
			return
		}
		r, err := parseRoute(rest)
		if err != nil {
			w.badKey(kv.Key, err)
			return
		}
		if err := p.src.Add(r); err != nil {
			w.badKey(kv.Key, err)
			return
		}
		p.keys[strings.Clone(rest)] = w.epoch
	case kindMember:
		if id == m.cfg.ServerID {
			// A record of another instance found by a listing may be
			// that of our own previous life, waiting for its lease to
			// expire; one written while we run is a live twin.
			var rec memberRecord
			if !listing && json.Unmarshal(kv.Value, &rec) == nil && rec.Instance != m.instance {
				m.stats.idConflicts.Add(1)
				m.log.Error("another process writes this server's ID: server IDs must be unique", "instance", rec.Instance, "host", rec.Host, "pid", rec.PID)
			}
			return
		}
		p := w.peer(id)
		if !p.member {
			p.member = true
			if !listing {
				m.log.Info("server joined", "peer", id)
			}
		}
		p.memberEpoch = w.epoch
	default:
		w.badKey(kv.Key, errBadKey)
	}
}

// applyDelete handles a DELETE event.
func (w *watcher) applyDelete(key string) {
	m := w.m
	kind, id, rest := m.keys.split(key)
	if id == m.cfg.ServerID {
		return
	}
	p := w.peers[id]
	if p == nil {
		return
	}
	switch kind {
	case kindRoute:
		if _, ok := p.keys[rest]; ok {
			w.remove(id, p, rest)
		}
	case kindMember:
		if p.member {
			p.member = false
			m.log.Info("server left", "peer", id)
		}
	}
	w.dropIfEmpty(id, p)
}

// remove withdraws the route k of server id.
func (w *watcher) remove(id string, p *remote, k string) {
	delete(p.keys, k)
	r, err := parseRoute(k)
	if err != nil {
		return // never added
	}
	if err := p.src.Remove(r); err != nil {
		w.m.log.Error("withdraw route", "peer", id, "err", err)
	}
}

// dropIfEmpty forgets a server with no routes and no member record.
func (w *watcher) dropIfEmpty(id string, p *remote) {
	if len(p.keys) == 0 && !p.member {
		p.src.Close()
		delete(w.peers, id)
	}
}

func (w *watcher) badKey(key []byte, err error) {
	if w.m.stats.badKeys.Add(1) <= 10 {
		w.m.log.Warn("ignoring key", "key", string(key), "err", err)
	}
}

// publish copies the route counts per server for Stats.
func (w *watcher) publish() {
	m := w.m
	m.statsMu.Lock()
	clear(m.remote)
	for id, p := range w.peers {
		m.remote[id] = len(p.keys)
	}
	m.statsMu.Unlock()
}

// close withdraws every route learned from the cluster from the server.
func (w *watcher) close() {
	for id, p := range w.peers {
		p.src.Close()
		delete(w.peers, id)
	}
	w.publish()
}
