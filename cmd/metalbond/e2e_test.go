package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/metalbond/metalbond/internal/httpapi"
)

// buildBinary builds the metalbond command once per test binary run.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "metalbond-e2e-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "metalbond")
	out, err := exec.Command("go", "build", "-ldflags", "-X main.version=v0.0.0-e2e", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func TestMain(m *testing.M) {
	code := m.Run()
	if bin, err := buildBinary(); err == nil && bin != "" {
		os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}

// proc is a running metalbond process whose stderr is watched.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and stderr is drained
	err  error         // of cmd.Wait, set before done is closed

	mu      sync.Mutex // guards the following
	partial []byte
	lines   []string
	notify  chan struct{} // closed and replaced on every new line
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, name: name, cmd: exec.Command(bin, args...), notify: make(chan struct{}), done: make(chan struct{})}
	p.cmd.Stderr = p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", p.name, strings.Join(p.snapshot(), "\n"))
		}
	})
	return p
}

// Write collects stderr line by line.
func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		p.lines = append(p.lines, string(p.partial[:i]))
		p.partial = p.partial[i+1:]
		close(p.notify)
		p.notify = make(chan struct{})
	}
	return len(b), nil
}

// exit waits for the process to exit and returns the error of Wait.
func (p *proc) exit(timeout time.Duration) (error, bool) {
	select {
	case <-p.done:
		return p.err, true
	case <-time.After(timeout):
		return nil, false
	}
}

func (p *proc) snapshot() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// waitLog waits for a stderr line matching re and returns its submatches.
func (p *proc) waitLog(re string, timeout time.Duration) []string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			if m := rx.FindStringSubmatch(l); m != nil {
				p.mu.Unlock()
				return m
			}
		}
		ch := p.notify
		p.mu.Unlock()
		select {
		case <-ch:
		case <-p.done:
			p.t.Fatalf("%s exited before logging %q", p.name, re)
		case <-deadline:
			p.t.Fatalf("%s did not log %q within %v", p.name, re, timeout)
		}
	}
}

// stop sends SIGTERM and checks that the process exits 0 in time.
func (p *proc) stop() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	err, ok := p.exit(10 * time.Second)
	switch {
	case !ok:
		p.t.Errorf("%s did not exit within 10s of SIGTERM", p.name)
	case err != nil:
		p.t.Errorf("%s: exit after SIGTERM: %v", p.name, err)
	}
}

func getInto(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// eventually retries check until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestEndToEnd runs the built binary: a server and two clients on loopback
// exchange routes, which are checked through the HTTP API and the query
// commands; SIGTERM then stops everything with exit status 0.
func TestEndToEnd(t *testing.T) {
	srv := start(t, "server", "server", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--keepalive", "1")
	addr := srv.waitLog(`msg=listening addr=(\S+)`, 10*time.Second)[1]
	srvHTTP := "http://" + srv.waitLog(`msg="http listening" addr=(\S+)`, 10*time.Second)[1]

	a := start(t, "client A", "client", "--server", addr, "--subscribe", "23", "--name", "hv-a",
		"--announce", "23#10.0.1.0/24#2001:db8::1", "--http", "127.0.0.1:0", "-v")
	aHTTP := "http://" + a.waitLog(`msg="http listening" addr=(\S+)`, 10*time.Second)[1]
	// B asks the server to keep its routes for only 1 s after it leaves.
	b := start(t, "client B", "client", "--server", addr, "--subscribe", "23,24",
		"--name", "hv-b", "--graceful-restart", "1s", "--announce", "23#10.0.2.0/24#2001:db8::2", "--announce", "24#10.0.3.0/24#2001:db8::3#NAT#1024#2047",
		"--log-format", "json", "-v")

	// The server holds all three routes, in the compatible shape.
	eventually(t, 10*time.Second, func() error {
		var dump struct {
			Date    string                                 `json:"date"`
			VNet    map[string]map[string][]map[string]any `json:"vnet"`
			Version string                                 `json:"metalbondVersion"`
		}
		getInto(t, srvHTTP+"/routes.json", &dump)
		if dump.Version != "v0.0.0-e2e" {
			return fmt.Errorf("metalbondVersion %q", dump.Version)
		}
		if len(dump.VNet["23"]) != 2 || len(dump.VNet["24"]) != 1 {
			return fmt.Errorf("server routes: %v", dump.VNet)
		}
		nat := dump.VNet["24"][`{"IPVersion":4,"Prefix":"10.0.3.0/24"}`]
		if len(nat) != 1 || nat[0]["Type"] != 1.0 || nat[0]["NATPortRangeFrom"] != 1024.0 {
			return fmt.Errorf("NAT route: %v", nat)
		}
		return nil
	})

	// Client A received B's route of VNI 23 (and not its own, nor VNI 24).
	eventually(t, 10*time.Second, func() error {
		var page httpapi.RoutesJSON
		getInto(t, aHTTP+"/api/v1/routes", &page)
		if page.Total != 1 || page.Routes[0].Prefix != "10.0.2.0/24" || page.Routes[0].NextHop.Address != "2001:db8::2" {
			return fmt.Errorf("client A routes: %+v", page)
		}
		return nil
	})
	// Client B logged A's route at debug level, as JSON.
	b.waitLog(`"msg":"update".*"prefix":"10.0.1.0/24"`, 10*time.Second)

	// The status page and the metrics of the server.
	for path, want := range map[string]string{"/": "10.0.2.0/24", "/metrics": `metalbond_routes{vni="23"} 2`} {
		resp, err := http.Get(srvHTTP + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %s, body lacks %q", path, resp.Status, want)
		}
	}

	// Readiness of both daemons.
	for _, u := range []string{srvHTTP + "/readyz", aHTTP + "/readyz"} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", u, resp.Status)
		}
	}

	// The query commands against the running server.
	bin, _ := buildBinary()
	out, err := exec.Command(bin, "routes", "--http", srvHTTP, "--vni", "23").CombinedOutput()
	if err != nil {
		t.Fatalf("metalbond routes: %v\n%s", err, out)
	}
	for _, want := range []string{"10.0.1.0/24", "2001:db8::1", "10.0.2.0/24", "2001:db8::2"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("metalbond routes output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "10.0.3.0/24") {
		t.Errorf("metalbond routes --vni 23 shows a route of VNI 24:\n%s", out)
	}
	out, err = exec.Command(bin, "peers", "--http", srvHTTP, "-o", "json").Output()
	if err != nil {
		t.Fatalf("metalbond peers: %v", err)
	}
	var peers httpapi.PeersJSON
	if err := json.Unmarshal(out, &peers); err != nil {
		t.Fatalf("metalbond peers -o json: %v\n%s", err, out)
	}
	if len(peers.Peers) != 2 || peers.Peers[0].State != "ESTABLISHED" || peers.Peers[1].State != "ESTABLISHED" {
		t.Errorf("peers: %+v", peers)
	}
	names := map[string]bool{}
	for _, p := range peers.Peers {
		names[p.Name] = true
	}
	if !names["hv-a"] || !names["hv-b"] {
		t.Errorf("peers JSON lacks the clients' names hv-a and hv-b: %+v", peers)
	}
	out, err = exec.Command(bin, "peers", "--http", srvHTTP).Output()
	if err != nil {
		t.Fatalf("metalbond peers: %v", err)
	}
	if table := string(out); !strings.Contains(table, " NAME ") || !strings.Contains(table, "hv-a") || !strings.Contains(table, "hv-b") {
		t.Errorf("metalbond peers table lacks the NAME column or the names hv-a, hv-b:\n%s", table)
	}
	// A query against nothing is a runtime failure: exit 1.
	err = exec.Command(bin, "peers", "--http", "127.0.0.1:1").Run()
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != exitRuntime {
		t.Errorf("metalbond peers against a closed port: %v, want exit status 1", err)
	}

	// When B stops, its session leaves the server, and its routes go once
	// the graceful-restart time it asked for (1 s) has passed.
	b.stop()
	eventually(t, 10*time.Second, func() error {
		var peers httpapi.PeersJSON
		getInto(t, srvHTTP+"/api/v1/peers", &peers)
		if len(peers.Peers) != 1 {
			return fmt.Errorf("server still lists %d peers", len(peers.Peers))
		}
		return nil
	})
	eventually(t, 10*time.Second, func() error {
		var dump map[string]any
		getInto(t, aHTTP+"/routes.json", &dump)
		if body := fmt.Sprint(dump["vnet"]); strings.Contains(body, "10.0.2.0/24") {
			return fmt.Errorf("client A still has B's route: %s", body)
		}
		return nil
	})
	a.stop()
	srv.stop()
	srv.waitLog(`msg="server stopped"`, time.Second)
}

// TestEndToEndListenFailure checks that a server that cannot listen exits 1.
func TestEndToEndListenFailure(t *testing.T) {
	first := start(t, "first", "server", "--listen", "127.0.0.1:0")
	addr := first.waitLog(`msg=listening addr=(\S+)`, 10*time.Second)[1]
	second := start(t, "second", "server", "--listen", addr)
	err, ok := second.exit(10 * time.Second)
	if !ok {
		t.Fatal("second server did not exit")
	}
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != exitRuntime {
		t.Errorf("second server on a busy address: %v, want exit status 1", err)
	}
	second.waitLog(`address already in use`, time.Second)
	first.stop()
}
