package client

import "time"

// SetStreamIdle sets how long an event stream may be silent (for tests)
// and returns what puts it back.
func SetStreamIdle(d time.Duration) (restore func()) {
	old := streamIdle
	streamIdle = d
	return func() { streamIdle = old }
}
