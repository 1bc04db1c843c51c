package faulttest

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/metalbond/metalbond/internal/testport"
)

// procSpec describes a metalbond process.
type procSpec struct {
	name  string   // in logs
	netns string   // named network namespace to run in; "" for ours
	args  []string // arguments of the metalbond command
	http  string   // its --http address, for readiness and observation
}

// proc is a metalbond child process that can be killed and started again
// with the same arguments. Its stderr is kept over all incarnations.
type proc struct {
	t    testing.TB
	spec procSpec
	bin  string

	mu     sync.Mutex // guards the following
	cmd    *exec.Cmd
	done   chan struct{} // closed when the current incarnation has exited
	exit   error         // of cmd.Wait, valid once done is closed
	starts int
	log    bytes.Buffer // stderr of every incarnation, with markers
}

// startProc starts a metalbond process and stops it when the test ends.
// At the end it fails the test if the process reported a data race or a
// panic, and prints its stderr if the test failed.
func startProc(t testing.TB, spec procSpec) *proc {
	t.Helper()
	p := &proc{t: t, spec: spec, bin: mustBinary(t)}
	t.Cleanup(p.cleanup)
	p.start()
	return p
}

// start starts a new incarnation; the previous one must have exited.
func (p *proc) start() {
	p.t.Helper()
	cmd := exec.Command(p.bin, p.spec.args...)
	if p.spec.netns != "" {
		// ip netns exec runs the command in the same process (it execs),
		// so the PID we signal is the metalbond process in the end.
		cmd.Args = append([]string{"ip", "netns", "exec", p.spec.netns}, cmd.Args...)
		path, err := exec.LookPath("ip")
		if err != nil {
			p.t.Fatal(err)
		}
		cmd.Path = path
	}
	// The children die with the test binary, however it ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout = p.writer()
	cmd.Stderr = p.writer()
	p.mu.Lock()
	p.starts++
	fmt.Fprintf(&p.log, "=== %s start #%d at %s\n", p.spec.name, p.starts, time.Now().Format("15:04:05.000"))
	if err := cmd.Start(); err != nil {
		p.mu.Unlock()
		p.t.Fatalf("start %s: %v", p.spec.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.exit = err
		fmt.Fprintf(&p.log, "=== %s exited at %s: %v\n", p.spec.name, time.Now().Format("15:04:05.000"), err)
		p.mu.Unlock()
		close(done)
	}()
}

type procWriter struct{ p *proc }

func (w procWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.log.Write(b)
}

func (p *proc) writer() procWriter { return procWriter{p} }

// running reports whether the current incarnation is running.
func (p *proc) running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// signal sends sig and waits for the process to exit.
func (p *proc) signal(sig syscall.Signal, timeout time.Duration) error {
	p.t.Helper()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s did not exit within %v of %v", p.spec.name, timeout, sig)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

// kill9 kills the process with SIGKILL and waits for it.
func (p *proc) kill9() {
	p.t.Helper()
	p.signal(syscall.SIGKILL, 10*time.Second)
}

// stop stops the process cleanly (SIGTERM) and fails the test unless it
// exits 0 within 15 s.
func (p *proc) stop() {
	p.t.Helper()
	if err := p.signal(syscall.SIGTERM, 15*time.Second); err != nil {
		p.t.Errorf("stop %s: %v", p.spec.name, err)
	}
}

// restart starts the process again after it was stopped or killed, and
// waits until its HTTP endpoint answers.
func (p *proc) restart() {
	p.t.Helper()
	if p.running() {
		p.t.Fatalf("restart %s: still running", p.spec.name)
	}
	// The kernel may refuse the old port for a moment after the previous
	// incarnation's sockets closed: start again while it says so.
	for try := 0; ; try++ {
		p.start()
		if p.waitUp(20*time.Second, try < 50) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitHTTP waits until the process answers /healthz.
func (p *proc) waitHTTP(timeout time.Duration) {
	p.t.Helper()
	p.waitUp(timeout, false)
}

// waitUp waits until the process answers /healthz and reports true. If the
// process exits first because its port is in use and inUseOK is set, it
// reports false; any other failure fails the test.
func (p *proc) waitUp(timeout time.Duration, inUseOK bool) bool {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := httpClient.Get("http://" + p.spec.http + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		if !p.running() {
			if inUseOK && p.lastRunSaid("address already in use") {
				return false
			}
			p.t.Fatalf("%s exited before answering HTTP:\n%s", p.spec.name, p.logTail(40))
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: no HTTP answer on %s within %v: %v\n%s", p.spec.name, p.spec.http, timeout, err, p.logTail(40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lastRunSaid reports whether the current incarnation wrote text.
func (p *proc) lastRunSaid(text string) bool {
	out := p.logText()
	if i := strings.LastIndex(out, "=== "+p.spec.name+" start #"); i >= 0 {
		out = out[i:]
	}
	return strings.Contains(out, text)
}

// logText returns everything the process wrote.
func (p *proc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// logTail returns the last n lines of the process's output.
func (p *proc) logTail(n int) string {
	lines := strings.Split(strings.TrimRight(p.logText(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cleanup stops the process and checks its output for races and panics.
func (p *proc) cleanup() {
	if p.running() {
		p.signal(syscall.SIGKILL, 10*time.Second)
	}
	out := p.logText()
	for _, bad := range []string{"WARNING: DATA RACE", "panic: ", "fatal error: "} {
		if strings.Contains(out, bad) {
			p.t.Errorf("%s reported %q", p.spec.name, strings.TrimSpace(bad))
		}
	}
	if p.t.Failed() {
		p.t.Logf("output of %s (last 60 lines):\n%s", p.spec.name, p.logTail(60))
	}
}

// httpClient opens a connection per request, so that the goroutines of the
// observed server do not depend on our connection pool.
var httpClient = &http.Client{
	Transport: &http.Transport{DisableKeepAlives: true},
	Timeout:   30 * time.Second,
}

// freePort returns host:port with a TCP port that was free a moment ago,
// outside the ephemeral range so that no client connection takes it
// before the process binds it.
func freePort(t testing.TB, host string) string {
	t.Helper()
	return testport.Free(t, host)
}
