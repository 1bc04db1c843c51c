package deploy

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// manifestsDir is the root of the kustomize layout.
const manifestsDir = "kubernetes"

// object is one rendered object, decoded strictly into its API type.
type object struct {
	kind, name string
	obj        any // a pointer to the API type of kind
}

// apiTypes are the kinds the manifests may contain, by apiVersion and kind,
// with the API type each is decoded into. Any other kind fails the tests.
var apiTypes = map[string]func() any{
	"v1/Namespace":                            func() any { return new(corev1.Namespace) },
	"v1/Service":                              func() any { return new(corev1.Service) },
	"v1/ConfigMap":                            func() any { return new(corev1.ConfigMap) },
	"apps/v1/Deployment":                      func() any { return new(appsv1.Deployment) },
	"apps/v1/DaemonSet":                       func() any { return new(appsv1.DaemonSet) },
	"policy/v1/PodDisruptionBudget":           func() any { return new(policyv1.PodDisruptionBudget) },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return new(monitoringv1.ServiceMonitor) },
	"monitoring.coreos.com/v1/PrometheusRule": func() any { return new(monitoringv1.PrometheusRule) },
}

// kustomizations returns the directories under manifestsDir that hold a
// kustomization.yaml of kind Kustomization (components are rendered
// through the overlays that use them).
func kustomizations(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(manifestsDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "kustomization.yaml" {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var k struct{ Kind string }
		if err := yaml.Unmarshal(b, &k); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if k.Kind == "Kustomization" {
			dirs = append(dirs, filepath.Dir(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 {
		t.Fatalf("no kustomization.yaml under %s", manifestsDir)
	}
	return dirs
}

// render builds the kustomization in dir of fSys and decodes every object
// strictly: a field the API type does not have, a duplicate field or a
// kind not in apiTypes fails the test.
func render(t *testing.T, fSys filesys.FileSystem, dir string) []object {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fSys, dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var objs []object
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		gvk := r.GetGvk()
		key := gvk.Kind
		if gvk.Group != "" {
			key = gvk.Group + "/" + gvk.Version + "/" + key
		} else {
			key = gvk.Version + "/" + key
		}
		newObj, ok := apiTypes[key]
		if !ok {
			t.Fatalf("%s: %s %s is not a kind the tests know", dir, key, r.GetName())
		}
		obj := newObj()
		if err := yaml.UnmarshalStrict(y, obj); err != nil {
			t.Fatalf("%s: %s %s does not decode strictly: %v\n%s", dir, key, r.GetName(), err, y)
		}
		objs = append(objs, object{kind: gvk.Kind, name: r.GetName(), obj: obj})
	}
	return objs
}

// renderDir renders a directory of the working tree.
func renderDir(t *testing.T, dir string) []object {
	t.Helper()
	return render(t, filesys.MakeFsOnDisk(), dir)
}

// find returns the object of type T named name, failing the test if
// there is none.
func find[T any](t *testing.T, objs []object, name string) *T {
	t.Helper()
	for _, o := range objs {
		if v, ok := o.obj.(*T); ok && o.name == name {
			return v
		}
	}
	var zero T
	t.Fatalf("no %T named %q in %v", zero, name, names(objs))
	return nil
}

func names(objs []object) []string {
	var s []string
	for _, o := range objs {
		s = append(s, o.kind+"/"+o.name)
	}
	slices.Sort(s)
	return s
}

// memFS copies manifestsDir into an in-memory file system under /m, for
// kustomizations that tests write next to it.
func memFS(t *testing.T) filesys.FileSystem {
	t.Helper()
	mem := filesys.MakeFsInMemory()
	err := filepath.WalkDir(manifestsDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return mem.WriteFile(filepath.Join("/m", path), b)
	})
	if err != nil {
		t.Fatal(err)
	}
	return mem
}

// strictYAML decodes b into v, failing on unknown and duplicate fields.
func strictYAML(b []byte, v any) error {
	return yaml.UnmarshalStrict(bytes.TrimSpace(b), v)
}

// metav1LabelSelector turns an API label selector into a labels.Selector.
func metav1LabelSelector(s *metav1.LabelSelector) (labels.Selector, error) {
	return metav1.LabelSelectorAsSelector(s)
}
