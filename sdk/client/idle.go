package client

import (
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultIdleTimeout is Options.IdleTimeout's default.
const DefaultIdleTimeout = 5 * time.Minute

// StreamIdleTimeout bounds the silence of a subscription's event stream,
// whatever Options.IdleTimeout is: a server sends a heartbeat every 15 s,
// so after three missed ones the connection is taken for dead and the
// subscription reconnects.
const StreamIdleTimeout = 45 * time.Second

// IdleError is the error of a request ended because the server moved
// nothing for Idle (Options.IdleTimeout): it neither took the request's
// body nor answered, or sent nothing while the caller waited to read the
// answer; or, with Whole, a JSON answer came slower than a mebibyte per
// Idle (a server trickling it). Before the answer's headers it comes
// wrapped in the transport's *url.Error; while the answer is read, as
// the read's error (wrapped by the call's own message): find it with
// errors.As. The request is not sent again.
type IdleError struct {
	Request string // "GET /v1/tenants/acme/stats"
	Idle    time.Duration
	Whole   bool
	Stream  bool // an event stream, watched at StreamIdleTimeout
}

// Reason says what happened, without naming the setting.
func (e *IdleError) Reason() string {
	if e.Whole {
		return fmt.Sprintf("the server's answer to %s came slower than 1 MiB in %s", e.Request, e.Idle)
	}
	msg := fmt.Sprintf("the server sent nothing for %s during %s", e.Idle, e.Request)
	if strings.HasSuffix(e.Request, "/export") {
		// An export waits between steps of 1,000 events for the tenant's
		// request rate.
		msg += " (an export is paced to the tenant's requests_per_second: 1,000 events a request)"
	}
	return msg
}

func (e *IdleError) Error() string {
	if e.Stream {
		return "client: " + e.Reason() + " (StreamIdleTimeout: a live stream sends a heartbeat every 15 s)"
	}
	return "client: " + e.Reason() + " (Options.IdleTimeout)"
}

// Timeout reports true: an IdleError is a timeout (net.Error).
func (e *IdleError) Timeout() bool { return true }

// Temporary reports false (net.Error).
func (e *IdleError) Temporary() bool { return false }

// idleTransport ends a round trip during which the server sent (or took)
// nothing for idle: until the answer's headers, neither took a byte of
// the request body nor answered (unless the request is one the server
// works on before it answers: slowRequest); after them, sent nothing
// while the caller waited in a read of the answer (a caller slow to read
// is not a silent server). A JSON answer, read whole, must also come at
// wholeRate or faster. An event stream's silence is bounded by
// StreamIdleTimeout alone, whatever idle is. idle <= 0: only event
// streams are watched.
type idleTransport struct {
	rt   http.RoundTripper
	idle time.Duration
}

// streamIdle is StreamIdleTimeout (a variable for tests).
var streamIdle = StreamIdleTimeout

// wholeRate is how much of a JSON answer must arrive in each IdleTimeout.
const wholeRate = 1 << 20

// slowKey marks, in a request's context, a request the server works on
// (for longer than IdleTimeout, perhaps) before it answers: its wait for
// the answer's headers is not watched.
type slowKey struct{}

// RoundTrip implements http.RoundTripper.
func (t *idleTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	idle := t.idle
	mt, _, _ := mime.ParseMediaType(req.Header.Get("Accept"))
	stream := mt == "text/event-stream"
	if stream {
		idle = streamIdle
	}
	if idle <= 0 {
		return t.rt.RoundTrip(req)
	}
	w := newIdleWatch(req, idle, req.Method+" "+req.URL.Path, req.Context().Value(slowKey{}) != nil)
	w.stream = stream
	req = w.req
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = &progressBody{rc: req.Body, w: w} // closed by the transport once sent: the watch goes on
		if get := req.GetBody; get != nil {
			// A body sent again on a fresh connection is watched too.
			req.GetBody = func() (io.ReadCloser, error) {
				b, err := get()
				if err != nil || b == http.NoBody {
					return b, err
				}
				return &progressBody{rc: b, w: w}, nil
			}
		}
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
	if !stream && (mt == "" || mt == "application/json") {
		// A JSON answer is read whole before it is returned: one trickled
		// a byte at a time never idles, so it must also come at
		// wholeRate (restarted at each mebibyte).
		w.whole = time.AfterFunc(idle, func() {
			w.slow.Store(w.moved.Load() > 0)
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
	stream   bool        // an event stream (IdleError.Stream)
	written  atomic.Bool // a slow request was written whole: its wait for the headers is not watched
	// whole, for an answer read whole, ends it when less than wholeRate
	// of it came in the timeout (slow then says so); moved counts the
	// bytes since whole was last started.
	whole *time.Timer
	moved atomic.Int64
	slow  atomic.Bool
}

// newIdleWatch watches req. slow: once the request is written whole,
// the wait for the answer's headers is not watched (the server works on
// it first); connecting, the TLS handshake and sending are, as for any
// request.
func newIdleWatch(req *http.Request, idle time.Duration, what string, slow bool) *idleWatch {
	ctx, cancel := context.WithCancel(req.Context())
	w := &idleWatch{cancel: cancel, idle: idle, what: what}
	if slow {
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
			// net/http may send the request again on a fresh connection:
			// that one is watched until sent too.
			GetConn: func(string) {
				if w.written.Swap(false) {
					w.t.Reset(w.idle)
				}
			},
			WroteRequest: func(httptrace.WroteRequestInfo) {
				w.written.Store(true)
				w.t.Stop()
			},
		})
	}
	w.req = req.WithContext(ctx)
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
	return &IdleError{Request: w.what, Idle: w.idle, Whole: w.slow.Load(), Stream: w.stream}
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
		if p.w.whole != nil && p.w.moved.Add(int64(n)) >= wholeRate && !p.w.fired.Load() {
			p.w.moved.Store(0)
			p.w.whole.Reset(p.w.idle)
		}
	}
	if p.w.fired.Load() {
		return n, p.w.err()
	}
	if n > 0 && !p.answer && !p.w.answered.Load() && !p.w.written.Load() {
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
