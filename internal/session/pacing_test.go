package session

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/metalbond/metalbond/internal/testpeer"
	"github.com/metalbond/metalbond/internal/wire"
)

// testPace are the production parameters with fewer yields, so that the
// tables show sleeps after two polls.
var testPace = func() paceParams {
	p := defaultPace
	p.Yields = 2
	return p
}()

const kib = 1 << 10

// frame is the size of the next frame in the table tests (an IPv4 UPDATE).
const frame = 38

// paceStep is one decision: dt after the previous one, what the socket says
// and how much waits; write says whether the writer then writes what was
// allowed.
type paceStep struct {
	dt    time.Duration
	s     sample
	want  int
	write bool
}

// run plays steps and returns the last decision and the state.
func runPace(p paceParams, steps []paceStep) (decision, *paceState) {
	st := &paceState{}
	now := time.Unix(1000, 0)
	var d decision
	for _, step := range steps {
		now = now.Add(step.dt)
		d = p.decide(st, step.s, waiting{Next: frame, Total: step.want}, now)
		if step.write && d.Allow > 0 {
			st.wrote(d.Allow, d.Probe, now)
		}
	}
	return d, st
}

// fill writes n segments of 8 KiB that stay unacknowledged, starting from an
// empty peer with window wnd.
func fill(n, wnd int) []paceStep {
	var steps []paceStep
	for i := range n {
		steps = append(steps, paceStep{dt: time.Microsecond, s: sample{Outq: i * 8 * kib, Wnd: wnd}, want: 1 << 20, write: true})
	}
	return steps
}

func TestPaceDecide(t *testing.T) {
	full := fill(6, 64*kib) // 48 KiB written, none of it acknowledged
	then := func(steps ...paceStep) []paceStep { return append(append([]paceStep(nil), full...), steps...) }
	tests := []struct {
		name      string
		steps     []paceStep
		allow     int
		probe     bool
		backlog   int
		wait      time.Duration
		peak      int
		grow      int64
		slackSome bool
	}{
		{
			name:  "first write: a segment",
			steps: []paceStep{{s: sample{Wnd: 64 * kib}, want: 1 << 20}},
			allow: 8 * kib, peak: 64 * kib,
		},
		{
			name:  "less waiting than a segment",
			steps: []paceStep{{s: sample{Wnd: 64 * kib}, want: 300}},
			allow: 300, peak: 64 * kib,
		},
		{
			name:  "the MSS bounds a write",
			steps: []paceStep{{s: sample{Wnd: 64 * kib, MSS: 1448}, want: 1 << 20}},
			allow: 1448, peak: 64 * kib,
		},
		{
			name:  "a frame larger than the MSS goes alone",
			steps: []paceStep{{s: sample{Wnd: 64 * kib, MSS: 20}, want: 1 << 20}},
			allow: frame, peak: 64 * kib,
		},
		{
			name:    "unsent bytes in the socket: wait, whatever the room",
			steps:   []paceStep{{s: sample{Outq: 100, Unsent: 100, Wnd: 64 * kib, MSS: 1448}, want: 1 << 20}},
			backlog: 0, peak: 64 * kib,
		},
		{
			name:  "the open window bounds a write",
			steps: []paceStep{{s: sample{Outq: 60 * kib, Wnd: 64 * kib}, want: 1 << 20}},
			allow: 4 * kib, peak: 64 * kib,
		},
		{
			name:  "an open window smaller than the next frame: wait",
			steps: []paceStep{{s: sample{Outq: 64*kib - 20, Wnd: 64 * kib}, want: 1 << 20}},
			peak:  64 * kib,
		},
		{
			name:    "target reached, nothing acknowledged: wait, yielding first",
			steps:   then(paceStep{dt: time.Microsecond, s: sample{Outq: 48 * kib, Wnd: 64 * kib}, want: 1 << 20}),
			backlog: 48 * kib, peak: 64 * kib,
		},
		{
			name: "after the yields the writer sleeps",
			steps: then(
				paceStep{dt: time.Microsecond, s: sample{Outq: 48 * kib, Wnd: 64 * kib}, want: 1 << 20},
				paceStep{dt: time.Microsecond, s: sample{Outq: 48 * kib, Wnd: 64 * kib}, want: 1 << 20},
				paceStep{dt: time.Microsecond, s: sample{Outq: 48 * kib, Wnd: 64 * kib}, want: 1 << 20},
			),
			backlog: 48 * kib, wait: 250 * time.Microsecond, peak: 64 * kib,
		},
		{
			// Hidden of the 48 KiB may still sit unread behind a full window.
			name:  "acknowledged with the window open: all but Hidden read",
			steps: then(paceStep{dt: time.Millisecond, s: sample{Outq: 0, Wnd: 64 * kib}, want: 1 << 20}),
			allow: 8 * kib, backlog: 32 * kib, peak: 64 * kib,
		},
		{
			name:    "acknowledged, window shrunk by as much: nothing read",
			steps:   then(paceStep{dt: time.Millisecond, s: sample{Outq: 0, Wnd: 16 * kib}, want: 1 << 20}),
			backlog: 48 * kib, peak: 64 * kib,
		},
		{
			name:    "acknowledged while the window grew: not a read",
			steps:   then(paceStep{dt: time.Millisecond, s: sample{Outq: 0, Wnd: 128 * kib}, want: 1 << 20}),
			backlog: 48 * kib, peak: 128 * kib, grow: 48 * kib,
		},
		{
			name: "growth is taken as read at GrowRate",
			steps: then(
				paceStep{dt: time.Millisecond, s: sample{Outq: 0, Wnd: 128 * kib}, want: 1 << 20},
				paceStep{dt: 200 * time.Millisecond, s: sample{Outq: 0, Wnd: 128 * kib}, want: 1 << 20},
			),
			allow: 8 * kib, backlog: 32 * kib, peak: 128 * kib,
		},
		{
			name: "acknowledged below the peak without a shrink: slack, not a read",
			steps: then(
				paceStep{dt: time.Millisecond, s: sample{Outq: 0, Wnd: 16 * kib}, want: 1 << 20},
				paceStep{dt: time.Millisecond, s: sample{Outq: 0, Wnd: 64 * kib}, want: 1 << 20, write: true},
				paceStep{dt: time.Millisecond, s: sample{Outq: 0, Wnd: 40 * kib}, want: 1 << 20, write: true},
				paceStep{dt: time.Millisecond, s: sample{Outq: 0, Wnd: 40 * kib}, want: 1 << 20},
			),
			backlog: 48 * kib, peak: 64 * kib, slackSome: true,
		},
		{
			// 35 KiB acknowledged with the window open: 3 KiB read.
			name:    "room for less than MinChunk: wait",
			steps:   then(paceStep{dt: time.Millisecond, s: sample{Outq: 13 * kib, Wnd: 64 * kib}, want: 1 << 20}),
			backlog: 45 * kib, peak: 64 * kib,
		},
		{
			name: "nothing moves for ProbeAfter: a small probe",
			steps: then(
				paceStep{dt: time.Millisecond, s: sample{Outq: 0, Wnd: 16 * kib}, want: 1 << 20},
				paceStep{dt: 2 * time.Millisecond, s: sample{Outq: 0, Wnd: 16 * kib}, want: 1 << 20},
			),
			allow: 64, probe: true, backlog: 48 * kib, peak: 64 * kib,
		},
		{
			name: "probes that change nothing grow and come further apart",
			steps: then(
				paceStep{dt: time.Millisecond, s: sample{Outq: 0, Wnd: 16 * kib}, want: 1 << 20},
				paceStep{dt: 2 * time.Millisecond, s: sample{Outq: 0, Wnd: 16 * kib}, want: 1 << 20, write: true},
				paceStep{dt: 3 * time.Millisecond, s: sample{Outq: 0, Wnd: 16 * kib}, want: 1 << 20},
				paceStep{dt: time.Millisecond, s: sample{Outq: 0, Wnd: 16 * kib}, want: 1 << 20},
			),
			allow: 128, probe: true, backlog: 48*kib + 64, peak: 64 * kib, slackSome: true,
		},
		{
			name: "no probe while something is unacknowledged",
			steps: then(
				paceStep{dt: 10 * time.Millisecond, s: sample{Outq: 48 * kib, Wnd: 64 * kib}, want: 1 << 20},
			),
			backlog: 48 * kib, peak: 64 * kib,
		},
		{
			name: "a window that stays put while the peer takes probes settles",
			steps: then(
				paceStep{dt: time.Millisecond, s: sample{Outq: 0, Wnd: 54 * kib}, want: 1 << 20},
				paceStep{dt: 2 * time.Millisecond, s: sample{Outq: 0, Wnd: 54 * kib}, want: 1 << 20, write: true},
				paceStep{dt: time.Second, s: sample{Outq: 0, Wnd: 54 * kib}, want: 1 << 20},
			),
			// The peak falls toward 54 KiB, by SettleMax (the next
			// sample credits reads); the window is still quiet: the next
			// probe.
			allow: 128, probe: true, backlog: 48*kib + 64, peak: 56 * kib,
		},
		{
			name: "settling lowers the peak by at most SettleMax",
			steps: then(
				paceStep{dt: time.Millisecond, s: sample{Outq: 0, Wnd: 20 * kib}, want: 1 << 20},
				paceStep{dt: 2 * time.Millisecond, s: sample{Outq: 0, Wnd: 20 * kib}, want: 1 << 20, write: true},
				paceStep{dt: time.Second, s: sample{Outq: 0, Wnd: 20 * kib}, want: 1 << 20},
			),
			allow: 128, probe: true, backlog: 48*kib + 64, peak: 56 * kib,
		},
		{
			// A peer that stopped reading shows the same as one whose
			// window was lowered: only an opening window lets the peak
			// fall further.
			name: "settling lowers the peak by SettleMax in all until the window opens",
			steps: then(
				paceStep{dt: time.Millisecond, s: sample{Outq: 0, Wnd: 20 * kib}, want: 1 << 20},
				paceStep{dt: 2 * time.Millisecond, s: sample{Outq: 0, Wnd: 20 * kib}, want: 1 << 20, write: true},
				paceStep{dt: time.Second, s: sample{Outq: 0, Wnd: 20 * kib}, want: 1 << 20, write: true},
				paceStep{dt: time.Second, s: sample{Outq: 0, Wnd: 20 * kib}, want: 1 << 20, write: true},
				paceStep{dt: time.Second, s: sample{Outq: 0, Wnd: 20 * kib}, want: 1 << 20},
			),
			allow: 512, probe: true, backlog: 48*kib + 64 + 128 + 256, peak: 56 * kib, slackSome: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, st := runPace(testPace, tt.steps)
			if d.Allow != tt.allow || d.Probe != tt.probe || d.Backlog != tt.backlog || d.Wait != tt.wait {
				t.Errorf("decision = %+v, want allow %d probe %v backlog %d wait %v", d, tt.allow, tt.probe, tt.backlog, tt.wait)
			}
			if st.peak != tt.peak {
				t.Errorf("peak = %d, want %d", st.peak, tt.peak)
			}
			if tt.grow != 0 && st.grow != tt.grow {
				t.Errorf("grow = %d, want %d", st.grow, tt.grow)
			}
			if (st.slack > 0) != tt.slackSome {
				t.Errorf("slack = %d, want some: %v", st.slack, tt.slackSome)
			}
		})
	}
}

func TestPaceBackoff(t *testing.T) {
	tests := []struct {
		polls int
		want  time.Duration
	}{
		{0, 0}, {1, 0}, {2, 250 * time.Microsecond}, {3, 500 * time.Microsecond},
		{4, time.Millisecond}, {6, 4 * time.Millisecond}, {40, 4 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := testPace.backoff(tt.polls); got != tt.want {
			t.Errorf("backoff(%d) = %v, want %v", tt.polls, got, tt.want)
		}
	}
}

func TestPaceFallback(t *testing.T) {
	const chunkTime = time.Second * 1220 / (256 << 10)
	p := testPace // 256 KiB/s in writes of at most 1220 bytes
	start := time.Unix(1000, 0)
	tests := []struct {
		name  string
		steps []struct {
			dt   time.Duration
			want int
		}
		allow int
		wait  time.Duration
	}{
		{"first write: a chunk", []struct {
			dt   time.Duration
			want int
		}{{0, 1 << 20}}, 1220, 0},
		{"less waiting than a chunk", []struct {
			dt   time.Duration
			want int
		}{{0, 100}}, 100, 0},
		{"the next chunk after 1220 bytes' time", []struct {
			dt   time.Duration
			want int
		}{{0, 1 << 20}, {0, 1 << 20}}, 0, chunkTime},
		{"half the wait later, half left", []struct {
			dt   time.Duration
			want int
		}{{0, 1 << 20}, {chunkTime / 2, 1 << 20}}, 0, chunkTime / 2},
		{"a full wait later, a chunk", []struct {
			dt   time.Duration
			want int
		}{{0, 1 << 20}, {chunkTime + time.Microsecond, 1 << 20}}, 1220, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var st fallbackState
			now := start
			var d decision
			for _, s := range tt.steps {
				now = now.Add(s.dt)
				d = p.decideFallback(&st, waiting{Next: min(frame, s.want), Total: s.want}, now)
			}
			if d.Allow != tt.allow || (d.Wait-tt.wait).Abs() > time.Microsecond {
				t.Errorf("decision = %+v, want allow %d wait %v", d, tt.allow, tt.wait)
			}
		})
	}
}

// rawV1 connects a raw plain v1 client to a server session over TCP,
// completes the handshake, and returns the client's conn and the session.
func rawV1(t *testing.T, cfg Config) (net.Conn, *Session) {
	t.Helper()
	raw, sc := testpeer.TCPPair(t)
	h := newRecorder()
	cfg.Role = RoleServer
	s := New(sc, cfg, h)
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	t.Cleanup(func() {
		s.Close()
		<-done
	})
	hello, _ := wire.AppendFrame(nil, wire.Hello{Keepalive: 5})
	ka, _ := wire.AppendFrame(nil, wire.Keepalive{})
	raw.Write(append(hello, ka...))
	wait(t, h.established)
	return raw, s
}

func TestPacedSessionInfo(t *testing.T) {
	raw, s := rawV1(t, Config{})
	var frames []byte
	for i := range 5000 {
		frames = wire.AppendUpdate(frames, wire.ActionAdd, testRoute(i))
	}
	s.Send(frames, 5000)
	// Read slowly, so that the writer has to wait.
	buf := make([]byte, 64<<10)
	got := 0
	for got < len(frames) {
		time.Sleep(5 * time.Millisecond)
		raw.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := raw.Read(buf)
		if err != nil {
			t.Fatalf("read after %d bytes: %v", got, err)
		}
		if n == 65535 {
			t.Fatalf("a read returned 65,535 bytes")
		}
		got += n
	}
	in := s.Info()
	if !in.Paced || in.PacedTime <= 0 || in.BacklogBytes <= 0 {
		t.Errorf("Info() = Paced %v, PacedTime %v, BacklogBytes %d: want paced, waited, some backlog", in.Paced, in.PacedTime, in.BacklogBytes)
	}
}

func TestNoPaceV1(t *testing.T) {
	_, s := rawV1(t, Config{NoPaceV1: true})
	frames := wire.AppendUpdate(nil, wire.ActionAdd, testRoute(1))
	s.Send(frames, 1)
	deadline := time.Now().Add(5 * time.Second)
	for s.Info().QueueBytes > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if in := s.Info(); in.QueueBytes > 0 || in.Paced {
		t.Errorf("Info().Paced with NoPaceV1")
	}
}

// TestPacedPeerThatStopsReadingIsDropped: a plain v1 peer that keeps
// sending keepalives but reads nothing is closed after WriteTimeout, although
// the keepalives it is answered keep the writer busy.
func TestPacedPeerThatStopsReadingIsDropped(t *testing.T) {
	raw, sc := testpeer.TCPPair(t)
	h := newRecorder()
	s := New(sc, Config{Role: RoleServer, Keepalive: time.Second, WriteTimeout: 500 * time.Millisecond, MaxQueue: 1 << 30}, h)
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	hello, _ := wire.AppendFrame(nil, wire.Hello{Keepalive: 1})
	ka, _ := wire.AppendFrame(nil, wire.Keepalive{})
	raw.Write(append(hello, ka...))
	wait(t, h.established)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				raw.Write(ka)
			}
		}
	}()
	var frames []byte
	for i := range 20000 {
		frames = wire.AppendUpdate(frames, wire.ActionAdd, testRoute(i))
	}
	s.Send(frames, 20000)
	start := time.Now()
	if err := wait(t, done); !errors.Is(err, ErrStalled) {
		t.Fatalf("err = %v, want ErrStalled", err)
	}
	t.Logf("dropped after %v", time.Since(start).Round(time.Millisecond))
}
