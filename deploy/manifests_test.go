package deploy

import (
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// serverDirs are the kustomizations that deploy route servers.
var serverDirs = []string{
	manifestsDir,
	filepath.Join(manifestsDir, "base"),
	filepath.Join(manifestsDir, "overlays", "etcd"),
	filepath.Join(manifestsDir, "overlays", "tls"),
	filepath.Join(manifestsDir, "overlays", "monitoring"),
	filepath.Join(manifestsDir, "overlays", "production"),
}

// TestEveryKustomizationRenders renders every kustomization in the tree and
// decodes every object strictly (render fails the test otherwise).
func TestEveryKustomizationRenders(t *testing.T) {
	dirs := kustomizations(t)
	for _, want := range append(serverDirs, filepath.Join(manifestsDir, "client")) {
		found := false
		for _, d := range dirs {
			found = found || d == want
		}
		if !found {
			t.Errorf("%s: no kustomization.yaml of kind Kustomization", want)
		}
	}
	for _, dir := range dirs {
		t.Run(dir, func(t *testing.T) {
			objs := renderDir(t, dir)
			if len(objs) == 0 {
				t.Fatal("renders no object")
			}
			t.Logf("%v", names(objs))
		})
	}
}

// TestImageTagCanBeSet sets the images' registry and tag in a
// kustomization of an operator's, as the README says, and checks that
// every container uses them.
func TestImageTagCanBeSet(t *testing.T) {
	fSys := memFS(t)
	for dir, image := range map[string]string{
		"overlays/production": "metalbond",
		"client":              "metalbond-host",
	} {
		k := "resources: [../m/" + manifestsDir + "/" + dir + "]\n" +
			"images:\n- name: " + image + "\n  newName: registry.example.net/" + image + "\n  newTag: v9.8.7\n"
		if err := fSys.WriteFile("/site/kustomization.yaml", []byte(k)); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, o := range render(t, fSys, "/site") {
			for _, c := range podSpec(o).Containers {
				n++
				if want := "registry.example.net/" + image + ":v9.8.7"; c.Image != want {
					t.Errorf("%s: container %s has image %q, want %q", dir, c.Name, c.Image, want)
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: no container", dir)
		}
	}
}

// podSpec returns the pod template's spec of a workload, or an empty spec.
func podSpec(o object) *corev1.PodSpec {
	switch v := o.obj.(type) {
	case *appsv1.Deployment:
		return &v.Spec.Template.Spec
	case *appsv1.DaemonSet:
		return &v.Spec.Template.Spec
	}
	return &corev1.PodSpec{}
}

// TestServerDeployment checks what the route servers' Deployment promises
// in every kustomization that has it: two or more replicas on different
// nodes, a disruption budget that covers them, resources, and a
// restrictive security context.
func TestServerDeployment(t *testing.T) {
	for _, dir := range serverDirs {
		t.Run(dir, func(t *testing.T) {
			objs := renderDir(t, dir)
			d := find[appsv1.Deployment](t, objs, "metalbond-server")
			if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
				t.Errorf("replicas %v, want 2 or more", d.Spec.Replicas)
			}
			pod := d.Spec.Template
			sel, err := metav1LabelSelector(d.Spec.Selector)
			if err != nil || !sel.Matches(labels.Set(pod.Labels)) {
				t.Errorf("the Deployment's selector does not match its pods (%v)", err)
			}
			checkAntiAffinity(t, pod.Spec.Affinity, pod.Labels)
			pdb := find[policyv1.PodDisruptionBudget](t, objs, "metalbond-server")
			if sel, err := metav1LabelSelector(pdb.Spec.Selector); err != nil || !sel.Matches(labels.Set(pod.Labels)) {
				t.Errorf("the PodDisruptionBudget does not select the servers (%v)", err)
			}
			if pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != intstr.FromInt32(1) {
				t.Errorf("PodDisruptionBudget maxUnavailable %v, want 1", pdb.Spec.MaxUnavailable)
			}
			checkRestricted(t, &pod.Spec)
			if len(pod.Spec.Containers) != 1 {
				t.Fatalf("%d containers, want 1", len(pod.Spec.Containers))
			}
			c := pod.Spec.Containers[0]
			for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if _, ok := c.Resources.Requests[name]; !ok {
					t.Errorf("no %s request", name)
				}
			}
			if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
				t.Error("no memory limit")
			}
			if c.LivenessProbe == nil || c.ReadinessProbe == nil {
				t.Error("the server needs a liveness and a readiness probe")
			}
			checkServices(t, objs, pod)
		})
	}
}

func checkAntiAffinity(t *testing.T, a *corev1.Affinity, podLabels map[string]string) {
	t.Helper()
	if a == nil || a.PodAntiAffinity == nil {
		t.Error("no pod anti-affinity")
		return
	}
	for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
		sel, err := metav1LabelSelector(term.LabelSelector)
		if err == nil && term.TopologyKey == corev1.LabelHostname && sel.Matches(labels.Set(podLabels)) {
			return
		}
	}
	t.Error("no required anti-affinity of the servers to each other by " + corev1.LabelHostname)
}

// checkRestricted checks the pod against the restricted Pod Security
// Standard's rules that the manifests can state: non-root, no privilege
// escalation, every capability dropped, seccomp RuntimeDefault, and a
// read-only root file system besides.
func checkRestricted(t *testing.T, spec *corev1.PodSpec) {
	t.Helper()
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Error("the pod must run as a non-root user (runAsNonRoot and a non-zero runAsUser)")
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("the pod's seccomp profile must be RuntimeDefault")
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Error("the servers need no host namespace")
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the servers need no service account token")
	}
	for _, c := range spec.Containers {
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("container %s has no securityContext", c.Name)
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("container %s: allowPrivilegeEscalation must be false", c.Name)
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			t.Errorf("container %s: readOnlyRootFilesystem must be true", c.Name)
		case sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0:
			t.Errorf("container %s: capabilities must drop ALL and add none", c.Name)
		case sc.Privileged != nil && *sc.Privileged:
			t.Errorf("container %s is privileged", c.Name)
		}
	}
}

// checkServices checks that the Services for 4711 and for HTTP select the
// servers and target ports the container declares.
func checkServices(t *testing.T, objs []object, pod corev1.PodTemplateSpec) {
	t.Helper()
	for name, want := range map[string]string{"metalbond": "metalbond", "metalbond-http": "http"} {
		s := find[corev1.Service](t, objs, name)
		if !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(pod.Labels)) || len(s.Spec.Selector) == 0 {
			t.Errorf("Service %s does not select the servers", name)
		}
		if len(s.Spec.Ports) != 1 {
			t.Fatalf("Service %s has %d ports, want 1", name, len(s.Spec.Ports))
		}
		p := s.Spec.Ports[0]
		cp, ok := containerPort(pod.Spec.Containers[0], p.TargetPort)
		if !ok || p.TargetPort.String() != want {
			t.Errorf("Service %s targets %s, want the container port %s", name, p.TargetPort.String(), want)
		}
		if p.Port != cp {
			t.Errorf("Service %s: port %d, container port %d: keep them the same", name, p.Port, cp)
		}
	}
	if s := find[corev1.Service](t, objs, "metalbond"); s.Spec.Ports[0].Port != 4711 {
		t.Errorf("Service metalbond: port %d, want 4711", s.Spec.Ports[0].Port)
	}
}

// containerPort resolves a port by name or number to a port of c.
func containerPort(c corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

// hasArg reports whether args contain an argument with this prefix.
func hasArg(args []string, prefix string) bool {
	for _, a := range args {
		if strings.HasPrefix(a, prefix) {
			return true
		}
	}
	return false
}

func intOrString(n int32) intstr.IntOrString { return intstr.FromInt32(n) }
