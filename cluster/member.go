package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/route"
)

// Member joins one metalbond.Server to a cluster of route servers that
// share their routes through etcd: it writes the routes the server's own
// peers announce into etcd under a lease it keeps alive, and feeds the
// routes of every other server of the cluster back into the server.
//
// Create a Member with New, pass its Sink to metalbond.ServerConfig, create
// the Server, then call Run with it. A Member is safe for concurrent use.
type Member struct {
	cfg      Config
	log      *slog.Logger
	keys     keyspace
	instance string // random; tells this process's member record from another's

	// mu guards the following: the local routes, changed by the Sink (on
	// the server's goroutines, under its VNI locks) and read by the writer.
	mu    sync.Mutex
	want  map[string]struct{} // encoded routes our peers announce
	dirty map[string]struct{} // encoded routes whose etcd state may differ from want

	wake   chan struct{} // capacity 1: dirty gained a key
	relist chan struct{} // capacity 1: writer → watcher: a lease was lost, list again

	running atomic.Bool
	// Readiness, written by the goroutines of Run.
	conn       atomic.Pointer[grpc.ClientConn] // the etcd client's connection while Run runs
	leaseUp    atomic.Bool
	writeOK    atomic.Bool
	synced     atomic.Bool
	lastAck    atomic.Int64 // unix nanoseconds of the last lease keepalive answer
	staleAfter atomic.Int64 // a keepalive answer older than this means etcd is unreachable
	pending    atomic.Int64 // changes taken from dirty and not yet written

	statsMu sync.Mutex     // guards remote
	remote  map[string]int // routes per other server, after the last watch event

	stats counters

	// crash, set by tests, makes Run end like a crashed process: without
	// revoking the lease, so that its keys stay until the lease expires.
	crash atomic.Bool
}

type counters struct {
	leaseGrants, leasesLost     atomic.Uint64
	txns, txnOps, txnErrors     atomic.Uint64
	lists, watchEvents, badKeys atomic.Uint64
	idConflicts                 atomic.Uint64
}

// New returns a Member configured by cfg. It checks the configuration but
// does not connect to etcd: call Run.
func New(cfg Config) (*Member, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var nonce [8]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	m := &Member{
		cfg:      cfg,
		log:      cfg.Logger.With("server", cfg.ServerID),
		keys:     newKeyspace(cfg.Prefix),
		instance: hex.EncodeToString(nonce[:]),
		want:     make(map[string]struct{}),
		dirty:    make(map[string]struct{}),
		wake:     make(chan struct{}, 1),
		relist:   make(chan struct{}, 1),
		remote:   make(map[string]int),
	}
	m.staleAfter.Store(int64(2 * cfg.LeaseTTL / 3))
	return m, nil
}

// ID returns the server ID under which this member writes its routes.
func (m *Member) ID() string { return m.cfg.ServerID }

// Sink returns the RouteSink to set in the metalbond.ServerConfig of the
// server passed to Run. Routes it receives before Run are kept and written
// once Run has a lease.
func (m *Member) Sink() metalbond.RouteSink { return (*sink)(m) }

// sink is the Member seen as a metalbond.RouteSink.
type sink Member

// LocalRoute implements metalbond.RouteSink. It records the change and
// wakes the writer; it never blocks on etcd.
func (s *sink) LocalRoute(r route.Route, add bool) {
	var buf [maxRouteKeyLen]byte
	k := string(appendRoute(buf[:0], r))
	s.mu.Lock()
	if add {
		s.want[k] = struct{}{}
	} else {
		delete(s.want, k)
	}
	s.dirty[k] = struct{}{}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run connects to etcd and keeps this member in the cluster until ctx is
// done: it holds a lease, writes the server's local routes under it in
// batched transactions, and watches the routes of the other servers,
// feeding them into srv. It survives etcd outages: it retries, re-creates
// a lost lease and re-lists what it may have missed. When ctx is done it
// revokes its lease, so that the other servers drop its routes at once,
// withdraws the other servers' routes from srv, and returns nil.
//
// srv must have been created with this member's Sink. Run may be called
// only once; it returns an error only for a nil server or a second call.
func (m *Member) Run(ctx context.Context, srv *metalbond.Server) error {
	if srv == nil {
		return errors.New("cluster: Run: nil server")
	}
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("cluster: Run called twice")
	}
	cli, err := m.connect(ctx)
	if err != nil {
		return nil // ctx is done
	}
	defer cli.Close()
	m.conn.Store(cli.ActiveConnection())
	defer m.conn.Store(nil)
	m.log.Info("joining cluster", "endpoints", m.cfg.Endpoints, "prefix", m.cfg.Prefix, "lease_ttl", m.cfg.LeaseTTL)

	w := newWatcher(m, cli, srv)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		m.writeLoop(ctx, cli)
	}()
	go func() {
		defer wg.Done()
		w.run(ctx)
	}()
	wg.Wait()
	w.close()
	m.log.Info("left cluster")
	return nil
}

// connect creates the etcd client. With authentication the client logs in
// while it is created, which fails while etcd is unreachable or refuses the
// credentials; connect then retries, with a growing delay and a log line
// each time, until ctx is done, and the server serves standalone meanwhile.
func (m *Member) connect(ctx context.Context) (*clientv3.Client, error) {
	delay := 100 * time.Millisecond
	for {
		cli, err := clientv3.New(clientv3.Config{
			Context:              ctx,
			Endpoints:            m.cfg.Endpoints,
			TLS:                  m.cfg.TLS,
			Username:             m.cfg.Username,
			Password:             m.cfg.Password,
			DialTimeout:          m.cfg.DialTimeout,
			DialKeepAliveTime:    10 * time.Second,
			DialKeepAliveTimeout: 3 * time.Second,
			Logger:               zap.NewNop(),
			// gRPC's default reconnect backoff grows to two minutes; after an
			// etcd outage we want to be back within seconds.
			DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
				MinConnectTimeout: m.cfg.DialTimeout,
			})},
		})
		if err == nil {
			return cli, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		m.log.Warn("cannot connect to etcd; serving standalone meanwhile", "endpoints", m.cfg.Endpoints, "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// Ready reports whether the member is in sync with the cluster: it is
// connected to etcd, holds a live lease whose last keepalive etcd answered
// in time, its last write succeeded and its watch is running. It is false
// before Run has synced and while etcd is unreachable; the server keeps
// serving meanwhile.
func (m *Member) Ready() bool {
	conn := m.conn.Load()
	if conn == nil {
		return false
	}
	switch conn.GetState() {
	case connectivity.Ready, connectivity.Idle:
	default:
		return false
	}
	age := time.Now().UnixNano() - m.lastAck.Load()
	return m.leaseUp.Load() && m.writeOK.Load() && m.synced.Load() && age < m.staleAfter.Load()
}

// Stats are a Member's counters and sizes.
type Stats struct {
	ServerID string
	Ready    bool
	// LocalRoutes is the number of routes this server's peers announce,
	// which it keeps in etcd; PendingWrites the number of changes to them
	// not yet written.
	LocalRoutes, PendingWrites int
	// RemoteRoutes is the number of routes learned from each other server.
	RemoteRoutes map[string]int
	// LeaseGrants and LeasesLost count leases obtained and lost (expired
	// or unknown to etcd after an outage).
	LeaseGrants, LeasesLost uint64
	// Txns, TxnOps and TxnErrors count write transactions, the operations
	// in the successful ones and the failed ones.
	Txns, TxnOps, TxnErrors uint64
	// Lists counts full listings (at start, after a lost watch or lease);
	// WatchEvents the key changes received.
	Lists, WatchEvents uint64
	// BadKeys counts keys under the prefix this version cannot decode;
	// IDConflicts member records of another process with this server's ID.
	BadKeys, IDConflicts uint64
}

// Stats returns a snapshot of the member's counters.
func (m *Member) Stats() Stats {
	st := Stats{
		ServerID:    m.cfg.ServerID,
		Ready:       m.Ready(),
		LeaseGrants: m.stats.leaseGrants.Load(),
		LeasesLost:  m.stats.leasesLost.Load(),
		Txns:        m.stats.txns.Load(),
		TxnOps:      m.stats.txnOps.Load(),
		TxnErrors:   m.stats.txnErrors.Load(),
		Lists:       m.stats.lists.Load(),
		WatchEvents: m.stats.watchEvents.Load(),
		BadKeys:     m.stats.badKeys.Load(),
		IDConflicts: m.stats.idConflicts.Load(),
	}
	m.mu.Lock()
	st.LocalRoutes = len(m.want)
	st.PendingWrites = len(m.dirty) + int(m.pending.Load())
	m.mu.Unlock()
	m.statsMu.Lock()
	st.RemoteRoutes = make(map[string]int, len(m.remote))
	for id, n := range m.remote {
		st.RemoteRoutes[id] = n
	}
	m.statsMu.Unlock()
	return st
}

// memberRecord is the value of a server's member key: informational,
// except for Instance, which tells two processes with one ID apart.
type memberRecord struct {
	Instance string    `json:"instance"`
	Host     string    `json:"host,omitempty"`
	PID      int       `json:"pid"`
	Started  time.Time `json:"started"`
}

func (m *Member) memberValue(started time.Time) string {
	host, _ := os.Hostname()
	b, _ := json.Marshal(memberRecord{Instance: m.instance, Host: host, PID: os.Getpid(), Started: started.UTC().Truncate(time.Second)})
	return string(b)
}
