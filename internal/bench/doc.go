// Package bench measures a MetalBond route server: the scenarios of issue 5
// (fanout, join, many, churn, install, memory), each reporting time,
// routes/s, deliveries/s, the server's CPU time and peak RSS, and checking
// that every receiver ends with exactly the expected table (missing, extra
// and duplicate counts). cmd/metalbond-bench is its command line and
// docs/benchmarks.md its results.
//
// # Load generators
//
// A benchmark client must not be the bottleneck. Peer is a lean v1 client:
// every route of a scenario is encoded once, up front, into one contiguous
// buffer (Layout), and an announcer writes a range of routes as one slice
// with one system call. A subscriber reads with a small fixed buffer and
// recognises each received UPDATE by comparing its bytes with the expected
// encoding, falling back to a full decode only for bodies encoded
// differently, so a delivery costs the receiver tens of nanoseconds and
// thousands of peers fit in one process. Scenarios can use the client
// library (metalbond.Client) instead with Config.Lib.
//
// # Exactness without timers
//
// A phase ends when every receiver holds the expected number of routes.
// Then the scenario announces a fence route behind the updates; the server
// handles a peer's messages in order and queues each subscriber's updates in
// order, so a receiver that has the fence has everything the server sent
// before it, and its table can be compared exactly with no quiet-period
// guesswork. The same trick, with a fence in a VNI of its own and one
// observer, tells when the server has handled all of a peer's updates.
//
// # Servers
//
// The server runs in a child process by default (the benchmark binary
// re-executes itself with the hidden "serve" mode, see ServeMain), so that
// its CPU time and memory are measured alone, and a control protocol on its
// standard input reports them with microsecond resolution. It can also run
// in-process, or be any v1 server given by address (with its PID, CPU time
// and memory come from /proc).
//
// Every phase also reports the CPU time the benchmark process and the rest
// of the machine used meanwhile: figures taken while other work runs on the
// machine are disturbed, and the "other CPU" column shows it.
package bench
