package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sync/atomic"
	"time"
)

// maxServerMessageBytes bounds what the CLI holds in memory of one
// server answer: a JSON response body, or one Server-Sent Events message
// (query --follow). A server's query page carries at most 8 MiB of
// payload beyond its first event (itself at most 16 MiB), so a real
// answer is far below it; a body or message that passes it is refused
// with an error naming the limit instead of growing the CLI without
// bound. An export's NDJSON streams to its destination and is not
// bounded. Default and value: 256 MiB (a variable only so tests can
// lower it).
var maxServerMessageBytes int64 = 256 << 20

// defaultServerIdle is remote.timeout's default: how long the CLI waits
// for a server that sends nothing — the answer's headers once the request
// is sent, the next bytes of a request body the server stopped reading,
// or of an answer or event stream (a server's event stream sends a
// heartbeat every 15 s, so a live one never idles that long) — and the
// most a JSON answer (read whole) may take after its headers.
const defaultServerIdle = 5 * time.Minute

// boundedTransport wraps the HTTP transport the CLI's server client uses:
// it bounds the response bodies it returns (see maxServerMessageBytes)
// and ends a round trip during which the server sent (or took) nothing
// for idle (0: never).
type boundedTransport struct {
	rt   http.RoundTripper
	max  int64
	idle time.Duration
}

// newBoundedTransport is the CLI's transport; roots, when not nil, verify
// an https server's certificate (remote.ca_file's CA with the system's
// roots, see certroots.Load).
func newBoundedTransport(idle time.Duration, roots *x509.CertPool) *boundedTransport {
	rt := http.DefaultTransport.(*http.Transport).Clone()
	// A batpak server never compresses its answers: asking for gzip would
	// only let a hostile one send a small body that inflates.
	rt.DisableCompression = true
	if roots != nil {
		rt.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	return &boundedTransport{rt: rt, max: maxServerMessageBytes, idle: idle}
}

// RoundTrip implements http.RoundTripper.
func (b *boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	what := req.Method + " " + req.URL.Path
	var w *idleWatch
	if b.idle > 0 {
		w = newIdleWatch(req, b.idle, what)
		req = w.req
		if req.Body != nil {
			req.Body = &progressBody{rc: req.Body, w: w} // closed by the transport once sent: the watch goes on
		}
	}
	resp, err := b.rt.RoundTrip(req)
	if err != nil || resp.Body == nil {
		if w != nil {
			if w.fired.Load() {
				err = w.err()
			}
			w.stop()
		}
		return resp, err
	}
	if w != nil {
		// From here the wait runs only while the CLI waits in a read of
		// the answer: a consumer slow to read (a paused pager) is not a
		// silent server.
		w.answered.Store(true)
		w.t.Stop()
		resp.Body = &progressBody{rc: resp.Body, w: w, answer: true}
	}
	// What the CLI asked for decides, not what the server says it sent:
	// a server cannot unbound an answer by naming it a stream.
	mt, _, _ := mime.ParseMediaType(req.Header.Get("Accept"))
	switch mt {
	case "application/x-ndjson":
		// An export: written out line by line as it arrives.
	case "text/event-stream":
		resp.Body = &sseBoundBody{rc: resp.Body, max: b.max, what: what}
	default:
		resp.Body = &boundBody{rc: resp.Body, left: b.max, max: b.max, what: what}
		if w != nil {
			// A JSON answer is read whole before anything is printed: one
			// trickled a byte at a time never idles, so it must also end
			// within the timeout of its headers.
			w.whole = time.AfterFunc(b.idle, func() {
				w.slow.Store(true)
				w.fired.Store(true)
				w.cancel()
			})
		}
	}
	return resp, nil
}

// boundBody reads at most max bytes of a body, then fails.
type boundBody struct {
	rc        io.ReadCloser
	left, max int64
	what      string
}

func (b *boundBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, b.err()
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1] // one byte more than allowed tells "too large" from "exactly the limit"
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return n - 1, b.err()
	}
	return n, err
}

func (b *boundBody) err() error {
	return fmt.Errorf("the server's answer to %s is larger than %d bytes, the most the CLI reads of one answer", b.what, b.max)
}

func (b *boundBody) Close() error { return b.rc.Close() }

// sseBoundBody passes an event stream through and fails when one message
// (the bytes between two blank lines) passes max bytes; a stream of any
// length made of messages within it goes on. Lines end as the event
// stream format says, and as sdk/client reads them: at a carriage return,
// a line feed, or a carriage return and line feed together.
type sseBoundBody struct {
	rc     io.ReadCloser
	max    int64
	n      int64 // bytes of the message being read
	ended  bool  // the last byte ended a line
	lastCR bool  // the last byte was a carriage return (a line feed after it is part of its line end)
	what   string
}

func (s *sseBoundBody) Read(p []byte) (int, error) {
	n, err := s.rc.Read(p)
	for i, c := range p[:n] {
		if s.n++; s.n > s.max {
			return i, fmt.Errorf("the server's event stream %s sent a message larger than %d bytes, the most the CLI reads of one message", s.what, s.max)
		}
		switch {
		case c == '\n' && s.lastCR:
			s.lastCR = false // the second half of a CR LF
		case c == '\n' || c == '\r':
			if s.ended {
				s.n = 0 // a blank line: the message ends with this byte
			}
			s.ended, s.lastCR = true, c == '\r'
		default:
			s.ended, s.lastCR = false, false
		}
	}
	return n, err
}

func (s *sseBoundBody) Close() error { return s.rc.Close() }

// idleWatch cancels one round trip once the server has moved nothing for
// idle: until the answer's headers, neither taken a byte of the request
// body nor answered; after them, sent nothing while the CLI waited in a
// read of the answer.
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

// touch restarts the wait: something moved.
func (w *idleWatch) touch() { w.t.Reset(w.idle) }

// stop ends the watch and the round trip's context.
func (w *idleWatch) stop() {
	w.t.Stop()
	if w.whole != nil {
		w.whole.Stop()
	}
	w.cancel()
}

func (w *idleWatch) err() error {
	if w.slow.Load() {
		return fmt.Errorf("the server's answer to %s did not arrive whole within %s of its headers (--timeout, BATPAK_TIMEOUT)", w.what, w.idle)
	}
	return fmt.Errorf("the server sent nothing for %s during %s (--timeout, BATPAK_TIMEOUT)", w.idle, w.what)
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
		p.w.t.Reset(p.w.idle) // the CLI waits on the server from now
	}
	n, err := p.rc.Read(b)
	if p.answer {
		p.w.t.Stop()
	}
	if p.w.fired.Load() {
		return n, p.w.err()
	}
	if n > 0 && !p.answer && !p.w.answered.Load() {
		p.w.touch()
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
