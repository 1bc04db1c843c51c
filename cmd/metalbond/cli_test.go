package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/kernel"
	"github.com/metalbond/metalbond/route"
)

// capture runs args with runners that record the configuration instead of
// starting anything.
type capture struct {
	server *serverConfig
	client *clientConfig
}

func (c *capture) runners() runners {
	return runners{
		server: func(_ context.Context, cfg serverConfig, _ *slog.Logger, _ io.Writer) error {
			c.server = &cfg
			return nil
		},
		client: func(_ context.Context, cfg clientConfig, _ *slog.Logger, _ io.Writer) error {
			c.client = &cfg
			return nil
		},
	}
}

func run(t *testing.T, args ...string) (code int, stdout, stderr string, c *capture) {
	t.Helper()
	c = new(capture)
	var out, errb bytes.Buffer
	code = execute(context.Background(), args, &out, &errb, c.runners())
	return code, out.String(), errb.String(), c
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"bad announce prefix", []string{"client", "--server", "[::1]:4711", "--announce", "23#10.0.0.0/33#x"},
			`metalbond: invalid --announce "23#10.0.0.0/33#x": invalid prefix "10.0.0.0/33"`},
		{"bad announce nexthop", []string{"client", "--server", "[::1]:4711", "--announce", "23#10.0.0.0/24#x"},
			`invalid --announce "23#10.0.0.0/24#x": invalid nexthop address "x"`},
		{"announce too short", []string{"client", "--server", "[::1]:4711", "--announce", "23#10.0.0.0/24"},
			`invalid --announce "23#10.0.0.0/24": want VNI#PREFIX#NEXTHOP`},
		{"announce bad type", []string{"client", "--server", "[::1]:4711", "--announce", "23#10.0.0.0/24#::1#FOO"},
			`invalid --announce "23#10.0.0.0/24#::1#FOO": invalid nexthop type "FOO"`},
		{"announce NAT without ports", []string{"client", "--server", "[::1]:4711", "--announce", "23#10.0.0.0/24#::1#NAT"},
			`invalid --announce "23#10.0.0.0/24#::1#NAT": a NAT nexthop needs a port range`},
		{"announce host bits", []string{"client", "--server", "[::1]:4711", "--announce", "23#10.0.0.1/24#::1"},
			`invalid --announce "23#10.0.0.1/24#::1": prefix 10.0.0.1/24 has host bits set`},
		{"announce IPv4 nexthop", []string{"client", "--server", "[::1]:4711", "--announce", "23#10.0.90.0/24#10.1.1.1"},
			`invalid --announce "23#10.0.90.0/24#10.1.1.1": nexthop 10.1.1.1 is an IPv4 address; the underlay is IPv6`},
		{"announce IPv4-mapped nexthop", []string{"client", "--server", "[::1]:4711", "--announce", "23#10.0.90.0/24#::ffff:10.1.1.1"},
			`invalid --announce "23#10.0.90.0/24#::ffff:10.1.1.1": nexthop ::ffff:10.1.1.1 is an IPv4-mapped address; the underlay is IPv6`},
		{"announce VNI too big", []string{"client", "--server", "[::1]:4711", "--announce", "16777216#10.0.0.0/24#::1"},
			`invalid --announce "16777216#10.0.0.0/24#::1": invalid VNI "16777216"`},
		{"bad subscribe", []string{"client", "--server", "[::1]:4711", "--subscribe", "abc"},
			`invalid --subscribe "abc": want a VNI from 0 to 16777215`},
		{"subscribe too big", []string{"client", "--server", "[::1]:4711", "--subscribe", "16777216"},
			`invalid --subscribe "16777216"`},
		{"bad install-routes", []string{"client", "--server", "[::1]:4711", "--subscribe", "23", "--tun", "t0", "--install-routes", "23"},
			`invalid --install-routes "23": want VNI#TABLE`},
		{"install-routes bad table", []string{"client", "--server", "[::1]:4711", "--subscribe", "23", "--tun", "t0", "--install-routes", "23#main"},
			`invalid --install-routes "23#main": invalid table "main"`},
		{"install-routes not subscribed", []string{"client", "--server", "[::1]:4711", "--subscribe", "23", "--tun", "t0", "--install-routes", "24#100"},
			`invalid --install-routes "24#100": VNI 24 is not subscribed`},
		{"install-routes two tables", []string{"client", "--server", "[::1]:4711", "--subscribe", "23", "--tun", "t0", "--install-routes", "23#100", "--install-routes", "23#101"},
			`invalid --install-routes "23#101": VNI 23 is already mapped to table 100`},
		{"install-routes without tun", []string{"client", "--server", "[::1]:4711", "--subscribe", "23", "--install-routes", "23#100"},
			`--install-routes needs --tun`},
		{"missing server", []string{"client", "--subscribe", "23"}, `missing --server`},
		{"server without port", []string{"client", "--server", "2001:db8::1"}, `invalid --server "2001:db8::1"`},
		{"server bad port", []string{"client", "--server", "[::1]:http"}, `invalid --server "[::1]:http": invalid port "http"`},
		{"server port 0", []string{"client", "--server", "[::1]:0"}, `invalid --server "[::1]:0"`},
		{"server bad ip", []string{"client", "--server", "[::g]:4711"}, `invalid --server "[::g]:4711": invalid IP address "::g"`},
		{"server bad host", []string{"client", "--server", "a b:4711"}, `invalid --server "a b:4711": invalid host name "a b"`},
		{"server missing host", []string{"client", "--server", ":4711"}, `invalid --server ":4711": missing host`},
		{"bad client keepalive", []string{"client", "--server", "[::1]:4711", "--keepalive", "x"}, `invalid --keepalive "x"`},
		{"keepalive zero", []string{"server", "--keepalive", "0"}, `invalid --keepalive "0": must be at least 1 second`},
		{"keepalive overflow", []string{"server", "--keepalive", "2000000000"}, `invalid --keepalive "2000000000": must be at most 3600 seconds`},
		{"negative limit", []string{"server", "--max-routes-per-vni", "-5"}, `invalid --max-routes-per-vni "-5": must not be negative`},
		{"bad graceful restart", []string{"server", "--graceful-restart", "soon"}, `invalid --graceful-restart "soon"`},
		{"bad sync delay", []string{"server", "--sync-delay", "-1s"}, `invalid --sync-delay "-1s"`},
		{"long name", []string{"client", "--server", "[::1]:4711", "--name", strings.Repeat("x", 256)}, `invalid --name`},
		{"keepalive fraction", []string{"server", "--keepalive", "1500ms"}, `invalid --keepalive "1500ms": must be whole seconds`},
		{"keepalive negative", []string{"server", "--keepalive", "-1"}, `invalid --keepalive "-1"`},
		{"bad grace period", []string{"client", "--server", "[::1]:4711", "--grace-period", "soon"}, `invalid --grace-period "soon"`},
		{"bad listen", []string{"server", "--listen", "4711"}, `invalid --listen "4711"`},
		{"bad listen ip", []string{"server", "--listen", "[::1::2]:4711"}, `invalid --listen "[::1::2]:4711": invalid IP address`},
		{"bad http", []string{"server", "--http", "localhost"}, `invalid --http "localhost"`},
		{"bad client http", []string{"client", "--server", "[::1]:4711", "--http", "[::1]"}, `invalid --http "[::1]"`},
		{"bad log format", []string{"server", "--log-format", "xml"}, `invalid --log-format "xml": want text or json`},
		{"bad tun", []string{"client", "--server", "[::1]:4711", "--tun", "a/b"}, `invalid --tun "a/b"`},
		{"tun without install-routes", []string{"client", "--server", "[::1]:4711", "--subscribe", "23", "--tun", "t0"},
			`--tun needs --install-routes VNI#TABLE`},
		{"no command", []string{}, `missing command: want server, client, peers, routes or version`},
		{"unknown flag", []string{"server", "--bogus"}, `unknown flag: --bogus`},
		{"unknown command", []string{"serve"}, `unknown command "serve"`},
		{"positional argument", []string{"server", "extra"}, `unknown command "extra"`},
		{"missing flag value", []string{"client", "--server"}, `flag needs an argument: --server`},
		{"bad query vni", []string{"routes", "--vni", "x"}, `invalid --vni "x"`},
		{"bad query output", []string{"peers", "-o", "xml"}, `invalid --output "xml"`},
		{"bad query address", []string{"peers", "--http", "nowhere"}, `invalid --http "nowhere"`},
		{"missing config file", []string{"server", "--config", "/nonexistent/metalbond.yaml"}, `--config: open /nonexistent/metalbond.yaml`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr, c := run(t, tt.args...)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, exitUsage, stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr does not contain %q:\n%s", tt.want, stderr)
			}
			if !strings.HasPrefix(stderr, "metalbond: ") {
				t.Errorf("stderr does not start with \"metalbond: \":\n%s", stderr)
			}
			if c.server != nil || c.client != nil {
				t.Errorf("the command ran despite the error")
			}
		})
	}
}

func TestServerConfig(t *testing.T) {
	unlimitedRoutes := metalbond.DefaultLimits
	unlimitedRoutes.MaxRoutesPerPeer = metalbond.Unlimited
	tests := []struct {
		name string
		args []string
		want serverConfig
	}{
		{"defaults", []string{"server"},
			serverConfig{Listen: "[::]:4711", Keepalive: 5 * time.Second, GracefulRestart: time.Minute, SyncDelay: 10 * time.Second, Limits: metalbond.DefaultLimits, Log: logConfig{Level: slog.LevelInfo}}},
		{"all flags", []string{"server", "--listen", "[::1]:4000", "--http", "[::1]:4712", "--keepalive", "10", "-v", "--log-format", "json"},
			serverConfig{Listen: "[::1]:4000", HTTP: "[::1]:4712", Keepalive: 10 * time.Second, GracefulRestart: time.Minute, SyncDelay: 10 * time.Second, Limits: metalbond.DefaultLimits, Log: logConfig{Level: slog.LevelDebug, JSON: true}}},
		{"keepalive duration", []string{"server", "--keepalive", "1m", "--listen", ":4711"},
			serverConfig{Listen: ":4711", Keepalive: time.Minute, GracefulRestart: time.Minute, SyncDelay: 10 * time.Second, Limits: metalbond.DefaultLimits, Log: logConfig{Level: slog.LevelInfo}}},
		{"limit 0 is unlimited", []string{"server", "--max-routes-per-peer", "0"},
			serverConfig{Listen: "[::]:4711", Keepalive: 5 * time.Second, GracefulRestart: time.Minute, SyncDelay: 10 * time.Second, Limits: unlimitedRoutes, Log: logConfig{Level: slog.LevelInfo}}},
		{"no pacing", []string{"server", "--no-pace-v1"},
			serverConfig{Listen: "[::]:4711", Keepalive: 5 * time.Second, GracefulRestart: time.Minute, SyncDelay: 10 * time.Second, Limits: metalbond.DefaultLimits, NoPaceV1: true, Log: logConfig{Level: slog.LevelInfo}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr, c := run(t, tt.args...)
			if code != exitOK || c.server == nil {
				t.Fatalf("exit code %d, stderr:\n%s", code, stderr)
			}
			if !reflect.DeepEqual(*c.server, tt.want) {
				t.Errorf("config\n got %+v\nwant %+v", *c.server, tt.want)
			}
		})
	}
}

func TestClientConfig(t *testing.T) {
	code, _, stderr, c := run(t, "client",
		"--server", "[::1]:4711", "--server", "[2001:db8::10]:4711,rs1.example.net:4711",
		"--subscribe", "23", "--subscribe", "24,23",
		"--announce", "23#10.0.23.0/24#2001:db8::1",
		"--announce", "23#10.0.24.0/24#2001:db8::2#NAT#1024#2047,24#2001:db8:5::/64#2001:db8::3#LB",
		"--install-routes", "23#100", "--install-routes", "24#101",
		"--tun", "overlay-tun", "--ipv4-only", "--keepalive", "3", "--grace-period", "30s",
		"--graceful-restart", "0", "--name", "hv-17",
		"--http", "[::1]:4713", "--cleanup", "--no-pace-v1", "--verbose")
	if code != exitOK || c.client == nil {
		t.Fatalf("exit code %d, stderr:\n%s", code, stderr)
	}
	want := clientConfig{
		Servers:   []string{"[::1]:4711", "[2001:db8::10]:4711", "rs1.example.net:4711"},
		Subscribe: []route.VNI{23, 24},
		Announce: []route.Route{
			{VNI: 23, Prefix: netip.MustParsePrefix("10.0.23.0/24"), NextHop: route.NextHop{Address: netip.MustParseAddr("2001:db8::1")}},
			{VNI: 23, Prefix: netip.MustParsePrefix("10.0.24.0/24"), NextHop: route.NextHop{
				Address: netip.MustParseAddr("2001:db8::2"), Type: route.NextHopNAT, NATPortFrom: 1024, NATPortTo: 2047}},
			{VNI: 24, Prefix: netip.MustParsePrefix("2001:db8:5::/64"), NextHop: route.NextHop{
				Address: netip.MustParseAddr("2001:db8::3"), Type: route.NextHopLoadBalancerTarget}},
		},
		InstallRoutes:   []route.TableMapping{{VNI: 23, Table: 100}, {VNI: 24, Table: 101}},
		Tun:             "overlay-tun",
		IPv4Only:        true,
		Keepalive:       3 * time.Second,
		GracePeriod:     30 * time.Second,
		GracefulRestart: metalbond.GracefulRestartOff,
		Name:            "hv-17",
		AdoptGrace:      time.Minute,
		HTTP:            "[::1]:4713",
		Cleanup:         true,
		NoPaceV1:        true,
		Log:             logConfig{Level: slog.LevelDebug},
	}
	if !reflect.DeepEqual(*c.client, want) {
		t.Errorf("config\n got %+v\nwant %+v", *c.client, want)
	}
}

// TestZeroMeansOff: on the command line 0 turns graceful restart, the sync
// delay and adoption off; in the library configuration 0 means the
// default, so the command maps 0 to the library's named "off" values.
func TestZeroMeansOff(t *testing.T) {
	code, _, stderr, c := run(t, "client", "--server", "[::1]:4711", "--subscribe", "23",
		"--install-routes", "23#100", "--tun", "t0", "--graceful-restart", "0", "--adopt-grace", "0")
	if code != exitOK {
		t.Fatalf("exit code %d, stderr:\n%s", code, stderr)
	}
	if c.client.GracefulRestart != metalbond.GracefulRestartOff || c.client.AdoptGrace != kernel.AdoptOff {
		t.Errorf("client: GracefulRestart %v, AdoptGrace %v; want GracefulRestartOff and AdoptOff",
			c.client.GracefulRestart, c.client.AdoptGrace)
	}
	code, _, stderr, c = run(t, "server", "--graceful-restart", "0", "--sync-delay", "0")
	if code != exitOK {
		t.Fatalf("exit code %d, stderr:\n%s", code, stderr)
	}
	if c.server.GracefulRestart != metalbond.GracefulRestartOff || c.server.SyncDelay != metalbond.NoSyncDelay {
		t.Errorf("server: GracefulRestart %v, SyncDelay %v; want GracefulRestartOff and NoSyncDelay",
			c.server.GracefulRestart, c.server.SyncDelay)
	}
	// The library's "off" values are negative: 0 would be the default.
	for name, d := range map[string]time.Duration{"GracefulRestartOff": metalbond.GracefulRestartOff,
		"NoSyncDelay": metalbond.NoSyncDelay, "AdoptOff": kernel.AdoptOff} {
		if d >= 0 {
			t.Errorf("%s = %v, want negative", name, d)
		}
	}
}

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	client := write("client.yaml", `
# A client as a systemd unit would run it.
server:
  - "[::1]:4711"
  - "[::1]:4712"
subscribe: [23, 24]
announce: 23#10.0.23.0/24#2001:db8::1
install-routes: ["23#100"]
tun: overlay-tun
ipv4-only: true
keepalive: 7
grace-period: 1m
http: "[::1]:4713"
cleanup: true
verbose: true
log-format: json
`)
	t.Run("client file", func(t *testing.T) {
		code, _, stderr, c := run(t, "client", "--config", client)
		if code != exitOK {
			t.Fatalf("exit code %d, stderr:\n%s", code, stderr)
		}
		got := c.client
		if !reflect.DeepEqual(got.Servers, []string{"[::1]:4711", "[::1]:4712"}) ||
			!reflect.DeepEqual(got.Subscribe, []route.VNI{23, 24}) || len(got.Announce) != 1 ||
			!reflect.DeepEqual(got.InstallRoutes, []route.TableMapping{{VNI: 23, Table: 100}}) ||
			got.Tun != "overlay-tun" || !got.IPv4Only || got.Keepalive != 7*time.Second ||
			got.GracePeriod != time.Minute || got.HTTP != "[::1]:4713" || !got.Cleanup ||
			got.Log != (logConfig{Level: slog.LevelDebug, JSON: true}) {
			t.Errorf("config from file: %+v", got)
		}
	})
	t.Run("flags override file", func(t *testing.T) {
		code, _, stderr, c := run(t, "client", "--config", client, "--server", "[::1]:5000", "--keepalive", "2", "--log-format", "text")
		if code != exitOK {
			t.Fatalf("exit code %d, stderr:\n%s", code, stderr)
		}
		got := c.client
		if !reflect.DeepEqual(got.Servers, []string{"[::1]:5000"}) || got.Keepalive != 2*time.Second || got.Log.JSON {
			t.Errorf("flags did not override: %+v", got)
		}
		if got.Tun != "overlay-tun" || !reflect.DeepEqual(got.Subscribe, []route.VNI{23, 24}) {
			t.Errorf("file settings lost: %+v", got)
		}
	})
	t.Run("server file", func(t *testing.T) {
		p := write("server.yaml", "listen: \"[::1]:4000\"\nhttp: \"[::1]:4001\"\nkeepalive: 3s\n")
		code, _, stderr, c := run(t, "server", "--config", p)
		if code != exitOK {
			t.Fatalf("exit code %d, stderr:\n%s", code, stderr)
		}
		want := serverConfig{Listen: "[::1]:4000", HTTP: "[::1]:4001", Keepalive: 3 * time.Second, GracefulRestart: time.Minute, SyncDelay: 10 * time.Second, Limits: metalbond.DefaultLimits, Log: logConfig{Level: slog.LevelInfo}}
		if *c.server != want {
			t.Errorf("config %+v, want %+v", *c.server, want)
		}
	})
	errorCases := []struct {
		name, cmd, content, want string
	}{
		{"unknown keys", "server", "listen: \"[::1]:1\"\nlisten_addr: x\nbogus: 1\n",
			`unknown keys "listen_addr" (line 2), "bogus" (line 3)`},
		{"client key in server file", "server", "subscribe: [23]\n", `unknown keys "subscribe" (line 1)`},
		{"config in config", "server", "config: other.yaml\n", `unknown keys "config" (line 1)`},
		{"list for single value", "server", "listen: [a, b]\n", `line 1: listen takes a single value, not a list`},
		{"invalid value", "client", "server: \"[::1]:4711\"\nannounce: [\"23#x#y\"]\n", `invalid --announce "23#x#y"`},
		{"not a mapping", "server", "- listen\n", `want a mapping of flag names to values`},
		{"bad yaml", "server", "listen: [\n", `server.yaml`},
		{"bad bool", "client", "server: \"[::1]:4711\"\ncleanup: maybe\n", `cleanup`},
	}
	for _, tt := range errorCases {
		t.Run(tt.name, func(t *testing.T) {
			p := write(tt.cmd+".yaml", tt.content)
			code, _, stderr, _ := run(t, tt.cmd, "--config", p)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, exitUsage, stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr does not contain %q:\n%s", tt.want, stderr)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}} {
		code, out, _, _ := run(t, args...)
		if code != exitOK || !strings.HasPrefix(out, "metalbond "+versionString()) {
			t.Errorf("%v: exit code %d, output %q", args, code, out)
		}
	}
	old := version
	version = "v9.8.7"
	defer func() { version = old }()
	if got := versionString(); got != "v9.8.7" {
		t.Errorf("versionString() = %q with -X main.version=v9.8.7", got)
	}
}

func TestHelp(t *testing.T) {
	code, out, _, _ := run(t, "client", "--help")
	if code != exitOK {
		t.Fatalf("exit code %d", code)
	}
	for _, flag := range []string{"--server", "--subscribe", "--announce", "--install-routes", "--tun", "--ipv4-only",
		"--keepalive", "--http", "--cleanup", "--verbose", "--log-format", "--grace-period", "--config"} {
		if !strings.Contains(out, flag) {
			t.Errorf("client --help does not explain %s", flag)
		}
	}
	if !strings.Contains(out, "TABLE 254 (or 0) is the main table") {
		t.Error("client --help does not say what installing into the main table means")
	}
}

func TestRuntimeErrorExitsOne(t *testing.T) {
	var errb bytes.Buffer
	// Listening on an address that is not ours fails at run time.
	code := execute(context.Background(), []string{"server", "--listen", "192.0.2.1:4711"}, io.Discard, &errb, defaultRunners)
	if code != exitRuntime {
		t.Errorf("exit code %d, want %d; stderr:\n%s", code, exitRuntime, errb.String())
	}
	if !strings.Contains(errb.String(), "metalbond: listen tcp 192.0.2.1:4711") {
		t.Errorf("stderr: %s", errb.String())
	}
}

// Deployed units and DaemonSets install into the main table with VNI#0.
func TestInstallRoutesTableZeroIsMain(t *testing.T) {
	code, _, stderr, c := run(t, "client", "--server", "[::1]:4711", "--subscribe", "23",
		"--tun", "overlay-tun", "--install-routes", "23#0")
	if code != exitOK || c.client == nil {
		t.Fatalf("exit code %d, stderr:\n%s", code, stderr)
	}
	if want := []route.TableMapping{{VNI: 23, Table: route.TableMain}}; !reflect.DeepEqual(c.client.InstallRoutes, want) {
		t.Errorf("InstallRoutes = %v, want %v", c.client.InstallRoutes, want)
	}
}
