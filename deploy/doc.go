// Package deploy holds the tests of the Kubernetes manifests in kubernetes/
// and of the alert rules in kubernetes/components/monitoring: every
// kustomization is rendered with sigs.k8s.io/kustomize/api and every object
// decoded strictly with the Kubernetes and Prometheus Operator API types;
// the servers and the client run from the repository's own
// cmd/metalbond with the command lines the manifests give them, and answer
// the manifests' probes.
//
// It is a module of its own so that the Kubernetes dependencies stay out of
// the library's module graph. Run its tests from this directory:
//
//	go test -race -count=1 ./...
//
// `go test ./... -update` regenerates kubernetes/components/monitoring/
// prometheusrule.yaml from metalbond.rules.yaml.
package deploy
