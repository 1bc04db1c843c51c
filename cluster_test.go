package metalbond_test

import (
	"slices"
	"sync"
	"testing"

	"github.com/metalbond/metalbond"
	"github.com/metalbond/metalbond/route"
)

// sinkRecorder is a RouteSink that keeps the set of local routes and
// checks the calls are balanced.
type sinkRecorder struct {
	mu       sync.Mutex
	routes   map[route.Route]bool
	problems []string
}

func (s *sinkRecorder) LocalRoute(r route.Route, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.routes[r] == add {
		s.problems = append(s.problems, "unbalanced call for "+r.String())
	}
	if add {
		s.routes[r] = true
	} else {
		delete(s.routes, r)
	}
}

func (s *sinkRecorder) snapshot() ([]route.Route, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []route.Route
	for r := range s.routes {
		out = append(out, r)
	}
	slices.SortFunc(out, route.Route.Compare)
	return out, slices.Clone(s.problems)
}

func TestRouteSinkAndExternalSource(t *testing.T) {
	sink := &sinkRecorder{routes: map[route.Route]bool{}}
	srv, addr := startServer(t, metalbond.ServerConfig{Sink: sink})
	sub := startClient(t, []string{addr})
	sub.subscribe(t, 30)

	// Two local peers announce the same route: the sink hears of it once.
	shared := mustRoute(t, "30#10.30.0.0/16#2001:db8::1")
	onlyA := mustRoute(t, "30#10.31.0.0/16#2001:db8::1")
	a := startClient(t, []string{addr}, plainV1)
	b := startClient(t, []string{addr}, plainV1)
	a.announce(t, shared, onlyA)
	b.announce(t, shared)
	waitFor(t, func() bool { got, _ := sink.snapshot(); return len(got) == 2 })

	// A route from another server of the cluster reaches subscribers but
	// is not reported back to the sink, even when a local peer also has it.
	ext := srv.NewExternalSource("server-2")
	remote := mustRoute(t, "30#10.32.0.0/16#2001:db8::2")
	if err := ext.Add(remote); err != nil {
		t.Fatal(err)
	}
	if err := ext.Add(shared); err != nil {
		t.Fatal(err)
	}
	sub.inst.WaitRoutes(t, []route.Route{shared, onlyA, remote})

	// a goes away: onlyA stops being local; shared stays (b has it).
	a.stop()
	waitFor(t, func() bool { got, _ := sink.snapshot(); return len(got) == 1 })
	b.withdraw(t, shared)
	waitFor(t, func() bool { got, _ := sink.snapshot(); return len(got) == 0 })
	// shared is still held by the external source.
	sub.inst.WaitRoutes(t, []route.Route{shared, remote})
	ext.Close()
	sub.inst.WaitRoutes(t, nil)
	if _, problems := sink.snapshot(); len(problems) > 0 {
		t.Fatal(problems)
	}
}
