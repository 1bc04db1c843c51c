package faulttest

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The long runs: bigger tables, more peers and more iterations. The default
// run stays short because CI runs `go test -race ./...`.
var longFlag = flag.Bool("fault.long", false, "run the long fault tests (also FAULT_LONG=1)")

// defaultParallel is how many tests run at once by default.
const defaultParallel = 16

// long reports whether the long runs were asked for.
func long() bool { return *longFlag || os.Getenv("FAULT_LONG") == "1" }

// scale holds the sizes of the fault tests, short or long.
type scale struct {
	bigVNI       int // routes of the large VNI
	stuckVNI     int // routes of the VNI a stuck peer subscribes to
	flapCycles   int // restarts of each flapping client
	flappers     int // flapping clients
	silentPeers  int // peers that connect and send nothing
	garbagePeers int // concurrent peers sending garbage, per kind
	garbageBytes int // garbage sent by each
	restarts     int // server restarts in the kernel test, per kind
}

func sizes() scale {
	if long() {
		return scale{bigVNI: 200_000, stuckVNI: 100_000, flapCycles: 40, flappers: 4, silentPeers: 1000,
			garbagePeers: 8, garbageBytes: 10 << 20, restarts: 5}
	}
	return scale{bigVNI: 50_000, stuckVNI: 10_000, flapCycles: 4, flappers: 2, silentPeers: 100,
		garbagePeers: 2, garbageBytes: 10 << 20, restarts: 1}
}

func TestMain(m *testing.M) {
	// The tests spend their time waiting for child processes, timers and
	// the network, not computing: run more of them at once than there are
	// CPUs, unless -parallel says otherwise. Not when fuzzing, where
	// -parallel is the number of fuzzing processes.
	given := func(a string) bool {
		return strings.HasPrefix(a, "-test.parallel") || strings.HasPrefix(a, "-test.fuzz")
	}
	if !slices.ContainsFunc(os.Args[1:], given) {
		flag.Set("test.parallel", strconv.Itoa(max(runtime.GOMAXPROCS(0), defaultParallel)))
	}
	code := m.Run()
	if dir := buildDir(); dir != "" {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

var (
	buildMu  sync.Mutex
	builtDir string
)

func buildDir() string {
	buildMu.Lock()
	defer buildMu.Unlock()
	return builtDir
}

// childRace reports whether the metalbond binary is built with -race:
// only with FAULT_CHILD_RACE=1. A race-enabled daemon is several times
// slower, which the default run cannot afford; the in-process tests of this
// package (FuzzSession and the tests of bugs_test.go) run the server code
// under the race detector whenever the test binary has it.
func childRace() bool { return os.Getenv("FAULT_CHILD_RACE") == "1" }

// buildBinary builds the metalbond command once per test binary run (lazily, so
// that fuzzing, which needs no child process, does not pay for it).
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "metalbond-fault-")
	if err != nil {
		return "", err
	}
	buildMu.Lock()
	builtDir = dir
	buildMu.Unlock()
	bin := filepath.Join(dir, "metalbond")
	args := []string{"build", "-o", bin}
	if childRace() {
		args = append(args, "-race")
	}
	args = append(args, "github.com/metalbond/metalbond/cmd/metalbond")
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin, nil
})

// mustBinary returns the path of the metalbond binary, building it first.
func mustBinary(t testing.TB) string {
	t.Helper()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}
