package session

import (
	"context"
	"fmt"
	"time"
)

// Finish ends the session cleanly, for a peer that is leaving on purpose:
// it waits until everything queued so far has been written to the
// connection, then half-closes it (the peer reads every byte and then end
// of stream) and waits for the peer to close its side, which a MetalBond
// peer does once it has handled everything before the end of stream.
// Keepalives are no longer sent once Finish is called; frames queued after
// it are not waited for.
//
// Finish returns nil when the peer closed its side after reading
// everything. When ctx is done first, or the session ends for another
// reason, it closes the session and returns why: what was queued may not
// have reached the peer. Run returns soon after Finish.
func (s *Session) Finish(ctx context.Context) error {
	s.finishing.Store(true)
	if !s.q.waitBelow(ctx, 0, time.Hour) || ctx.Err() != nil {
		s.fail(context.Cause(ctx))
		return fmt.Errorf("send queue not written: %w", ctx.Err())
	}
	select {
	case <-s.done:
		return s.err
	default:
	}
	cw, ok := s.conn.(interface{ CloseWrite() error })
	if !ok {
		s.Close()
		return nil
	}
	if err := cw.CloseWrite(); err != nil {
		s.fail(err)
		return err
	}
	select {
	case <-s.done:
		return nil // the peer closed after reading to the end
	case <-ctx.Done():
		s.fail(context.Cause(ctx))
		return ctx.Err()
	}
}
