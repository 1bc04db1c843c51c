package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/cluster"
	"github.com/metalbond/metalbond/kernel"
)

// Protocol error kinds of metalbond.ServerStats.ProtocolErrors, all reported
// (with 0) so that series exist before the first error.
var protocolErrorKinds = []string{"bad_version", "unknown_type", "too_large", "malformed", "invalid", "unexpected_message"}

var (
	descAccepted = desc("sessions_accepted_total",
		"Connections accepted by the server.")
	descHandshakeFailures = desc("handshake_failures_total",
		"Sessions that ended before the handshake completed (timeout or protocol error).")
	descProtocolErrors = desc("protocol_errors_total",
		"Sessions closed for a protocol error, by kind: bad_version, unknown_type, too_large, malformed, invalid, unexpected_message.", "kind")
	descSlowPeers = desc("slow_peers_dropped_total",
		"Peers disconnected because they stopped reading or their send queue passed its memory bound.")
	descUpdatesReceived = desc("updates_received_total",
		"UPDATE messages received from peers.")
	descUpdatesSent = desc("updates_sent_total",
		"UPDATE messages queued to subscribers, including the initial table sent on SUBSCRIBE.")
	descRefused = desc("refused_total",
		"Connections and messages the server refused and ignored with the session kept, by reason: a limit (connections, connections_per_ip, routes_per_peer, routes_per_vni, subscriptions_per_peer) or nexthop_not_ipv6.", "reason")
)

// serverCollector reports a server's cumulative counters.
type serverCollector struct{ srv *metalbond.Server }

func (c *serverCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAccepted, descHandshakeFailures, descProtocolErrors, descSlowPeers, descUpdatesReceived, descUpdatesSent, descRefused} {
		ch <- d
	}
}

func (c *serverCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) { emitCounter(ch, d, v, labels...) }
	counter(descAccepted, st.Accepted)
	counter(descHandshakeFailures, st.HandshakeFailures)
	counter(descSlowPeers, st.SlowPeersDropped)
	counter(descUpdatesReceived, st.UpdatesReceived)
	counter(descUpdatesSent, st.UpdatesSent)
	for _, k := range protocolErrorKinds {
		counter(descProtocolErrors, st.ProtocolErrors[k], k)
	}
	for k, v := range st.Refused { // every reason, 0 included
		counter(descRefused, v, k)
	}
	// Kinds the library may add later.
	for k, v := range st.ProtocolErrors {
		known := false
		for _, kk := range protocolErrorKinds {
			known = known || k == kk
		}
		if !known {
			counter(descProtocolErrors, v, k)
		}
	}
}

var (
	descClientInstalled = desc("client_routes_installed",
		"Routes currently given to the client's route installer.")
	descClientInstallErrors = desc("client_install_errors_total",
		"Route installer calls that returned an error.")
	descClientLoops = desc("client_loops_prevented_total",
		"Received updates ignored because they are for a prefix this client announces itself.")
	descClientSubscriptions = desc("client_subscriptions",
		"VNIs the client subscribes to.")
	descClientAnnouncements = desc("client_announcements",
		"Routes the client announces.")
	descClientReady = desc("client_ready",
		"1 if a session to at least one server is established, else 0.")
)

// clientCollector reports a client's state and counters.
type clientCollector struct{ c *metalbond.Client }

func (c *clientCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descClientInstalled, descClientInstallErrors, descClientLoops,
		descClientSubscriptions, descClientAnnouncements, descClientReady} {
		ch <- d
	}
}

func (c *clientCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.c.Stats()
	emitGauge(ch, descClientInstalled, int(st.RoutesInstalled))
	emitCounter(ch, descClientInstallErrors, st.InstallErrors)
	emitCounter(ch, descClientLoops, st.LoopsPrevented)
	emitGauge(ch, descClientSubscriptions, len(c.c.Subscriptions()))
	emitGauge(ch, descClientAnnouncements, len(c.c.Announcements()))
	emitGauge(ch, descClientReady, boolValue(c.c.Ready()))
}

var (
	descKernelDesired = desc("kernel_desired_prefixes",
		"Prefixes the route installer wants in the kernel, over all tables.")
	descKernelRoutes = desc("kernel_routes",
		"Prefixes installed in the kernel by the route installer, as far as it knows.")
	descKernelNexthops = desc("kernel_nexthops",
		"Nexthop objects (single and group) installed by the route installer.")
	descKernelPending = desc("kernel_pending_prefixes",
		"Prefixes changed but not yet sent to the kernel.")
	descKernelFailing = desc("kernel_failing_prefixes",
		"Prefixes the kernel refused, waiting for a retry.")
	descKernelFailures = desc("kernel_failures_total",
		"Kernel refusals of routes and nexthop objects.")
	descKernelRetries = desc("kernel_retries_total",
		"Retries of refused prefixes.")
	descKernelRepairs = desc("kernel_repairs_total",
		"Routes and nexthop objects repaired by reconciliation with the desired state.")
	descKernelReconciles = desc("kernel_reconciles_total",
		"Completed reconciliations of the kernel tables with the desired state.")
	descKernelIgnored = desc("kernel_ignored_total",
		"Routes not installed: VNI without a table, or IPv6 with --ipv4-only.")
)

// installerCollector reports the kernel route installer's statistics.
type installerCollector struct{ stats func() kernel.Stats }

func (c *installerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descKernelDesired, descKernelRoutes, descKernelNexthops, descKernelPending,
		descKernelFailing, descKernelFailures, descKernelRetries, descKernelRepairs, descKernelReconciles, descKernelIgnored} {
		ch <- d
	}
}

func (c *installerCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	gauge := func(d *prometheus.Desc, v int) { emitGauge(ch, d, v) }
	counter := func(d *prometheus.Desc, v uint64) { emitCounter(ch, d, v) }
	gauge(descKernelDesired, st.Desired)
	gauge(descKernelRoutes, st.Routes)
	gauge(descKernelNexthops, st.Nexthops)
	gauge(descKernelPending, st.Pending)
	gauge(descKernelFailing, st.Failing)
	counter(descKernelFailures, st.Failures)
	counter(descKernelRetries, st.Retries)
	counter(descKernelRepairs, st.Repairs)
	counter(descKernelReconciles, st.Reconciles)
	counter(descKernelIgnored, st.Ignored)
}

var (
	descClusterReady = desc("cluster_ready",
		"1 while the cluster member is in sync with etcd (it holds a lease and has listed the other servers' routes), else 0.")
	descClusterLocalRoutes = desc("cluster_local_routes",
		"Routes announced by this server's peers, which it keeps in etcd.")
	descClusterPendingWrites = desc("cluster_pending_writes",
		"Changes to this server's routes not yet written to etcd.")
	descClusterRemoteRoutes = desc("cluster_remote_routes",
		"Routes learned through etcd from another route server, by its server ID.", "server")
	descClusterLeaseGrants = desc("cluster_lease_grants_total",
		"etcd leases obtained.")
	descClusterLeasesLost = desc("cluster_leases_lost_total",
		"etcd leases lost (expired, or unknown to etcd after an outage); the routes are then written again under a new one.")
	descClusterTxns = desc("cluster_txns_total",
		"Write transactions committed to etcd.")
	descClusterTxnOps = desc("cluster_txn_ops_total",
		"Operations (route puts and deletes) in the committed write transactions.")
	descClusterTxnErrors = desc("cluster_txn_errors_total",
		"Write transactions that failed; their changes are retried.")
	descClusterLists = desc("cluster_lists_total",
		"Full listings of the cluster's routes (at start, after a lost watch or lease).")
	descClusterWatchEvents = desc("cluster_watch_events_total",
		"Key changes received from the etcd watch.")
	descClusterBadKeys = desc("cluster_bad_keys_total",
		"Keys under the cluster prefix that this version cannot decode (ignored).")
	descClusterIDConflicts = desc("cluster_id_conflicts_total",
		"Member records of another process with this server's ID.")
)

// clusterCollector reports the etcd cluster member's statistics.
type clusterCollector struct{ stats func() cluster.Stats }

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descClusterReady, descClusterLocalRoutes, descClusterPendingWrites,
		descClusterRemoteRoutes, descClusterLeaseGrants, descClusterLeasesLost, descClusterTxns, descClusterTxnOps,
		descClusterTxnErrors, descClusterLists, descClusterWatchEvents, descClusterBadKeys, descClusterIDConflicts} {
		ch <- d
	}
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	gauge := func(d *prometheus.Desc, v int, labels ...string) { emitGauge(ch, d, v, labels...) }
	counter := func(d *prometheus.Desc, v uint64) { emitCounter(ch, d, v) }
	gauge(descClusterReady, boolValue(st.Ready))
	gauge(descClusterLocalRoutes, st.LocalRoutes)
	gauge(descClusterPendingWrites, st.PendingWrites)
	for id, n := range st.RemoteRoutes {
		gauge(descClusterRemoteRoutes, n, id)
	}
	counter(descClusterLeaseGrants, st.LeaseGrants)
	counter(descClusterLeasesLost, st.LeasesLost)
	counter(descClusterTxns, st.Txns)
	counter(descClusterTxnOps, st.TxnOps)
	counter(descClusterTxnErrors, st.TxnErrors)
	counter(descClusterLists, st.Lists)
	counter(descClusterWatchEvents, st.WatchEvents)
	counter(descClusterBadKeys, st.BadKeys)
	counter(descClusterIDConflicts, st.IDConflicts)
}

// emitGauge and emitCounter send one constant sample of d.
func emitGauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v int, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
}

func emitCounter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

// boolValue is 1 for true, 0 for false.
func boolValue(b bool) int {
	if b {
		return 1
	}
	return 0
}
