package metalbond

import (
	"errors"
	"fmt"
	"time"
)

// Bounds of configured durations. Larger values are refused by NewServer
// and NewClient: the hold time is 2.5 keepalive intervals, and a keepalive
// of two billion seconds overflows it; nothing useful waits longer.
const (
	// MaxKeepalive is the longest keepalive interval accepted.
	MaxKeepalive = time.Hour
	// maxWait bounds every other configured duration.
	maxWait = 24 * time.Hour
)

// maxName is the longest name a HELLO carries (wire limit).
const maxName = 255

// checkKeepalive checks a configured keepalive interval (zero: default).
func checkKeepalive(d time.Duration) error {
	if d != 0 && (d < time.Second || d > MaxKeepalive) {
		return fmt.Errorf("keepalive %v: must be between 1s and %v", d, MaxKeepalive)
	}
	return nil
}

// checkDurations checks that each named duration is at most maxWait (and,
// when nonNegative says so, not negative).
func checkDurations(nonNegative bool, named map[string]time.Duration) error {
	for name, d := range named {
		if d > maxWait {
			return fmt.Errorf("%s %v: must be at most %v", name, d, maxWait)
		}
		if nonNegative && d < 0 {
			return fmt.Errorf("%s %v: must not be negative", name, d)
		}
	}
	return nil
}

// validate checks a ServerConfig before defaults are applied.
func (c *ServerConfig) validate() error {
	if err := checkKeepalive(c.Keepalive); err != nil {
		return err
	}
	if err := checkDurations(true, map[string]time.Duration{
		"write timeout": c.WriteTimeout, "handshake timeout": c.Limits.HandshakeTimeout,
	}); err != nil {
		return err
	}
	// Negative graceful restart and sync delay mean "off".
	if err := checkDurations(false, map[string]time.Duration{
		"graceful restart": c.GracefulRestart, "sync delay": c.SyncDelay,
	}); err != nil {
		return err
	}
	if c.MaxQueue < 0 || c.HighWater < 0 {
		return fmt.Errorf("send queue bounds %d, %d: must not be negative", c.MaxQueue, c.HighWater)
	}
	return c.Limits.validate()
}

// validate checks a ClientConfig before defaults are applied.
func (c *ClientConfig) validate() error {
	if err := checkKeepalive(c.Keepalive); err != nil {
		return err
	}
	if len(c.Name) > maxName {
		return fmt.Errorf("name %.16q…: %d bytes, at most %d", c.Name, len(c.Name), maxName)
	}
	if err := checkDurations(true, map[string]time.Duration{
		"write timeout": c.WriteTimeout, "grace period": c.GracePeriod,
		"retry min": c.RetryMin, "retry max": c.RetryMax,
	}); err != nil {
		return err
	}
	if err := checkDurations(false, map[string]time.Duration{"graceful restart": c.GracefulRestart}); err != nil {
		return err
	}
	if c.MaxQueue < 0 || c.HighWater < 0 {
		return errors.New("send queue bounds must not be negative")
	}
	return nil
}
