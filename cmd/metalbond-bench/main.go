// Command metalbond-bench measures a MetalBond route server: it drives a
// server (started as a child process, in-process, or given by address)
// with lean v1 peers or library clients through one of the scenarios of
// package bench, checks that every receiver ends with the exact expected
// table, and prints time, routes/s, deliveries/s, server CPU and peak RSS.
//
// Usage:
//
//	metalbond-bench -scenario fanout -N 100000 -S 10
//	metalbond-bench -scenario many -C 10000 -V 10 -R 10 -o json
//	metalbond-bench -scenario join -server [::1]:4711 -server-pid 1234
//
// Run with -h for what each scenario does, its defaults, how to read the
// result table, and every flag. The hidden first argument "serve" runs the
// child server (see bench.ServeMain).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/metalbond/metalbond/internal/bench"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		os.Exit(bench.ServeMain(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code, err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "metalbond-bench:", err)
	}
	os.Exit(code)
}

// run parses args, runs the scenarios and reports them. The exit code is
// 0 when every run was exact (or skipped), 1 otherwise, 2 for bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("metalbond-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(fs.Output(), fs) }
	var cfg bench.Config
	scenario := fs.String("scenario", "fanout", "scenarios to run, comma-separated: "+strings.Join(bench.Scenarios, ", ")+", or all")
	fs.IntVar(&cfg.N, "N", 0, "routes (fanout, join, install, memory; window size in churn); 0: scenario default")
	fs.IntVar(&cfg.S, "S", 0, "subscribers (fanout, join, churn)")
	fs.IntVar(&cfg.C, "C", 0, "clients (many) or announcers (memory)")
	fs.IntVar(&cfg.V, "V", 0, "VNIs (many, memory)")
	fs.IntVar(&cfg.R, "R", 0, "routes per client (many)")
	fs.IntVar(&cfg.Observers, "observers", 0, "many: clients only announce, and this many subscribe-only peers per VNI receive")
	fs.IntVar(&cfg.Rate, "rate", 0, "churn: route changes per second")
	fs.DurationVar(&cfg.Duration, "duration", 0, "churn: how long the churn lasts")
	fs.IntVar(&cfg.Joiners, "joiners", 0, "churn: subscribers that come and go")
	fs.BoolVar(&cfg.Lib, "lib", false, "use the client library (metalbond.Client) instead of raw v1 peers")
	fs.BoolVar(&cfg.Ext, "ext", false, "raw peers advertise the END_OF_SYNC extension instead of being plain v1 peers")
	fs.BoolVar(&cfg.NoPaceV1, "no-pace-v1", false, "started server: do not pace writes to plain v1 peers (docs/pacing.md)")
	fs.StringVar(&cfg.Server, "server", "", "drive the external server at `ADDR` instead of starting one")
	fs.IntVar(&cfg.ServerPID, "server-pid", 0, "PID of the external server, to read its CPU time and memory from /proc")
	fs.BoolVar(&cfg.InProcess, "in-process", false, "run the server in this process (CPU and RSS then include the load generators)")
	fs.DurationVar(&cfg.Keepalive, "keepalive", 0, "keepalive interval proposed by peers and allowed by a started server (default 5s)")
	fs.IntVar(&cfg.HighWater, "high-water", 0, "started server: send-queue back-pressure threshold in bytes (0: library default)")
	fs.IntVar(&cfg.MaxQueue, "max-queue", 0, "started server: send-queue memory bound in bytes (0: library default)")
	fs.DurationVar(&cfg.Timeout, "timeout", 0, "bound on each run (default 2m)")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the server over the measured phases to `FILE` (started servers only)")
	loadProfile := fs.String("loadprofile", "", "write a CPU profile of this process (the load generators) to `FILE`")
	repeat := fs.Int("repeat", 1, "run each scenario this many times")
	format := fs.String("o", "text", "output format: text or json (one object per run, one per line)")
	verbose := fs.Bool("v", false, "print progress to stderr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, nil
		}
		return 2, nil
	}
	if fs.NArg() > 0 {
		return 2, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *format != "text" && *format != "json" {
		return 2, fmt.Errorf("-o %q: want text or json", *format)
	}
	if *verbose {
		cfg.Progress = stderr
	}
	if cfg.Server == "" && !cfg.InProcess {
		exe, err := os.Executable()
		if err != nil {
			return 1, fmt.Errorf("find own executable for the server process: %w", err)
		}
		cfg.ServerCmd = []string{exe, "serve"}
	}
	if *loadProfile != "" {
		f, err := os.Create(*loadProfile)
		if err != nil {
			return 1, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return 1, err
		}
		defer pprof.StopCPUProfile()
	}
	scenarios := strings.Split(*scenario, ",")
	if *scenario == "all" {
		scenarios = bench.Scenarios
	}

	code := 0
	enc := json.NewEncoder(stdout)
	for _, sc := range scenarios {
		for i := range *repeat {
			c := cfg
			c.Scenario = strings.TrimSpace(sc)
			if c.CPUProfile != "" && (len(scenarios) > 1 || *repeat > 1) {
				c.CPUProfile = fmt.Sprintf("%s.%s.%d", cfg.CPUProfile, c.Scenario, i)
			}
			res, err := bench.Run(ctx, c)
			if err != nil {
				return 2, err
			}
			if *format == "json" {
				if err := enc.Encode(res); err != nil {
					return 1, err
				}
			} else {
				if err := bench.Format(stdout, res); err != nil {
					return 1, err
				}
				fmt.Fprintln(stdout)
			}
			if !res.OK() {
				code = 1
			}
			if ctx.Err() != nil {
				return 1, ctx.Err()
			}
		}
	}
	return code, nil
}
