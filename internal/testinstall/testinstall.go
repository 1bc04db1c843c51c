// Package testinstall is a route installer for tests: it records the routes
// a client library gives it and notes every misuse — adding a route it has,
// removing one it lacks — since the library must tell an installer about
// each route once, however many servers sent it.
package testinstall

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/metalbond/metalbond/route"
)

// Recorder implements metalbond.Installer. It is safe for concurrent use.
type Recorder struct {
	mu       sync.Mutex // guards the following
	routes   map[route.Route]bool
	adds     int
	removes  int
	problems []string

	changed chan struct{} // capacity 1: the installed set changed
}

// New returns an empty Recorder.
func New() *Recorder {
	return &Recorder{routes: map[route.Route]bool{}, changed: make(chan struct{}, 1)}
}

// AddRoute implements metalbond.Installer.
func (r *Recorder) AddRoute(rt route.Route) error {
	r.mu.Lock()
	if r.routes[rt] {
		r.problems = append(r.problems, "duplicate add "+rt.String())
	}
	r.routes[rt] = true
	r.adds++
	r.mu.Unlock()
	r.notify()
	return nil
}

// RemoveRoute implements metalbond.Installer.
func (r *Recorder) RemoveRoute(rt route.Route) error {
	r.mu.Lock()
	if !r.routes[rt] {
		r.problems = append(r.problems, "remove of absent "+rt.String())
	}
	delete(r.routes, rt)
	r.removes++
	r.mu.Unlock()
	r.notify()
	return nil
}

func (r *Recorder) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// Changed receives a value after the installed set changed.
func (r *Recorder) Changed() <-chan struct{} { return r.changed }

// Len returns the number of installed routes.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.routes)
}

// Has reports whether rt is installed.
func (r *Recorder) Has(rt route.Route) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.routes[rt]
}

// Routes returns the installed routes, sorted.
func (r *Recorder) Routes() []route.Route {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]route.Route, 0, len(r.routes))
	for rt := range r.routes {
		out = append(out, rt)
	}
	slices.SortFunc(out, route.Route.Compare)
	return out
}

// Counts returns the numbers of adds and removes so far and the misuses.
func (r *Recorder) Counts() (adds, removes int, problems []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.adds, r.removes, slices.Clone(r.problems)
}

// WaitRoutes waits up to 10 s until the installed set equals want exactly,
// and fails the test if it does not or if the installer was misused.
func (r *Recorder) WaitRoutes(tb testing.TB, want []route.Route) {
	tb.Helper()
	want = slices.Clone(want)
	slices.SortFunc(want, route.Route.Compare)
	deadline := time.After(10 * time.Second)
	for {
		if r.Len() == len(want) && slices.Equal(r.Routes(), want) {
			if _, _, p := r.Counts(); len(p) > 0 {
				tb.Fatalf("installer misuse: %v", p)
			}
			return
		}
		select {
		case <-r.changed:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			tb.Fatalf("installed routes:\n got %s\nwant %s", Format(r.Routes()), Format(want))
		}
	}
}

// Format shows routes briefly: all of a few, the count and ends of many.
func Format(rs []route.Route) string {
	if len(rs) > 10 {
		return fmt.Sprintf("%d routes, first %v ... last %v", len(rs), rs[0], rs[len(rs)-1])
	}
	return fmt.Sprint(rs)
}
