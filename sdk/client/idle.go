package client

import (
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sync/atomic"
	"time"
)

// DefaultIdleTimeout is Options.IdleTimeout's default.
const DefaultIdleTimeout = 5 * time.Minute

// StreamIdleTimeout bounds the silence of a subscription's event stream:
// a server sends a heartbeat every 15 s, so after three missed ones the
// connection is taken for dead and the subscription reconnects (when
// Options.IdleTimeout is not shorter).
const StreamIdleTimeout = 45 * time.Second

// IdleError is the error of a request ended because the server moved
// nothing for Idle (Options.IdleTimeout): it neither took the request's
// body nor answered, or sent nothing while the caller waited to read the
// answer; or, with Whole, a JSON answer did not arrive whole within Idle
// of its headers (a server trickling it). It is returned as the cause of
// the transport's *url.Error; the request is not sent again.
type IdleError struct {
	Request string // "GET /v1/tenants/acme/stats"
	Idle    time.Duration
	Whole   bool
}

// Reason says what happened, without naming the setting.
func (e *IdleError) Reason() string {
	if e.Whole {
		return fmt.Sprintf("the server's answer to %s did not arrive whole within %s of its headers", e.Request, e.Idle)
	}
	return fmt.Sprintf("the server sent nothing for %s during %s", e.Idle, e.Request)
}

func (e *IdleError) Error() string { return "client: " + e.Reason() + " (Options.IdleTimeout)" }

// Timeout reports true: an IdleError is a timeout (net.Error).
func (e *IdleError) Timeout() bool { return true }

// Temporary reports false (net.Error).
func (e *IdleError) Temporary() bool { return false }

// idleTransport ends a round trip during which the server sent (or took)
// nothing for idle: until the answer's headers, neither took a byte of
// the request body nor answered; after them, sent nothing while the
// caller waited in a read of the answer (a caller slow to read is not a
// silent server). A JSON answer, read whole, must also arrive within idle
// of its headers; an event stream's silence is bounded by
// StreamIdleTimeout.
type idleTransport struct {
	rt   http.RoundTripper
	idle time.Duration
}

// RoundTrip implements http.RoundTripper.
func (t *idleTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	idle := t.idle
	mt, _, _ := mime.ParseMediaType(req.Header.Get("Accept"))
	if mt == "text/event-stream" {
		idle = min(idle, StreamIdleTimeout)
	}
	w := newIdleWatch(req, idle, req.Method+" "+req.URL.Path)
	req = w.req
	if req.Body != nil {
		req.Body = &progressBody{rc: req.Body, w: w} // closed by the transport once sent: the watch goes on
	}
	resp, err := t.rt.RoundTrip(req)
	if err != nil || resp.Body == nil {
		if w.fired.Load() {
			err = w.err()
		}
		w.stop()
		return resp, err
	}
	// From here the wait runs only while the caller waits in a read of
	// the answer.
	w.answered.Store(true)
	w.t.Stop()
	resp.Body = &progressBody{rc: resp.Body, w: w, answer: true}
	if mt == "" || mt == "application/json" {
		// A JSON answer is read whole before it is returned: one trickled
		// a byte at a time never idles, so it must also end within the
		// timeout of its headers.
		w.whole = time.AfterFunc(idle, func() {
			w.slow.Store(true)
			w.fired.Store(true)
			w.cancel()
		})
	}
	return resp, nil
}

// idleWatch cancels one round trip once the server has moved nothing for
// idle (see idleTransport).
type idleWatch struct {
	req      *http.Request // the request, on a context the watch cancels
	cancel   context.CancelFunc
	t        *time.Timer
	idle     time.Duration
	fired    atomic.Bool
	answered atomic.Bool // the answer's headers came
	what     string
	// whole, for an answer read whole, ends it once it has taken the
	// timeout since its headers (slow then says so).
	whole *time.Timer
	slow  atomic.Bool
}

func newIdleWatch(req *http.Request, idle time.Duration, what string) *idleWatch {
	ctx, cancel := context.WithCancel(req.Context())
	w := &idleWatch{req: req.WithContext(ctx), cancel: cancel, idle: idle, what: what}
	w.t = time.AfterFunc(idle, func() {
		w.fired.Store(true)
		cancel()
	})
	return w
}

// stop ends the watch and the round trip's context.
func (w *idleWatch) stop() {
	w.t.Stop()
	if w.whole != nil {
		w.whole.Stop()
	}
	w.cancel()
}

func (w *idleWatch) err() error {
	return &IdleError{Request: w.what, Idle: w.idle, Whole: w.slow.Load()}
}

// progressBody is a request or response body whose reads keep its round
// trip's idleWatch from firing; closing the answer's ends the watch.
type progressBody struct {
	rc     io.ReadCloser
	w      *idleWatch
	answer bool // the response's body (not the request's)
}

func (p *progressBody) Read(b []byte) (int, error) {
	if p.answer {
		p.w.t.Reset(p.w.idle) // the caller waits on the server from now
	}
	n, err := p.rc.Read(b)
	if p.answer {
		p.w.t.Stop()
	}
	if p.w.fired.Load() {
		return n, p.w.err()
	}
	if n > 0 && !p.answer && !p.w.answered.Load() {
		p.w.t.Reset(p.w.idle)
	}
	return n, err
}

func (p *progressBody) Close() error {
	err := p.rc.Close()
	if p.answer {
		p.w.stop()
	}
	return err
}
