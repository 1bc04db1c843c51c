package deploy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// binDir holds the metalbond binary built from the repository for the tests.
var binDir string

func TestMain(m *testing.M) {
	if url := os.Getenv("DEPLOY_TEST_GET"); url != "" {
		// Run by a test inside a network namespace: GET url, print the
		// status code.
		code, body, err := getBody(url)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(code)
		os.Stdout.Write(body)
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "metalbond-deploy-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildErr  error
)

// metalbondBinary builds ../cmd/metalbond (with the race detector, as the
// rest of the tests run) once and returns its path.
func metalbondBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(binDir, "metalbond")
	buildOnce.Do(func() {
		cmd := exec.Command("go", "build", "-race", "-o", bin, "./cmd/metalbond")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/metalbond: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bin
}

// get returns the status code of a GET of url.
func get(url string) (int, error) {
	code, _, err := getBody(url)
	return code, err
}

// getBody returns the status code and body of a GET of url.
func getBody(url string) (int, []byte, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer is a bytes.Buffer safe for a process's output and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// process is a running command whose output is kept for the test log.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed when it has exited
	err  error         // its exit, once done is closed
}

// start starts cmd and stops it (SIGKILL) at the end of the test if it is
// still running; its output goes to the test log on failure.
func start(t *testing.T, name string, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{name: name, cmd: cmd, out: new(syncBuffer), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out.String())
		}
	})
	return p
}

// waitStatus polls url until it answers want, the process exits or a
// minute passes (a bound for a broken run, not a timing assertion).
func (p *process) waitStatus(t *testing.T, url string, want int, getter func(string) (int, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		code, err := getter(url)
		if err == nil && code == want {
			return
		}
		last = fmt.Sprint(code, err)
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) before %s answered %d", p.name, p.err, url, want)
		case <-ctx.Done():
			t.Fatalf("%s: %s did not answer %d within a minute (last: %s)", p.name, url, want, last)
		case <-tick.C:
		}
	}
}

// stop sends sig and waits for a clean exit (status 0).
func (p *process) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		t.Fatalf("%s did not exit within a minute of %v", p.name, sig)
	}
	if p.err != nil {
		t.Fatalf("%s exited with %v after %v, want status 0", p.name, p.err, sig)
	}
}
