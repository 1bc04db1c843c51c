package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// hostImageBinary is where the metalbond-host image holds the binary that
// the deployed DaemonSets run.
const hostImageBinary = "/usr/sbin/metalbond"

// TestClientDaemonSetRunsAsDeployed runs the client DaemonSet's container
// command (bash, bringing up the tunnel device, then the client) with its
// environment in a network namespace made for the test, as root like the
// pod: it must become ready against two route servers there, answer its
// probes, install a route another client announces into the table the
// manifest names, and keep that route when stopped as the preStop hook
// stops it (SIGUSR1, for a restart).
func TestClientDaemonSetRunsAsDeployed(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI runs as root: the DaemonSet test needs a network namespace")
		}
		t.Skip("needs root for a network namespace")
	}
	bin := metalbondBinary(t)
	objs := renderDir(t, filepath.Join(manifestsDir, "client"))
	ds := find[appsv1.DaemonSet](t, objs, "metalbond-client")
	spec := &ds.Spec.Template.Spec
	c := spec.Containers[0]
	checkHostClientPod(t, spec, c)
	script := clientScript(t, c, bin)
	env := clientEnv(t, c)

	ns := newNetns(t)
	// This kernel has no ip6tnl module: a veth pair, down, stands in for
	// the tunnel device (it takes the same encapsulated routes), so the
	// script finds the device and only brings it up.
	ipOutput(t, "-n", ns, "link", "add", env["TUN"], "type", "veth", "peer", "name", "tun-peer")
	ipOutput(t, "-n", ns, "link", "set", "tun-peer", "up")
	var servers []string
	for i := range 2 {
		addr := fmt.Sprintf("127.0.0.1:%d", 4711+10*i)
		servers = append(servers, addr)
		srv := start(t, "server "+addr, netnsCommand(ns, bin, "server", "--listen="+addr, fmt.Sprintf("--http=127.0.0.1:%d", 4712+10*i)))
		srv.waitStatus(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", 4712+10*i), 200, netnsGet(ns))
	}
	env["METALBOND_SERVERS"] = strings.Join(servers, ",")
	vni, table := installMapping(t, env)
	prefix := "10.99.0.0/24"
	announcer := start(t, "announcer", netnsCommand(ns, bin, "client", "--server="+servers[0],
		fmt.Sprintf("--announce=%s#%s#2001:db8::99", vni, prefix), "--http=127.0.0.1:4790"))
	announcer.waitStatus(t, "http://127.0.0.1:4790/readyz", 200, netnsGet(ns))

	cmd := netnsCommand(ns, "/bin/bash", "-c", script)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cli := start(t, "DaemonSet client", cmd)
	for _, p := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
		if p == nil {
			continue
		}
		h := p.HTTPGet
		if h == nil || h.Host != "127.0.0.1" || h.Port.IntValue() == 0 {
			t.Fatalf("probe %+v: want an HTTP GET of 127.0.0.1 and a port number (the pod is on the host network)", p.ProbeHandler)
		}
		cli.waitStatus(t, fmt.Sprintf("http://127.0.0.1:%d%s", h.Port.IntValue(), h.Path), 200, netnsGet(ns))
	}
	if out := ipOutput(t, "-n", ns, "link", "show", "dev", env["TUN"]); !strings.Contains(out, ",UP") {
		t.Fatalf("the script did not bring up %s:\n%s", env["TUN"], out)
	}
	waitRoute(t, cli, ns, table, prefix)
	// The client and kernel metrics the alerts use are exported.
	_, body, err := netnsGetBody(ns, "http://127.0.0.1:4713/metrics")
	if err != nil {
		t.Fatal(err)
	}
	checkAlertMetrics(t, metricNames(body), "metalbond_client_", "metalbond_kernel_")

	if pre := c.Lifecycle.PreStop; pre == nil || pre.Exec == nil || !slices.Equal(pre.Exec.Command, []string{"/bin/bash", "-c", "kill -USR1 1"}) {
		t.Fatalf("preStop %+v: want SIGUSR1 to PID 1, the client that bash became", c.Lifecycle)
	}
	// The pod's PID 1 is this process: ip netns exec and bash exec'd into
	// the client.
	cli.stop(t, syscall.SIGUSR1)
	if out := ipOutput(t, "-n", ns, "route", "show", "table", table, prefix); out == "" {
		t.Fatal("the route was removed from the kernel by a stop for a restart")
	}
}

// checkHostClientPod checks the DaemonSet's pod: the host network, and
// NET_ADMIN as the only capability.
func checkHostClientPod(t *testing.T, spec *corev1.PodSpec, c corev1.Container) {
	t.Helper()
	if !spec.HostNetwork {
		t.Error("the client installs routes on the host: it needs hostNetwork")
	}
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN"}) ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Error("the client container must drop ALL capabilities and add NET_ADMIN only")
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || (sc.Privileged != nil && *sc.Privileged) {
		t.Error("the client container must not be privileged, escalate privileges or write its root file system")
	}
}

// clientScript returns the bash script of the container's command, as
// deployed DaemonSets run it, with the image's binary replaced by bin.
func clientScript(t *testing.T, c corev1.Container, bin string) string {
	t.Helper()
	if len(c.Command) != 3 || c.Command[0] != "/bin/bash" || c.Command[1] != "-c" || len(c.Args) != 0 {
		t.Fatalf("command %q args %q: want /bin/bash -c SCRIPT", c.Command, c.Args)
	}
	script := c.Command[2]
	if strings.Count(script, "exec "+hostImageBinary+" client ") != 1 {
		t.Fatalf("the script must end in exec %s client ...:\n%s", hostImageBinary, script)
	}
	return strings.Replace(script, hostImageBinary, bin, 1)
}

// clientEnv returns the container's environment as the kubelet sets it,
// with the node's name "test-node".
func clientEnv(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
			env[e.Name] = "test-node"
		default:
			t.Fatalf("env %s: the test knows only values and spec.nodeName", e.Name)
		}
	}
	for _, name := range []string{"METALBOND_SERVERS", "INSTALL_ROUTES", "TUN"} {
		if env[name] == "" {
			t.Fatalf("no env %s", name)
		}
	}
	return env
}

// installMapping returns the first VNI#TABLE of INSTALL_ROUTES.
func installMapping(t *testing.T, env map[string]string) (vni, table string) {
	t.Helper()
	first, _, _ := strings.Cut(env["INSTALL_ROUTES"], ",")
	vni, table, ok := strings.Cut(first, "#")
	if !ok {
		t.Fatalf("INSTALL_ROUTES %q: want VNI#TABLE", env["INSTALL_ROUTES"])
	}
	return vni, table
}

// newNetns makes a network namespace with loopback up, deleted at the end.
func newNetns(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("ip (iproute2) not found")
	}
	ns := "mbdeploy" + strconv.Itoa(os.Getpid())
	ipOutput(t, "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v %s", ns, err, out)
		}
	})
	ipOutput(t, "-n", ns, "link", "set", "lo", "up")
	return ns
}

func netnsCommand(ns string, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// netnsGet returns a getter that GETs a URL inside ns.
func netnsGet(ns string) func(string) (int, error) {
	return func(url string) (int, error) {
		code, _, err := netnsGetBody(ns, url)
		return code, err
	}
}

// netnsGetBody GETs url inside ns: it runs this test binary there in its
// DEPLOY_TEST_GET mode (TestMain).
func netnsGetBody(ns, url string) (int, []byte, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, nil, err
	}
	cmd := netnsCommand(ns, self)
	cmd.Env = append(os.Environ(), "DEPLOY_TEST_GET="+url)
	out, err := cmd.Output()
	if err != nil {
		return 0, nil, fmt.Errorf("GET %s in %s: %v", url, ns, err)
	}
	status, body, _ := strings.Cut(string(out), "\n")
	code, err := strconv.Atoi(status)
	return code, []byte(body), err
}

func ipOutput(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// waitRoute waits until prefix is in the kernel table of ns, while p runs.
func waitRoute(t *testing.T, p *process, ns, table, prefix string) {
	t.Helper()
	p.waitStatus(t, "route "+prefix+" in table "+table, 200, func(string) (int, error) {
		if ipOutput(t, "-n", ns, "route", "show", "table", table, prefix) == "" {
			return 0, nil
		}
		return 200, nil
	})
}
