package session

import (
	"context"
	"strings"
	"testing"

	"github.com/metalbond/metalbond/internal/wire"
)

// Finish returns once the peer has read everything queued before it and
// closed: the server's session has handled every update when Finish
// returns, and then ends on the end of the stream.
func TestFinishDeliversEverythingQueued(t *testing.T) {
	for _, paced := range []bool{false, true} {
		name := "unpaced"
		if paced {
			name = "paced plain v1"
		}
		t.Run(name, func(t *testing.T) {
			ccfg := Config{Features: wire.FeatureEndOfSync}
			if paced {
				ccfg.Features = 0
			}
			c, s, ch, sh, cerr, serr := pair(t, ccfg, Config{Features: wire.FeatureEndOfSync})
			wait(t, ch.established)
			wait(t, sh.established)
			var frames []byte
			for i := range 4000 {
				frames = wire.AppendUpdate(frames, wire.ActionRemove, testRoute(i))
			}
			c.Send(frames, 4000)
			if err := c.Finish(context.Background()); err != nil {
				t.Fatalf("Finish: %v", err)
			}
			if got := s.Info().UpdatesReceived; got != 4000 {
				t.Errorf("server handled %d updates when Finish returned, want 4000", got)
			}
			if err := wait(t, serr); err == nil || !strings.Contains(err.Error(), "closed by peer") {
				t.Errorf("server session ended with %v, want the end of the stream", err)
			}
			wait(t, cerr)
		})
	}
}

// Finish gives up, closing the session, when its context ends first.
func TestFinishBoundedByContext(t *testing.T) {
	c, _, ch, sh, cerr, _ := pair(t, Config{}, Config{})
	wait(t, ch.established)
	wait(t, sh.established)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Finish(ctx); err == nil {
		t.Fatal("Finish with a cancelled context returned nil")
	}
	wait(t, cerr)
}
