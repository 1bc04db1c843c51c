package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metalbond/metalbond/internal/wire"
	"github.com/metalbond/metalbond/route"
)

// Scenarios lists the scenario names Run accepts.
var Scenarios = []string{"fanout", "join", "many", "churn", "install", "memory"}

// Config configures one benchmark run. Zero sizes take the scenario's
// defaults (see Defaults).
type Config struct {
	// Scenario is one of Scenarios.
	Scenario string
	// N is the number of routes (fanout, join, install, memory) or the
	// size of the live window (churn).
	N int
	// S is the number of subscribers (fanout, join, churn).
	S int
	// C, V and R: C clients in V VNIs announcing R routes each (many);
	// C announcers in V VNIs (memory).
	C, V, R int
	// Observers, in many, makes the C clients announce only, and adds
	// this many subscribe-only peers per VNI. Zero subscribes every client
	// to its own VNI.
	Observers int
	// Rate is the churn rate in route changes per second (half adds, half
	// removes), Duration how long it lasts, and Joiners the number of
	// subscribers that come and go meanwhile.
	Rate     int
	Duration time.Duration
	Joiners  int
	// Lib uses the client library (metalbond.Client) for announcers and
	// subscribers instead of lean raw peers (fanout, join, many, churn),
	// and, in install, sends the routes through a server and a client to
	// the kernel installer.
	Lib bool
	// Ext makes raw peers advertise the END_OF_SYNC extension in HELLO
	// instead of being plain v1 peers (servers may treat the two
	// differently, e.g. pace writes to plain v1 peers).
	Ext bool
	// NoPaceV1 turns off the pacing of writes to plain v1 peers in a
	// started server (docs/pacing.md).
	NoPaceV1 bool

	// Server is the address of an external server to drive. Empty starts
	// a server: a child process when ServerCmd is set, else in-process
	// (InProcess forces that).
	Server string
	// ServerPID, for an external server, is its process ID, so that its
	// CPU time and memory can be read from /proc.
	ServerPID int
	InProcess bool
	// ServerCmd is the command line that starts ServeMain in a child
	// process (e.g. the benchmark binary and "serve"); ServerEnv is added
	// to its environment.
	ServerCmd []string
	ServerEnv []string
	// Keepalive, HighWater, MaxQueue and WriteTimeout configure a started
	// server (zero: the library's defaults). Keepalive is also what peers
	// propose.
	Keepalive    time.Duration
	HighWater    int
	MaxQueue     int
	WriteTimeout time.Duration

	// Timeout bounds the whole run. Default 2 minutes.
	Timeout time.Duration
	// CPUProfile, if set, is a file for a CPU profile of the server over
	// the measured part of the run.
	CPUProfile string
	// Progress receives a line per step; nil is silent.
	Progress io.Writer
}

// Defaults returns cfg with the scenario's default sizes filled in: the
// sizes of the targets of issue 5.
func Defaults(cfg Config) Config {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	switch cfg.Scenario {
	case "fanout", "join":
		def(&cfg.N, 100_000)
		def(&cfg.S, 10)
	case "many":
		def(&cfg.C, 1000)
		def(&cfg.V, 10)
		def(&cfg.R, 10)
	case "churn":
		def(&cfg.N, 10_000)
		def(&cfg.S, 10)
		def(&cfg.Rate, 20_000)
		def(&cfg.Joiners, 4)
		if cfg.Duration == 0 {
			cfg.Duration = 5 * time.Second
		}
	case "install":
		def(&cfg.N, 100_000)
	case "memory":
		def(&cfg.N, 1_000_000)
		def(&cfg.C, 1)
		def(&cfg.V, 1)
	}
	if cfg.Keepalive == 0 {
		cfg.Keepalive = 5 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Minute
	}
	return cfg
}

// Result is what a run measured.
type Result struct {
	Scenario string     `json:"scenario"`
	Params   Params     `json:"params"`
	Server   ServerInfo `json:"server"`
	Machine  Machine    `json:"machine"`
	// Phases are the measured steps, in order.
	Phases []*Phase `json:"phases"`
	// Headline is the phase that the targets of issue 5 refer to.
	Headline string `json:"headline"`
	// ServerCPUSeconds is the server's CPU time over all phases.
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	// ServerPeakRSS is the server's peak resident set size in bytes over
	// the run (0 if unknown).
	ServerPeakRSS int64 `json:"server_peak_rss"`
	// Exactness sums the checks of every receiver after every phase.
	Exactness Exactness `json:"exactness"`
	// Metrics are scenario-specific figures (names carry their unit).
	Metrics map[string]float64 `json:"metrics,omitempty"`
	Notes   []string           `json:"notes,omitempty"`
	// Skipped explains why the scenario did not run; Error why it failed.
	Skipped string `json:"skipped,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Params are the sizes a run used.
type Params struct {
	N         int     `json:"n,omitempty"`
	S         int     `json:"s,omitempty"`
	C         int     `json:"c,omitempty"`
	V         int     `json:"v,omitempty"`
	R         int     `json:"r,omitempty"`
	Observers int     `json:"observers,omitempty"`
	Rate      int     `json:"rate,omitempty"`
	Duration  float64 `json:"duration_seconds,omitempty"`
	Joiners   int     `json:"joiners,omitempty"`
	Lib       bool    `json:"lib,omitempty"`
	Ext       bool    `json:"ext,omitempty"`
	NoPaceV1  bool    `json:"no_pace_v1,omitempty"`
}

// Phase is one measured step of a scenario.
type Phase struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
	// Routes is the number of route changes the step made; Deliveries
	// the number of updates receivers had to get.
	Routes           int64   `json:"routes"`
	Deliveries       int64   `json:"deliveries"`
	RoutesPerSec     float64 `json:"routes_per_second"`
	DeliveriesPerSec float64 `json:"deliveries_per_second"`
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	// LoadCPUSeconds is the CPU time of the benchmark process itself (the
	// load generators and receivers; with an in-process server, the
	// server too).
	LoadCPUSeconds float64 `json:"load_cpu_seconds"`
	// OtherCPUSeconds is the CPU time the rest of the machine used
	// meanwhile (busy time from /proc/stat less the server and the
	// benchmark). Much more than zero means the figures are disturbed.
	OtherCPUSeconds float64 `json:"other_cpu_seconds"`
	// Exactness is the check after the step, if one was made.
	Exactness *Exactness `json:"exactness,omitempty"`
}

// OK reports whether the run completed (or was skipped) and every check
// was exact.
func (r *Result) OK() bool {
	return r.Error == "" && (r.Skipped != "" || r.Exactness.Exact())
}

// Run runs one scenario. It returns an error only for a configuration it
// cannot run; failures during the run are in Result.Error.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = Defaults(cfg)
	if !slices.Contains(Scenarios, cfg.Scenario) {
		return nil, fmt.Errorf("unknown scenario %q (want one of %v)", cfg.Scenario, Scenarios)
	}
	if err := validate(cfg); err != nil {
		return nil, err
	}
	res := &Result{
		Scenario: cfg.Scenario,
		Machine:  machine(),
		Params: Params{N: cfg.N, S: cfg.S, C: cfg.C, V: cfg.V, R: cfg.R, Observers: cfg.Observers,
			Rate: cfg.Rate, Duration: cfg.Duration.Seconds(), Joiners: cfg.Joiners, Lib: cfg.Lib, Ext: cfg.Ext, NoPaceV1: cfg.NoPaceV1},
		Metrics: map[string]float64{},
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	RaiseFileLimit()

	e := &env{cfg: cfg, ctx: ctx, res: res}
	if cfg.Scenario == "install" && !cfg.Lib {
		// The installer alone needs no server.
		err := runInstall(e)
		e.finish(err)
		return res, nil
	}
	srv, err := startServer(ctx, serverOptions{
		listen:            "127.0.0.1:0",
		keepalive:         cfg.Keepalive,
		highWater:         cfg.HighWater,
		maxQueue:          cfg.MaxQueue,
		writeTimeout:      cfg.WriteTimeout,
		noPaceV1:          cfg.NoPaceV1,
		childCmd:          cfg.ServerCmd,
		childEnv:          cfg.ServerEnv,
		externalAddr:      cfg.Server,
		externalPID:       cfg.ServerPID,
		inProcess:         cfg.InProcess,
		childStderr:       cfg.Progress,
		childStartTimeout: 10 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	e.srv = srv
	res.Server = srv.Info()
	if !res.Server.Isolated {
		res.Notes = append(res.Notes, "server CPU and memory include the load generators (same process or unknown)")
	}
	srv.ResetPeak()
	e.setSources()
	e.startKeepalives()
	// When the run times out, reset every connection so that no write
	// blocked on a server that stopped reading outlives the deadline.
	stopAbort := context.AfterFunc(ctx, e.abortPeers)
	defer stopAbort()

	switch cfg.Scenario {
	case "fanout":
		err = runFanout(e)
	case "join":
		err = runJoin(e)
	case "many":
		err = runMany(e)
	case "churn":
		err = runChurn(e)
	case "install":
		err = runInstall(e)
	case "memory":
		err = runMemory(e)
	}
	e.stopProfile()
	if u := srv.Usage(false); u.Known {
		res.ServerPeakRSS = u.HWM
	}
	e.closePeers()
	if cerr := srv.Close(); cerr != nil && err == nil && cfg.Server == "" {
		err = fmt.Errorf("server exit: %w", cerr)
	}
	e.finish(err)
	return res, nil
}

func validate(cfg Config) error {
	neg := cfg.N < 0 || cfg.S < 0 || cfg.C < 0 || cfg.V < 0 || cfg.R < 0 || cfg.Observers < 0 ||
		cfg.Rate < 0 || cfg.Joiners < 0 || cfg.Duration < 0
	switch {
	case neg:
		return errors.New("sizes must not be negative")
	case cfg.Scenario == "many" && cfg.C < cfg.V:
		return fmt.Errorf("many: C=%d clients cannot fill V=%d VNIs", cfg.C, cfg.V)
	case cfg.N+cfg.C*cfg.R > maxLayoutRoutes:
		return fmt.Errorf("at most %d routes", maxLayoutRoutes)
	case cfg.Server != "" && cfg.InProcess:
		return errors.New("an external server cannot also run in-process")
	}
	return nil
}

// env is the state of one run, shared by the scenario functions.
type env struct {
	cfg Config
	ctx context.Context
	srv server
	res *Result

	srcs     []netip.Addr // source addresses for peers, if several
	nextSrc  atomic.Uint64
	profiled bool

	mu    sync.Mutex // guards the following
	peers []*Peer
	libs  []*libPeer
	stop  chan struct{} // closed to stop the keepalive loop
	wg    sync.WaitGroup
}

func (e *env) logf(format string, args ...any) {
	if e.cfg.Progress != nil {
		fmt.Fprintf(e.cfg.Progress, "bench: "+format+"\n", args...)
	}
}

// setSources spreads connections to a loopback IPv4 server over 16 source
// addresses, so that tens of thousands of peers do not run out of
// ephemeral ports.
func (e *env) setSources() {
	ap, err := netip.ParseAddrPort(e.srv.Addr())
	if err != nil || !ap.Addr().Is4() || !ap.Addr().IsLoopback() {
		return
	}
	for i := range 16 {
		e.srcs = append(e.srcs, netip.AddrFrom4([4]byte{127, 0, 1, byte(1 + i)}))
	}
}

func (e *env) source() netip.Addr {
	if len(e.srcs) == 0 {
		return netip.Addr{}
	}
	return e.srcs[e.nextSrc.Add(1)%uint64(len(e.srcs))]
}

// startKeepalives sends a KEEPALIVE on every raw peer twice per interval.
func (e *env) startKeepalives() {
	e.stop = make(chan struct{})
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		t := time.NewTicker(e.cfg.Keepalive / 2)
		defer t.Stop()
		for {
			select {
			case <-e.stop:
				return
			case <-t.C:
			}
			e.mu.Lock()
			peers := slices.Clone(e.peers)
			e.mu.Unlock()
			for _, p := range peers {
				if !p.closing.Load() {
					p.sendKeepalive()
				}
			}
		}
	}()
}

// dial connects n raw peers, at most 128 at a time.
func (e *env) dial(n int) ([]*Peer, error) {
	peers := make([]*Peer, n)
	opts := peerOptions{keepalive: e.cfg.Keepalive, readBuffer: 64 << 10, timeout: 10 * time.Second}
	if e.cfg.Ext {
		opts.features = wire.FeatureEndOfSync
	}
	if n > 100 {
		opts.readBuffer = 16 << 10 // thousands of peers: keep the benchmark's memory moderate
	}
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range min(n, 128) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || e.ctx.Err() != nil {
					return
				}
				o := opts
				o.local = e.source()
				p, err := dialPeer(e.ctx, e.srv.Addr(), o)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					next.Store(int64(n))
					return
				}
				peers[i] = p
			}
		}()
	}
	wg.Wait()
	e.mu.Lock()
	for _, p := range peers {
		if p != nil {
			e.peers = append(e.peers, p)
		}
	}
	e.mu.Unlock()
	if firstErr == nil && e.ctx.Err() != nil {
		firstErr = e.ctx.Err()
	}
	if firstErr != nil {
		return nil, fmt.Errorf("connect %d peers: %w", n, firstErr)
	}
	return peers, nil
}

// abortPeers resets every connection without waiting for anything.
func (e *env) abortPeers() {
	e.mu.Lock()
	peers, libs := slices.Clone(e.peers), slices.Clone(e.libs)
	e.mu.Unlock()
	for _, p := range peers {
		p.closing.Store(true)
		p.abort()
	}
	for _, l := range libs {
		l.cancel()
	}
}

// closePeers closes every peer and library client of the run.
func (e *env) closePeers() {
	if e.stop != nil {
		close(e.stop)
		e.wg.Wait()
	}
	e.mu.Lock()
	peers, libs := e.peers, e.libs
	e.peers, e.libs = nil, nil
	e.mu.Unlock()
	for _, p := range peers {
		p.Close()
	}
	for _, l := range libs {
		l.Close()
	}
}

// startProfile starts the server's CPU profile, if asked for, at the
// beginning of the measured part.
func (e *env) startProfile() {
	if e.cfg.CPUProfile == "" || e.profiled {
		return
	}
	if err := e.srv.Profile(e.cfg.CPUProfile); err != nil {
		e.res.Notes = append(e.res.Notes, "no CPU profile: "+err.Error())
		return
	}
	e.profiled = true
}

func (e *env) stopProfile() {
	if e.profiled {
		if err := e.srv.Profile(""); err != nil {
			e.res.Notes = append(e.res.Notes, "CPU profile: "+err.Error())
		}
		e.profiled = false
	}
}

// phase runs one measured step: run returns the step's duration (which
// may be less than the time run takes, e.g. when it measures up to the last
// receiver's completion). The server's CPU time is measured around run.
func (e *env) phase(name string, routes, deliveries int64, run func() (time.Duration, error)) (*Phase, error) {
	e.startProfile()
	u0, l0, m0 := e.usage(), selfCPU(), machineBusy()
	d, err := run()
	u1, l1, m1 := e.usage(), selfCPU(), machineBusy()
	p := Phase{Name: name, Seconds: d.Seconds(), Routes: routes, Deliveries: deliveries}
	if d > 0 {
		p.RoutesPerSec = float64(routes) / d.Seconds()
		p.DeliveriesPerSec = float64(deliveries) / d.Seconds()
	}
	if u0.Known && u1.Known {
		p.ServerCPUSeconds = (u1.CPU - u0.CPU).Seconds()
		e.res.ServerCPUSeconds += p.ServerCPUSeconds
	}
	p.LoadCPUSeconds = (l1 - l0).Seconds()
	if m0 > 0 && m1 > 0 {
		other := (m1 - m0).Seconds() - p.LoadCPUSeconds
		if e.res.Server.Isolated {
			other -= p.ServerCPUSeconds
		}
		p.OtherCPUSeconds = max(other, 0)
	}
	e.res.Phases = append(e.res.Phases, &p)
	e.logf("%s: %.3fs, %d routes, %d deliveries", name, d.Seconds(), routes, deliveries)
	return &p, err
}

func (e *env) usage() Usage {
	if e.srv == nil {
		return Usage{}
	}
	return e.srv.Usage(false)
}

// waitAll waits until cond holds for every receiver and returns the time
// from start to the last one's completion.
func (e *env) waitAll(rcvs []*Receiver, cond func(*Receiver) bool, start time.Time) (time.Duration, error) {
	chans := make([]<-chan struct{}, len(rcvs))
	for i, r := range rcvs {
		chans[i] = r.await(cond)
	}
	pending := 0
	for _, ch := range chans {
		select {
		case <-ch:
		case <-e.ctx.Done():
			pending++
		}
	}
	if pending > 0 {
		r := rcvs[slices.IndexFunc(chans, func(ch <-chan struct{}) bool {
			select {
			case <-ch:
				return false
			default:
				return true
			}
		})]
		r.mu.Lock()
		present := r.present
		r.mu.Unlock()
		return 0, fmt.Errorf("%d of %d receivers did not finish in time (one holds %d routes): %w",
			pending, len(rcvs), present, e.ctx.Err())
	}
	var last time.Time
	for _, r := range rcvs {
		r.mu.Lock()
		err := r.closedErr
		at := r.metAt
		r.mu.Unlock()
		if err != nil {
			return 0, fmt.Errorf("a receiver's connection ended: %w", err)
		}
		if at.After(last) {
			last = at
		}
	}
	return last.Sub(start), nil
}

// check checks every receiver against want and records the result in p
// and in the run's total.
func (e *env) check(p *Phase, rcvs []*Receiver, want func(g int) bool) Exactness {
	var ex Exactness
	for _, r := range rcvs {
		ex.merge(r.check(want))
	}
	if p != nil {
		p.Exactness = &ex
	}
	e.res.Exactness.merge(ex)
	if !ex.Exact() {
		e.logf("check: %+v", ex)
	}
	return ex
}

// checkServerRoutes compares the server's route count, where known, and
// counts that as one more check.
func (e *env) checkServerRoutes(want int64) {
	u := e.srv.Usage(false)
	if u.Routes < 0 {
		return
	}
	ex := Exactness{Receivers: 1}
	if u.Routes != want {
		ex.Failed = 1
		ex.Errors = []string{fmt.Sprintf("server holds %d routes, want %d", u.Routes, want)}
	}
	e.res.Exactness.merge(ex)
}

// finish records err in the result.
func (e *env) finish(err error) {
	if err == nil {
		return
	}
	var skip skipError
	if errors.As(err, &skip) {
		e.res.Skipped = skip.reason
		return
	}
	e.res.Error = err.Error()
}

// skipError says a scenario cannot run here.
type skipError struct{ reason string }

func (s skipError) Error() string { return "skipped: " + s.reason }

// fenceVNI is the VNI used to synchronise with the server without touching
// the VNIs under test.
const fenceVNI route.VNI = route.MaxVNI

// vniBase is the first VNI of the routes under test.
const vniBase route.VNI = 100

// observer connects a peer subscribed to fenceVNI only.
func (e *env) observer() (*Receiver, error) {
	ps, err := e.dial(1)
	if err != nil {
		return nil, err
	}
	rcv := NewReceiver(NewLayout(1, 0, 1, fenceVNI), 0, -1)
	ps[0].Start(rcv)
	return rcv, ps[0].Subscribe(fenceVNI)
}
