package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/metalbond/metalbond"
)

// Usage is a snapshot of the server's resource use.
type Usage struct {
	// CPU is the user and system time the server process used so far.
	CPU time.Duration `json:"cpu_ns"`
	// RSS and HWM are the resident set size and its peak, in bytes.
	RSS int64 `json:"rss"`
	HWM int64 `json:"hwm"`
	// Heap is the Go heap in use (after a collection if one was asked
	// for), or -1 if unknown.
	Heap int64 `json:"heap"`
	// Routes is the number of routes in the server's table, or -1 if
	// unknown.
	Routes int64 `json:"routes"`
	// Known is false when nothing could be measured (an external server
	// without a PID).
	Known bool `json:"known"`
}

// server is the route server a scenario drives.
type server interface {
	// Addr is the address to dial.
	Addr() string
	// Usage measures the server; gc asks for a collection first (which
	// makes Heap the live heap).
	Usage(gc bool) Usage
	// ResetPeak resets the peak RSS, where possible.
	ResetPeak()
	// Profile starts (path != "") or stops a CPU profile of the server.
	Profile(path string) error
	// Info describes the server for the report.
	Info() ServerInfo
	// Close stops a server the scenario started.
	Close() error
}

// ServerInfo describes the server in a Result.
type ServerInfo struct {
	// Mode is "child" (a process of its own started by the benchmark),
	// "in-process" or "external".
	Mode string `json:"mode"`
	Addr string `json:"addr"`
	PID  int    `json:"pid,omitempty"`
	// Isolated is true when CPU and memory figures are the server's alone;
	// in-process figures include the load generators.
	Isolated bool `json:"isolated"`
}

// serverOptions configure servers the benchmark starts itself.
type serverOptions struct {
	listen              string
	keepalive           time.Duration
	highWater, maxQueue int
	writeTimeout        time.Duration
	noPaceV1            bool
	childCmd, childEnv  []string
	externalAddr        string
	externalPID         int
	inProcess           bool
	childStderr         io.Writer
	childStartTimeout   time.Duration
}

func startServer(ctx context.Context, o serverOptions) (server, error) {
	switch {
	case o.externalAddr != "":
		return &externalServer{addr: o.externalAddr, pid: o.externalPID}, nil
	case o.inProcess || len(o.childCmd) == 0:
		return startInProcess(o)
	default:
		return startChild(ctx, o)
	}
}

func (o serverOptions) serverConfig() metalbond.ServerConfig {
	return metalbond.ServerConfig{
		Keepalive:    o.keepalive,
		HighWater:    o.highWater,
		MaxQueue:     o.maxQueue,
		WriteTimeout: o.writeTimeout,
		NoPaceV1:     o.noPaceV1,
	}
}

// inProcessServer runs the server in the benchmark's own process.
type inProcessServer struct {
	srv    *metalbond.Server
	addr   string
	cancel context.CancelFunc
	done   chan error
	prof   *os.File
}

func startInProcess(o serverOptions) (*inProcessServer, error) {
	srv, err := metalbond.NewServer(o.serverConfig())
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &inProcessServer{srv: srv, addr: ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(ctx, ln) }()
	return s, nil
}

func (s *inProcessServer) Addr() string { return s.addr }

func (s *inProcessServer) Usage(gc bool) Usage { return selfUsage(s.srv, gc) }

func (s *inProcessServer) ResetPeak() { resetPeak("self") }

func (s *inProcessServer) Profile(path string) error { return profile(&s.prof, path) }

func (s *inProcessServer) Info() ServerInfo {
	return ServerInfo{Mode: "in-process", Addr: s.addr, PID: os.Getpid()}
}

func (s *inProcessServer) Close() error {
	s.cancel()
	return <-s.done
}

// selfUsage measures this process, with srv's route count.
func selfUsage(srv *metalbond.Server, gc bool) Usage {
	u := Usage{Known: true, Heap: -1, Routes: -1, CPU: selfCPU()}
	u.RSS, u.HWM = procMemory("self")
	if gc {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	u.Heap = int64(ms.HeapAlloc)
	if srv != nil {
		u.Routes = 0
		for _, v := range srv.VNIs() {
			u.Routes += int64(v.Routes)
		}
	}
	return u
}

// machineBusy returns the CPU time all CPUs spent busy since boot, from
// /proc/stat (10ms ticks), or 0.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 7 { // guest time is counted in user already
			break
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// selfCPU returns the user and system time of this process.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func profile(f **os.File, path string) error {
	if path == "" {
		if *f == nil {
			return nil
		}
		pprof.StopCPUProfile()
		err := (*f).Close()
		*f = nil
		return err
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(out); err != nil {
		out.Close()
		return err
	}
	*f = out
	return nil
}

// procMemory returns VmRSS and VmHWM of a process ("self" or a PID) in
// bytes, zero if unavailable.
func procMemory(pid string) (rss, hwm int64) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if k == "VmRSS" {
			rss = n << 10
		} else {
			hwm = n << 10
		}
	}
	return rss, hwm
}

// procCPU returns the user and system time of a process from
// /proc/PID/stat (in clock ticks of 10ms, the USER_HZ of Linux).
func procCPU(pid string) (time.Duration, bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, true
}

// resetPeak resets VmHWM of a process (Linux 4.0 and later); failures are
// ignored, the peak then covers the process's lifetime.
func resetPeak(pid string) {
	os.WriteFile("/proc/"+pid+"/clear_refs", []byte("5"), 0)
}

// externalServer is a server at an address given by the user. With a PID
// its CPU time and memory are read from /proc.
type externalServer struct {
	addr string
	pid  int
}

func (s *externalServer) Addr() string { return s.addr }

func (s *externalServer) Usage(bool) Usage {
	u := Usage{Heap: -1, Routes: -1}
	if s.pid <= 0 {
		return u
	}
	pid := strconv.Itoa(s.pid)
	cpu, ok := procCPU(pid)
	u.CPU, u.Known = cpu, ok
	u.RSS, u.HWM = procMemory(pid)
	return u
}

func (s *externalServer) ResetPeak() {
	if s.pid > 0 {
		resetPeak(strconv.Itoa(s.pid))
	}
}

func (s *externalServer) Profile(path string) error {
	if path != "" {
		return errors.New("cannot profile an external server: use its own profiling")
	}
	return nil
}

func (s *externalServer) Info() ServerInfo {
	return ServerInfo{Mode: "external", Addr: s.addr, PID: s.pid, Isolated: s.pid > 0}
}

func (s *externalServer) Close() error { return nil }

// childServer is a server in a child process speaking the control protocol
// of ServeMain on its standard input and output.
type childServer struct {
	cmd  *exec.Cmd
	addr string
	in   io.WriteCloser
	out  *bufio.Reader
	mu   sync.Mutex // serialises control requests
}

func startChild(ctx context.Context, o serverOptions) (*childServer, error) {
	args := append([]string(nil), o.childCmd[1:]...)
	args = append(args,
		"-listen", o.listen,
		"-keepalive", o.keepalive.String(),
		"-high-water", strconv.Itoa(o.highWater),
		"-max-queue", strconv.Itoa(o.maxQueue),
		"-write-timeout", o.writeTimeout.String(),
		"-no-pace-v1="+strconv.FormatBool(o.noPaceV1))
	cmd := exec.Command(o.childCmd[0], args...)
	cmd.Env = append(os.Environ(), o.childEnv...)
	cmd.Stderr = o.childStderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start server process: %w", err)
	}
	s := &childServer{cmd: cmd, in: in, out: bufio.NewReader(outPipe)}
	type res struct {
		line string
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		line, err := s.out.ReadString('\n')
		ch <- res{line, err}
	}()
	select {
	case r := <-ch:
		addr, ok := strings.CutPrefix(strings.TrimSpace(r.line), "listening ")
		if r.err != nil || !ok {
			s.kill()
			return nil, fmt.Errorf("server process did not start: %q %v", r.line, r.err)
		}
		s.addr = addr
	case <-time.After(o.childStartTimeout):
		s.kill()
		return nil, errors.New("server process did not start in time")
	case <-ctx.Done():
		s.kill()
		return nil, ctx.Err()
	}
	return s, nil
}

func (s *childServer) kill() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

// request sends one control command and returns the answer line.
func (s *childServer) request(cmd string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := io.WriteString(s.in, cmd+"\n"); err != nil {
		return "", err
	}
	line, err := s.out.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSpace(line)
	if msg, ok := strings.CutPrefix(line, "error "); ok {
		return "", errors.New(msg)
	}
	return line, nil
}

func (s *childServer) Addr() string { return s.addr }

func (s *childServer) Usage(gc bool) Usage {
	cmd := "usage"
	if gc {
		cmd = "usage gc"
	}
	line, err := s.request(cmd)
	var u Usage
	if err == nil {
		err = json.Unmarshal([]byte(line), &u)
	}
	if err != nil {
		return Usage{Heap: -1, Routes: -1}
	}
	return u
}

func (s *childServer) ResetPeak() { s.request("reset-peak") }

func (s *childServer) Profile(path string) error {
	if path == "" {
		_, err := s.request("profile-stop")
		return err
	}
	_, err := s.request("profile-start " + path)
	return err
}

func (s *childServer) Info() ServerInfo {
	return ServerInfo{Mode: "child", Addr: s.addr, PID: s.cmd.Process.Pid, Isolated: true}
}

// Close asks the child to shut down by closing its input, and kills it if
// it does not exit in time.
func (s *childServer) Close() error {
	s.in.Close()
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-done
		return errors.New("server process did not exit in time: killed")
	}
}

// ServeMain is the hidden server mode of a benchmark binary: it runs a
// route server for the benchmark process that started it, so that the
// server's CPU time and memory are measured alone. It prints
// "listening ADDR" on stdout, then answers one line per command read from
// stdin:
//
//	usage [gc]            JSON Usage of this process (gc: collect first)
//	reset-peak            reset the peak RSS
//	profile-start PATH    start a CPU profile
//	profile-stop          stop it
//
// and shuts down when stdin ends. args are the flags (-listen,
// -keepalive, -high-water, -max-queue, -write-timeout, -no-pace-v1). It returns the exit
// code.
func ServeMain(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	keepalive := fs.Duration("keepalive", 0, "largest keepalive interval agreed")
	highWater := fs.Int("high-water", 0, "send-queue back-pressure threshold in bytes")
	maxQueue := fs.Int("max-queue", 0, "send-queue memory bound in bytes")
	writeTimeout := fs.Duration("write-timeout", 0, "stalled peer timeout")
	noPace := fs.Bool("no-pace-v1", false, "do not pace writes to plain v1 peers")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	RaiseFileLimit()
	srv, err := metalbond.NewServer(metalbond.ServerConfig{
		Keepalive: *keepalive, HighWater: *highWater, MaxQueue: *maxQueue, WriteTimeout: *writeTimeout,
		NoPaceV1: *noPace,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "listening %s\n", ln.Addr())
	out.Flush()

	var prof *os.File
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		var reply string
		switch cmd {
		case "usage":
			b, _ := json.Marshal(selfUsage(srv, arg == "gc"))
			reply = string(b)
		case "reset-peak":
			resetPeak("self")
			reply = "ok"
		case "profile-start", "profile-stop":
			if err := profile(&prof, arg); err != nil {
				reply = "error " + err.Error()
			} else {
				reply = "ok"
			}
		default:
			reply = "error unknown command " + strconv.Quote(cmd)
		}
		fmt.Fprintln(out, reply)
		out.Flush()
	}
	profile(&prof, "")
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// RaiseFileLimit raises the soft limit on open files to the hard limit, so
// that thousands of connections fit. It returns the new soft limit.
func RaiseFileLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	return rl.Cur
}
