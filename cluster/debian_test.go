package cluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/metalbond/metalbond/internal/testport"
	"github.com/metalbond/metalbond/route"
)

// etcdCluster is a three-member etcd cluster of separate etcd processes,
// run by scripts/etcd-cluster.sh.
type etcdCluster struct {
	t   testing.TB
	dir string
}

// startEtcdCluster starts the cluster, or skips the test if there is no
// etcd binary (outside CI, where that is a failure).
func startEtcdCluster(t testing.TB) (*etcdCluster, []string) {
	t.Helper()
	bin := os.Getenv("ETCD")
	if bin == "" {
		bin = "etcd"
	}
	if _, err := exec.LookPath(bin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found: CI must install Debian's etcd-server package", bin)
		}
		t.Skipf("%s not found: install it (Debian: apt-get install etcd-server) to run the three-member cluster test", bin)
	}
	if out, err := exec.Command(bin, "--version").Output(); err == nil {
		t.Logf("%s", strings.SplitN(string(out), "\n", 2)[0])
	}
	c := &etcdCluster{t: t, dir: t.TempDir()}
	out := c.run("start", c.dir, strconv.Itoa(testport.Range(t, "127.0.0.1", 6)))
	t.Cleanup(func() { c.run("stop", c.dir) })
	return c, strings.Split(strings.TrimSpace(out), ",")
}

func (c *etcdCluster) run(args ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join("..", "scripts", "etcd-cluster.sh")}, args...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		c.t.Fatalf("etcd-cluster.sh %v: %v", args, err)
	}
	return string(out)
}

func (c *etcdCluster) kill(member int) { c.run("kill", c.dir, strconv.Itoa(member)) }

// leader returns the number (1-3) of the member that leads the cluster.
func leader(t testing.TB, endpoints []string) int {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i, ep := range endpoints {
		st, err := cli.Status(ctx, ep)
		if err != nil {
			t.Fatal(err)
		}
		if st.Header.MemberId == st.Leader {
			return i + 1
		}
	}
	t.Fatal("no leader")
	return 0
}
func (c *etcdCluster) restart(member int) { c.run("restart", c.dir, strconv.Itoa(member)) }

// TestDebianEtcdCluster runs three route servers on a three-member
// cluster of the etcd that Debian ships (3.4), with clients spread across
// them: the tables are exact at first, after a route server crashes, after
// an etcd member is killed (with changes made meanwhile), and after both
// come back.
func TestDebianEtcdCluster(t *testing.T) {
	etcd, endpoints := startEtcdCluster(t)
	cfg := func(id string) Config {
		return Config{Endpoints: endpoints, ServerID: id, LeaseTTL: testTTL, DialTimeout: time.Second}
	}
	s := []*node{startNode(t, "", cfg("s0")), startNode(t, "", cfg("s1")), startNode(t, "", cfg("s2"))}
	waitReady(t, 15*time.Second, true, s...)
	c := []*client{
		startClient(t, "c0", []string{s[0].addr, s[1].addr}, []route.VNI{10, 20}, routes(10, 0, 30)),
		startClient(t, "c1", []string{s[1].addr, s[2].addr}, []route.VNI{10}, append(routes(10, 1, 20), routes(20, 1, 20)...)),
		startClient(t, "c2", []string{s[2].addr, s[0].addr}, []route.VNI{20}, routes(20, 2, 30)),
		startClient(t, "c3", []string{s[1].addr}, []route.VNI{10, 20}, routes(10, 3, 25)), // only on s1
		startClient(t, "c4", []string{s[0].addr}, []route.VNI{10, 20}, nil),
		startClient(t, "c5", []string{s[2].addr}, []route.VNI{10, 20}, routes(20, 5, 10)),
	}
	d := waitTables(t, 15*time.Second, c, c)
	t.Logf("initial convergence: %v", d)

	// A route server crashes.
	start := time.Now()
	s[1].crash()
	live := []*client{c[0], c[1], c[2], c[4], c[5]}
	waitTables(t, testTTL+5*time.Second, live, live)
	t.Logf("convergence after a route server crash (lease TTL %v): %v", testTTL, time.Since(start))

	// The leading etcd member is killed; the others elect a new leader
	// and the route servers carry on through them.
	dead := leader(t, endpoints)
	etcd.kill(dead)
	c[0].withdraw(t, routes(10, 0, 10)...)
	c[5].announce(t, routes(10, 5, 10)...)
	d = waitTables(t, 15*time.Second, live, live)
	t.Logf("convergence after changes with etcd member %d (the leader) dead: %v", dead, d)
	waitReady(t, 15*time.Second, true, s[0], s[2])

	// Both come back.
	etcd.restart(dead)
	s[1] = startNode(t, s[1].addr, cfg("s1"))
	waitReady(t, 15*time.Second, true, s...)
	d = waitTables(t, 15*time.Second, c, c)
	t.Logf("convergence after restoring both: %v", d)

	// And the cluster still follows changes.
	c[3].announce(t, routes(20, 3, 5)...)
	c[1].withdraw(t, routes(20, 1, 20)...)
	waitTables(t, 10*time.Second, c, c)
}
