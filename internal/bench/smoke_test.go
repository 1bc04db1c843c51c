package bench

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// serveEnv makes the test binary run ServeMain instead of the tests, so
// that the smoke test can start a child server the way metalbond-bench
// does.
const serveEnv = "METALBOND_BENCH_SERVE"

func TestMain(m *testing.M) {
	if os.Getenv(serveEnv) == "1" {
		os.Exit(ServeMain(os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}

// TestSmoke runs every scenario at a small size and checks that every
// receiver ends exact. It makes no timing assertions. The install scenario
// needs root; in CI (CI=true) it must run.
func TestSmoke(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"fanout", Config{Scenario: "fanout", N: 3000, S: 3}},
		{"fanout-ext", Config{Scenario: "fanout", N: 2000, S: 2, Ext: true}},
		{"fanout-lib", Config{Scenario: "fanout", N: 500, S: 2, Lib: true}},
		{"fanout-child", Config{Scenario: "fanout", N: 1000, S: 2, ServerCmd: []string{os.Args[0]}, ServerEnv: []string{serveEnv + "=1"}}},
		{"join", Config{Scenario: "join", N: 3000, S: 3}},
		{"join-lib", Config{Scenario: "join", N: 500, S: 2, Lib: true}},
		{"many", Config{Scenario: "many", C: 40, V: 4, R: 5}},
		{"many-observers", Config{Scenario: "many", C: 40, V: 4, R: 5, Observers: 2}},
		{"many-lib", Config{Scenario: "many", C: 12, V: 3, R: 3, Lib: true}},
		{"churn", Config{Scenario: "churn", N: 500, S: 2, Rate: 4000, Duration: 300 * time.Millisecond, Joiners: 2}},
		{"memory", Config{Scenario: "memory", N: 20000, C: 2, V: 2}},
		{"install", Config{Scenario: "install", N: 500}},
		{"install-lib", Config{Scenario: "install", N: 200, Lib: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.InProcess = len(cfg.ServerCmd) == 0
			cfg.Keepalive = time.Second
			cfg.Timeout = 30 * time.Second
			if testing.Verbose() {
				cfg.Progress = testWriter{t}
			}
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			Format(&b, res)
			t.Log("\n" + b.String())
			if res.Skipped != "" {
				if os.Getenv("CI") == "true" {
					t.Fatalf("skipped in CI: %s", res.Skipped)
				}
				t.Skip(res.Skipped)
			}
			if res.Error != "" {
				t.Fatalf("run failed: %s", res.Error)
			}
			if res.Exactness.Receivers == 0 {
				t.Fatal("nothing was checked")
			}
			if !res.Exactness.Exact() {
				t.Fatalf("not exact: %+v", res.Exactness)
			}
			if len(res.Phases) == 0 || res.Headline == "" {
				t.Fatalf("no phases measured: %+v", res)
			}
		})
	}
}

// testWriter sends progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
