package metalbond

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// logKind names a kind of log line that peers can trigger, for rate
// limiting. The limit refusals come first, one per limitKind.
type logKind uint8

const (
	logPolicySubscribe logKind = logKind(numLimitKinds) + iota
	logPolicyUpdate
	logSubscribed
	logUnsubscribed
	numLogKinds
)

// Log rate limits: every peer (and the server, for connection refusals) may
// log logBurst lines of each kind at once, then one every logEvery; the
// lines held back are counted and reported by the next line of the kind
// that passes ("suppressed"). A client subscribing to its VNIs at start is
// logged in full; a peer sending thousands of messages costs a line a
// second per kind.
const (
	logBurst = 20
	logEvery = time.Second
)

// logLimiter rate-limits log lines by kind. It is safe for concurrent use;
// its zero value is ready.
type logLimiter struct {
	mu    sync.Mutex // guards kinds
	kinds [numLogKinds]logBucket
}

// logBucket is a token bucket of one kind of line.
type logBucket struct {
	tokens     float64
	last       time.Time // zero: full
	suppressed uint64
}

// log writes msg at level through log, unless the kind's rate is spent:
// then the line is only counted.
func (l *logLimiter) log(log *slog.Logger, level slog.Level, kind logKind, msg string, args ...any) {
	if !log.Enabled(context.Background(), level) {
		return
	}
	now := time.Now()
	l.mu.Lock()
	b := &l.kinds[kind]
	if b.last.IsZero() {
		b.tokens = logBurst
	} else {
		b.tokens = min(logBurst, b.tokens+float64(now.Sub(b.last))/float64(logEvery))
	}
	b.last = now
	pass := b.tokens >= 1
	var suppressed uint64
	if pass {
		b.tokens--
		suppressed, b.suppressed = b.suppressed, 0
	} else {
		b.suppressed++
	}
	l.mu.Unlock()
	if !pass {
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	log.Log(context.Background(), level, msg, args...)
}

// refuse counts a refusal of p's message by a limit and logs it, rate
// limited per peer.
func (p *serverPeer) refuse(kind limitKind, args ...any) {
	n := p.srv.refusals.counts[kind].add()
	if kind == refusedNexthopNotIPv6 {
		p.logs.log(p.log, slog.LevelWarn, logKind(kind), "update refused: nexthop is not an IPv6 address (the underlay is IPv6)",
			append([]any{"refusals", n}, args...)...)
		return
	}
	p.logs.log(p.log, slog.LevelWarn, logKind(kind), "refused: limit reached",
		append([]any{"limit", kind.String(), "refusals", n}, args...)...)
}
