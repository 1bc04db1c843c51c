// Package metrics exposes the state of a MetalBond server or client to
// Prometheus.
//
// Metrics builds a private prometheus.Registry (nothing is registered
// globally) whose collectors read the Server's or Client's snapshots at
// scrape time, so that nothing is counted twice and the protocol code needs
// no knowledge of Prometheus. Labels are bounded: state, direction, type,
// kind, vni and peer (a session's remote address); never a prefix.
// docs/metrics.md lists every metric.
package metrics

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/cluster"
	"github.com/metalbond/metalbond/kernel"
	"github.com/metalbond/metalbond/route"
)

// Options says what to expose. Exactly one of Server and Client should be
// set; with neither, only the process metrics are exposed.
type Options struct {
	Server *metalbond.Server
	Client *metalbond.Client
	// Installer returns the statistics of the client's kernel route
	// installer, if it has one.
	Installer func() kernel.Stats
	// Cluster returns the statistics of the server's etcd cluster member,
	// if it has one.
	Cluster func() cluster.Stats
	// Version is exposed as the version label of metalbond_build_info.
	Version string
	// MaxVNISeries bounds the VNIs that get series of their own (the
	// ones with the most routes, then subscribers); the others are summed
	// up under vni="other". VNIs are chosen by peers: without a bound, a
	// peer subscribing to every VNI would make /metrics grow without end.
	// Default DefaultMaxVNISeries; negative: every VNI.
	MaxVNISeries int
	// Fanout is the server's fan-out latency histogram, created before
	// the Server so that its Observe method can be the Server's
	// ObserveFanout hook. If nil, New creates one, fed only through
	// Metrics.ObserveFanout.
	Fanout *Fanout
}

// Fanout is the histogram metalbond_update_fanout_seconds: the time from
// receiving an UPDATE to writing it to the connection of its last
// subscriber. It is safe for concurrent use.
type Fanout struct{ h prometheus.Histogram }

// NewFanout returns an empty fan-out histogram.
func NewFanout() *Fanout {
	return &Fanout{h: prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "update_fanout_seconds",
		Help:      "Time from receiving an UPDATE to writing it to the connection of its last subscriber (a sample of updates).",
		Buckets:   prometheus.ExponentialBuckets(50e-6, 4, 10), // 50µs to ~13s
	})}
}

// Observe records one fan-out. Its signature is that of
// metalbond.ServerConfig.ObserveFanout; it does not block.
func (f *Fanout) Observe(d time.Duration) { f.h.Observe(d.Seconds()) }

// Metrics is the set of collectors of one server or client. It is safe for
// concurrent use.
type Metrics struct {
	reg    *prometheus.Registry
	fanout *Fanout
}

// New builds the registry described by opts.
func New(opts Options) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), fanout: opts.Fanout}
	if m.fanout == nil {
		m.fanout = NewFanout()
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	role := "none"
	var src snapshotter
	switch {
	case opts.Server != nil:
		role, src = "server", opts.Server
		m.reg.MustRegister(m.fanout.h)
	case opts.Client != nil:
		role, src = "client", opts.Client
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace:   namespace,
		Name:        "build_info",
		Help:        "Always 1; labelled with the version and the role (server or client) of this process.",
		ConstLabels: prometheus.Labels{"version": opts.Version, "role": role},
	})
	info.Set(1)
	m.reg.MustRegister(info)
	if src != nil {
		maxVNIs := opts.MaxVNISeries
		if maxVNIs == 0 {
			maxVNIs = DefaultMaxVNISeries
		}
		m.reg.MustRegister(&sessionCollector{src: src, totals: newSessionTotals(), maxVNIs: maxVNIs})
	}
	if opts.Server != nil {
		m.reg.MustRegister(&serverCollector{srv: opts.Server})
	}
	if opts.Client != nil {
		m.reg.MustRegister(&clientCollector{c: opts.Client})
	}
	if opts.Installer != nil {
		m.reg.MustRegister(&installerCollector{stats: opts.Installer})
	}
	if opts.Cluster != nil {
		m.reg.MustRegister(&clusterCollector{stats: opts.Cluster})
	}
	return m
}

// Registry returns the private registry, for promhttp.HandlerFor.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// ObserveFanout records the time from receiving an UPDATE to writing it to
// the last subscriber (metalbond_update_fanout_seconds), like
// Options.Fanout.Observe.
func (m *Metrics) ObserveFanout(d time.Duration) { m.fanout.Observe(d) }

const namespace = "metalbond"

// snapshotter is what the session collector reads: *metalbond.Server and
// *metalbond.Client both provide it.
type snapshotter interface {
	Peers() []metalbond.PeerInfo
	VNIs() []metalbond.VNIInfo
}

// States of a v1 session, in protocol order: every one is reported, with 0
// when no session is in it, so that series do not appear and vanish.
var sessionStates = []string{"CONNECTING", "HELLO_SENT", "HELLO_RECEIVED", "ESTABLISHED", "RETRY", "CLOSED"}

// Message types of v1, for metalbond_messages_received_total.
var messageTypes = []string{"HELLO", "KEEPALIVE", "SUBSCRIBE", "UNSUBSCRIBE", "UPDATE"}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
}

var (
	descPeers = desc("peers",
		"Sessions by state and direction (inbound: accepted by a server; outbound: dialled by a client).", "state", "direction")
	descVNIRoutes = desc("routes",
		"Routes (prefix, nexthop) in the route table, by VNI: all routes held on a server, received routes on a client.", "vni")
	descVNIPrefixes = desc("prefixes",
		"Distinct prefixes in the route table, by VNI.", "vni")
	descVNISubscribers = desc("vni_subscribers",
		"Peers subscribed to a VNI (server).", "vni")
	descMessages = desc("messages_received_total",
		"Messages received from peers, by type.", "type")
	descPeerUpdatesReceived = desc("session_updates_received_total",
		"UPDATE messages received over all sessions, including ended ones.")
	descPeerUpdatesSent = desc("session_updates_sent_total",
		"UPDATE messages written over all sessions, including ended ones.")
	descQueueBytes = desc("send_queue_bytes",
		"Bytes waiting in the send queues of all sessions.")
	descQueueMaxBytes = desc("send_queue_max_bytes",
		"Bytes waiting in the fullest send queue of a session.")
	descPeerQueueBytes = desc("peer_send_queue_bytes",
		"Bytes waiting in the send queue of one session, by peer address.", "peer")
	descPeerRoutes = desc("peer_routes",
		"Routes a peer currently announces to us, by peer address.", "peer")
	descPacedPeers = desc("paced_peers",
		"Plain v1 peers whose writes are paced to what their reader survives.")
	descPeerPacedSeconds = desc("peer_paced_seconds_total",
		"Time writing to a paced plain v1 peer has waited for it to read, by peer address.", "peer")
	descPeerBacklogBytes = desc("peer_backlog_bytes",
		"Bound of the bytes written to a paced plain v1 peer that it may not have read yet, by peer address.", "peer")
)

// sessionCollector reports per-session state common to servers and clients.
type sessionCollector struct {
	maxVNIs int // Options.MaxVNISeries
	src     snapshotter
	totals  *sessionTotals
}

func (c *sessionCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPeers, descVNIRoutes, descVNIPrefixes, descVNISubscribers,
		descMessages, descPeerUpdatesReceived, descPeerUpdatesSent, descQueueBytes, descQueueMaxBytes,
		descPeerQueueBytes, descPeerRoutes, descPacedPeers, descPeerPacedSeconds, descPeerBacklogBytes} {
		ch <- d
	}
}

func (c *sessionCollector) Collect(ch chan<- prometheus.Metric) {
	peers := c.src.Peers()
	byState := map[[2]string]int{}
	for _, dir := range []string{"inbound", "outbound"} {
		for _, st := range sessionStates {
			byState[[2]string{st, dir}] = 0
		}
	}
	// A server has only inbound sessions and a client only outbound ones;
	// report only the direction(s) present, plus the obvious one when there
	// are no sessions at all.
	dirs := map[string]bool{}
	var queued, maxQueued, paced int
	for _, p := range peers {
		byState[[2]string{p.State, p.Direction}]++
		dirs[p.Direction] = true
		if p.State == "STALE" {
			continue // no session: only counted (graceful restart, routes held)
		}
		queued += p.QueueBytes
		maxQueued = max(maxQueued, p.QueueBytes)
		if p.Remote != "" {
			ch <- prometheus.MustNewConstMetric(descPeerQueueBytes, prometheus.GaugeValue, float64(p.QueueBytes), p.Remote)
			ch <- prometheus.MustNewConstMetric(descPeerRoutes, prometheus.GaugeValue, float64(p.Routes), p.Remote)
		}
		if p.Paced {
			paced++
			ch <- prometheus.MustNewConstMetric(descPeerPacedSeconds, prometheus.CounterValue, p.PacedTime.Seconds(), p.Remote)
			ch <- prometheus.MustNewConstMetric(descPeerBacklogBytes, prometheus.GaugeValue, float64(p.BacklogBytes), p.Remote)
		}
	}
	if _, isClient := c.src.(*metalbond.Client); isClient {
		dirs["outbound"] = true
	} else {
		dirs["inbound"] = true
	}
	for k, n := range byState {
		if dirs[k[1]] {
			ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(n), k[0], k[1])
		}
	}
	ch <- prometheus.MustNewConstMetric(descQueueBytes, prometheus.GaugeValue, float64(queued))
	ch <- prometheus.MustNewConstMetric(descQueueMaxBytes, prometheus.GaugeValue, float64(maxQueued))
	ch <- prometheus.MustNewConstMetric(descPacedPeers, prometheus.GaugeValue, float64(paced))

	t := c.totals.update(peers)
	ch <- prometheus.MustNewConstMetric(descPeerUpdatesReceived, prometheus.CounterValue, float64(t.updatesReceived))
	ch <- prometheus.MustNewConstMetric(descPeerUpdatesSent, prometheus.CounterValue, float64(t.updatesSent))
	for _, typ := range messageTypes {
		ch <- prometheus.MustNewConstMetric(descMessages, prometheus.CounterValue, float64(t.messages[typ]), typ)
	}

	_, isServer := c.src.(*metalbond.Server)
	vnis, other := topVNIs(c.src.VNIs(), c.maxVNIs)
	for _, v := range vnis {
		vni := v.VNI.String()
		if v == other {
			vni = "other"
		}
		ch <- prometheus.MustNewConstMetric(descVNIRoutes, prometheus.GaugeValue, float64(v.Routes), vni)
		ch <- prometheus.MustNewConstMetric(descVNIPrefixes, prometheus.GaugeValue, float64(v.Prefixes), vni)
		if isServer {
			ch <- prometheus.MustNewConstMetric(descVNISubscribers, prometheus.GaugeValue, float64(v.Subscribers), vni)
		}
	}
}

// DefaultMaxVNISeries is the default of Options.MaxVNISeries.
const DefaultMaxVNISeries = 256

// topVNIs returns the max VNIs with the most routes (then subscribers),
// and, if there are more, one more entry summing up the rest, which it also
// returns as other. max < 0 keeps every VNI.
func topVNIs(vnis []metalbond.VNIInfo, max int) ([]metalbond.VNIInfo, metalbond.VNIInfo) {
	if max < 0 || len(vnis) <= max {
		return vnis, metalbond.VNIInfo{VNI: ^route.VNI(0)}
	}
	slices.SortFunc(vnis, func(a, b metalbond.VNIInfo) int {
		if c := cmp.Compare(b.Routes, a.Routes); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Subscribers, a.Subscribers); c != 0 {
			return c
		}
		return cmp.Compare(a.VNI, b.VNI)
	})
	var other metalbond.VNIInfo
	other.VNI = ^route.VNI(0) // not a valid VNI: marks the sum
	for _, v := range vnis[max:] {
		other.Routes += v.Routes
		other.Prefixes += v.Prefixes
		other.Subscribers += v.Subscribers
	}
	return append(vnis[:max:max], other), other
}

// sessionTotals turns the per-session counters of the snapshots, which
// vanish with their session, into totals that only grow: it remembers the
// last value seen of every live session, and adds it to a retired sum when
// the session disappears. Counts a session made between the last scrape and
// its end are lost; a counter in the library would be exact (see
// docs/metrics.md).
type sessionTotals struct {
	mu      sync.Mutex // guards the following
	live    map[uint32]sessionCounts
	retired sessionCounts
}

type sessionCounts struct {
	updatesReceived, updatesSent uint64
	messages                     map[string]uint64
}

// sum adds up every counter: it only grows during one session.
func (c sessionCounts) sum() uint64 {
	n := c.updatesReceived + c.updatesSent
	for _, v := range c.messages {
		n += v
	}
	return n
}

func newSessionTotals() *sessionTotals {
	return &sessionTotals{live: map[uint32]sessionCounts{}, retired: sessionCounts{messages: map[string]uint64{}}}
}

func (s *sessionTotals) update(peers []metalbond.PeerInfo) sessionCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make(map[uint32]bool, len(peers))
	total := sessionCounts{
		updatesReceived: s.retired.updatesReceived,
		updatesSent:     s.retired.updatesSent,
		messages:        make(map[string]uint64, len(messageTypes)),
	}
	for k, v := range s.retired.messages {
		total.messages[k] = v
	}
	for _, p := range peers {
		if p.ID == 0 {
			continue // a client link that never connected
		}
		seen[p.ID] = true
		cur := sessionCounts{updatesReceived: p.UpdatesReceived, updatesSent: p.UpdatesSent, messages: p.MessagesReceived}
		// A client shows its last session's ID between sessions with
		// zeroed counters: keep the larger values seen.
		if prev, ok := s.live[p.ID]; ok && prev.sum() > cur.sum() {
			cur = prev
		}
		s.live[p.ID] = cur
		total.updatesReceived += cur.updatesReceived
		total.updatesSent += cur.updatesSent
		for k, v := range cur.messages {
			total.messages[k] += v
		}
	}
	for id, c := range s.live {
		if seen[id] {
			continue
		}
		s.retired.updatesReceived += c.updatesReceived
		s.retired.updatesSent += c.updatesSent
		for k, v := range c.messages {
			s.retired.messages[k] += v
		}
		total.updatesReceived += c.updatesReceived
		total.updatesSent += c.updatesSent
		for k, v := range c.messages {
			total.messages[k] += v
		}
		delete(s.live, id)
	}
	return total
}
