package deploy

import (
	"crypto/tls"
	"maps"
	"net"
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
	"k8s.io/apimachinery/pkg/util/intstr"
)

// imageBinary is where both images hold the binary (/usr/bin/metalbond).
const imageBinary = "/usr/bin/metalbond"

// fixtures stand in for what the cluster provides: Secrets the manifests
// refer to but do not create, and the etcd cluster's client URLs.
type fixtures struct {
	secrets map[string]map[string][]byte
	etcd    []string
}

// commandLine is a container's command line rewritten to run here: the
// binary built from the repository, its listening addresses on free
// loopback ports, files of mounted volumes in temporary directories.
type commandLine struct {
	args  []string
	addrs map[int32]string // container port -> loopback address it listens on
}

// localCommandLine rewrites the command line of container c of pod spec.
// Every --flag=value that names a listening address must use a declared
// container port; every path under a volume mount gets the volume's
// content (a ConfigMap of objs or a Secret of fx).
func localCommandLine(t *testing.T, bin string, objs []object, spec *corev1.PodSpec, c corev1.Container, fx fixtures) commandLine {
	t.Helper()
	if !slices.Equal(c.Command, []string{imageBinary}) {
		t.Fatalf("container %s: command %q, want [%s]", c.Name, c.Command, imageBinary)
	}
	mounts := volumeDirs(t, objs, spec, c, fx)
	cl := commandLine{args: []string{bin}, addrs: map[int32]string{}}
	for _, a := range c.Args {
		name, value, ok := strings.Cut(a, "=")
		if !strings.HasPrefix(a, "--") || !ok {
			cl.args = append(cl.args, a)
			continue
		}
		switch name {
		case "--listen", "--http", "--plain-listen":
			_, port, err := net.SplitHostPort(value)
			if err != nil {
				t.Fatalf("%s: %v", a, err)
			}
			n, _ := strconv.Atoi(port)
			if _, ok := containerPort(c, intOrString(int32(n))); !ok {
				t.Fatalf("%s: port %s is not a containerPort of %s", a, port, c.Name)
			}
			cl.addrs[int32(n)] = freeAddr(t)
			value = cl.addrs[int32(n)]
		case "--etcd":
			if len(fx.etcd) == 0 {
				t.Fatalf("%s: no etcd cluster for this test", a)
			}
			n := len(strings.Split(value, ","))
			value = strings.Join(fx.etcd[:min(n, len(fx.etcd))], ",")
		default:
			for mount, dir := range mounts {
				if rest, ok := strings.CutPrefix(value, mount+"/"); ok {
					value = filepath.Join(dir, rest)
				}
			}
		}
		cl.args = append(cl.args, name+"="+value)
	}
	return cl
}

// volumeDirs writes the content of every volume mounted in c to a
// temporary directory and returns the directories by mount path.
func volumeDirs(t *testing.T, objs []object, spec *corev1.PodSpec, c corev1.Container, fx fixtures) map[string]string {
	t.Helper()
	dirs := map[string]string{}
	for _, m := range c.VolumeMounts {
		i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 {
			t.Fatalf("volume mount %s: no volume %s", m.MountPath, m.Name)
		}
		v := spec.Volumes[i]
		files := map[string][]byte{}
		switch {
		case v.Secret != nil:
			s, ok := fx.secrets[v.Secret.SecretName]
			if !ok {
				t.Fatalf("volume %s: Secret %s unknown to the test", v.Name, v.Secret.SecretName)
			}
			files = s
		case v.ConfigMap != nil:
			cm := find[corev1.ConfigMap](t, objs, v.ConfigMap.Name)
			for k, s := range cm.Data {
				files[k] = []byte(s)
			}
		default:
			t.Fatalf("volume %s: only Secrets and ConfigMaps are known to the test", v.Name)
		}
		dir := t.TempDir()
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		dirs[m.MountPath] = dir
	}
	return dirs
}

// TestServerRunsAsDeployed runs the route server of every kustomization
// with the command line of its Deployment (addresses moved to loopback,
// mounted files to temporary directories, the etcd cluster to one started
// here), GETs every probe of the container on the port it names, connects
// the project's own client to the MetalBond port (with TLS and the example
// authorization file where the manifests configure them), and stops the
// server as the kubelet does (SIGTERM, exit status 0).
func TestServerRunsAsDeployed(t *testing.T) {
	bin := metalbondBinary(t)
	pki := newTestPKI(t)
	fx := fixtures{secrets: map[string]map[string][]byte{"metalbond-tls": pki.secret()}}
	if slices.ContainsFunc(serverDirs, func(dir string) bool { return serverArg(t, dir, "--etcd=") }) {
		fx.etcd = startEtcd(t.Context(), t) // nil where there is no etcd
	}
	exported := map[string]bool{} // metric names on the servers' /metrics
	for _, dir := range serverDirs {
		t.Run(dir, func(t *testing.T) {
			objs := renderDir(t, dir)
			d := find[appsv1.Deployment](t, objs, "metalbond-server")
			spec := &d.Spec.Template.Spec
			c := spec.Containers[0]
			if hasArg(c.Args, "--etcd=") && fx.etcd == nil {
				t.Skip("etcd not found: install it (Debian: apt-get install etcd-server)")
			}
			cl := localCommandLine(t, bin, objs, spec, c, fx)
			srv := start(t, "server", exec.Command(cl.args[0], cl.args[1:]...))
			for _, p := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
				if p != nil {
					srv.waitStatus(t, probeURL(t, c, p, cl.addrs), 200, get)
				}
			}
			httpPort, _ := containerPort(c, intstr.FromString("http"))
			_, body, err := getBody("http://" + cl.addrs[httpPort] + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			maps.Copy(exported, metricNames(body))
			mbPort, _ := containerPort(c, intstr.FromString("metalbond"))
			listen := cl.addrs[mbPort]
			var tlsFlags []string
			if hasArg(c.Args, "--tls-cert=") {
				checkTLSHandshake(t, listen, pki.tlsConfig(t))
				tlsFlags = pki.clientFiles(t, t.TempDir())
			}
			checkClientConnects(t, bin, listen, tlsFlags)
			srv.stop(t, syscall.SIGTERM)
		})
	}
	// The server (and, with etcd, cluster) metrics the alerts use are
	// exported.
	prefixes := []string{"metalbond_"}
	if fx.etcd != nil {
		prefixes = append(prefixes, "metalbond_cluster_")
	}
	checkAlertMetrics(t, exported, prefixes...)
}

// serverArg reports whether the server Deployment of dir has an argument
// with this prefix.
func serverArg(t *testing.T, dir, prefix string) bool {
	t.Helper()
	d := find[appsv1.Deployment](t, renderDir(t, dir), "metalbond-server")
	return hasArg(d.Spec.Template.Spec.Containers[0].Args, prefix)
}

// probeURL returns the URL that probe p of container c GETs, on the
// loopback address the server listens on for that port.
func probeURL(t *testing.T, c corev1.Container, p *corev1.Probe, addrs map[int32]string) string {
	t.Helper()
	h := p.HTTPGet
	if h == nil {
		t.Fatalf("container %s: a probe is not an HTTP GET", c.Name)
	}
	if h.Host != "" || (h.Scheme != "" && h.Scheme != corev1.URISchemeHTTP) {
		t.Fatalf("container %s: probe of %s must use the pod's address over HTTP (host %q, scheme %q)", c.Name, h.Path, h.Host, h.Scheme)
	}
	port, ok := containerPort(c, h.Port)
	if !ok {
		t.Fatalf("container %s: probe of %s names port %s, which the container does not declare", c.Name, h.Path, h.Port.String())
	}
	addr, ok := addrs[port]
	if !ok {
		t.Fatalf("container %s: probe of %s goes to port %d, where the server's command line does not listen", c.Name, h.Path, port)
	}
	return "http://" + addr + h.Path
}

// checkTLSHandshake completes a TLS 1.3 handshake with the server,
// verifying its certificate and presenting a client certificate.
func checkTLSHandshake(t *testing.T, addr string, cfg *tls.Config) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	conn.Close()
}

// checkClientConnects runs the project's client against the server until
// it is ready (a session is established), then stops it.
func checkClientConnects(t *testing.T, bin, server string, extra []string) {
	t.Helper()
	httpAddr := freeAddr(t)
	args := append([]string{"client", "--server=" + server, "--subscribe=100", "--http=" + httpAddr}, extra...)
	cli := start(t, "client", exec.Command(bin, args...))
	cli.waitStatus(t, "http://"+httpAddr+"/readyz", 200, get)
	cli.stop(t, syscall.SIGTERM)
}
