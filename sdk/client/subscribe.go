package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// From is where a subscription starts.
type From struct{ after *uint64 }

// FromStart starts a subscription at the region's first event.
func FromStart() From { return From{} }

// After starts a subscription with the first event whose global sequence
// is greater than seq (the last one a consumer saw).
func After(seq uint64) From { return From{after: &seq} }

// DefaultReconnectFor is Options.ReconnectFor's default.
const DefaultReconnectFor = 2 * time.Minute

// maxBrokenStreams bounds the connections in a row a subscription makes
// that end within brokenStream, with no event and no reason from the
// server (what a server sending something the client cannot read does
// each time): past it the subscription ends with the last one's error.
const (
	maxBrokenStreams = 8
	brokenStream     = 10 * time.Second
)

// Subscription follows a region of a tenant over Server-Sent Events. It
// reconnects on its own (after a dropped connection, a stream silent for
// StreamIdleTimeout, a slow-consumer cut-off or a server shutdown or
// restart), resuming after the last event it yielded, so its events never
// skip or repeat. Not safe for concurrent iteration.
type Subscription struct {
	t      *Tenant
	q      Query
	ctx    context.Context
	cancel context.CancelFunc // ends ctx: Close

	mu     sync.Mutex
	last   *uint64 // global sequence of the last event yielded
	body   io.ReadCloser
	closed bool
}

// Subscribe follows the events of q (its Entity, Scope, Kind and
// Category; After and Limit are ignored: from says where to start) from
// from, then live, until ctx ends or Close. Close it when done with it,
// also after its Events ended: until then it holds a context derived
// from ctx.
func (t *Tenant) Subscribe(ctx context.Context, q Query, from From) *Subscription {
	q.After, q.Limit = nil, 0
	ctx, cancel := context.WithCancel(ctx)
	return &Subscription{t: t, q: q, ctx: ctx, cancel: cancel, last: from.after}
}

// Position returns the global sequence of the last event yielded (ok
// false before the first, when the subscription started from the start).
// Pass it to After to resume elsewhere.
func (s *Subscription) Position() (seq uint64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil {
		return 0, false
	}
	return *s.last, true
}

// Close ends the subscription and releases what it holds; an iteration
// in progress returns, also from a wait between connections.
func (s *Subscription) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.cancel()
	if s.body != nil {
		s.body.Close()
	}
}

// Events yields the subscription's events, reconnecting as needed: at
// once after a connection that delivered events for a second or more;
// otherwise after a wait that doubles from 50 ms up to 2 s (up to
// 400 ms while the server says it is going away: a shutdown or a
// cut-off), or the server's Retry-After when it gave one. It ends with
// one error when the context ends (ctx.Err()), when the server refuses
// the subscription (an *Error that retrying cannot fix, such as
// UNAUTHENTICATED or FORBIDDEN), when no connection has brought anything
// (an event, or a stream that lasted 10 s) for Options.ReconnectFor (2
// minutes by default) or the server's Retry-After would take it past
// that (the Retry-After is in the error), or when 8 connections in a row ended at once without an event or
// a reason (a server sending what the client cannot read); and without
// one after Close. To go on after an error, subscribe again with
// After(Position()).
func (s *Subscription) Events() iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		quiet := 0  // attempts in a row that brought nothing (the wait's exponent)
		broken := 0 // connections in a row that ended at once, with nothing and no reason
		var last error
		useful := time.Now() // the end of the last connection that brought something
		window := s.t.c.reconnectFor
		for {
			if s.isClosed() {
				return
			}
			if err := s.ctx.Err(); err != nil {
				if !s.isClosed() {
					yield(Event{}, err)
				}
				return
			}
			if quiet > 0 {
				wait := backoff(quiet, last)
				var pe *Error
				asked := errors.As(last, &pe) && pe.RetryAfter > 0
				if asked {
					wait = pe.RetryAfter // a subscription waits as long as the server asks
				}
				if left := window - time.Since(useful); window > 0 && asked && wait > left {
					yield(Event{}, fmt.Errorf("client: subscription gave up: the server asks to be asked again in %s, past the %s left of Options.ReconnectFor (%s): %w", wait, left.Round(time.Millisecond), window, last))
					return
				} else if window > 0 && left <= 0 {
					yield(Event{}, fmt.Errorf("client: subscription gave up: nothing from the server for %s (Options.ReconnectFor): %w", window, last))
					return
				} else if window > 0 {
					wait = min(wait, left) // one last try as the window ends
				}
				if err := sleep(s.ctx, wait); err != nil {
					if !s.isClosed() {
						yield(Event{}, err)
					}
					return
				}
			}
			began := time.Now()
			r, err := s.stream(yield)
			if errors.Is(err, errStop) || s.isClosed() {
				return
			}
			lasted := time.Since(began)
			var pe *Error
			if errors.As(err, &pe) && !retryable(pe) || errors.Is(err, errMessageTooLarge) {
				yield(Event{}, err)
				return
			}
			if r.delivered || r.connected && lasted >= brokenStream {
				useful = time.Now()
			}
			switch {
			case r.connected && !r.delivered && !r.goingAway && lasted < brokenStream:
				broken++
			case r.connected:
				broken = 0
			}
			switch {
			case r.delivered && lasted >= time.Second:
				quiet = 0
			case r.delivered, r.connected && lasted >= brokenStream:
				quiet = 1 // a short connection, or a long one that ended: back shortly
			case r.goingAway:
				quiet = min(quiet+1, 4) // going away again at once: up to about 400 ms
			default:
				quiet = min(quiet+1, maxBackoffExponent)
			}
			if broken >= maxBrokenStreams {
				yield(Event{}, fmt.Errorf("client: subscription gave up: the server ended %d connections in a row at once, without an event or a reason: %w", broken, err))
				return
			}
			last = err
		}
	}
}

// streamResult is what one connection of a subscription did.
type streamResult struct {
	connected bool // the server accepted the subscription
	delivered bool // it yielded an event
	goingAway bool // the server said it ends the stream (shutdown, cut-off)
}

var errStop = errors.New("stop")

// errMessageTooLarge ends a subscription: a server that sent one message
// past the bound would send it again on every reconnection.
var errMessageTooLarge = errors.New("client: the server's event stream sent a message")

func (s *Subscription) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// stream runs one connection until it ends, yielding its events.
func (s *Subscription) stream(yield func(Event, error) bool) (r streamResult, err error) {
	req := request{method: "GET", path: s.t.path("/subscribe"), query: s.q.values(), accept: "text/event-stream"}
	s.mu.Lock()
	if s.last != nil {
		req.header = http.Header{"Last-Event-Id": {strconv.FormatUint(*s.last, 10)}}
	}
	s.mu.Unlock()
	resp, err := s.t.c.once(s.ctx, req)
	if err != nil {
		return r, err
	}
	r.connected = true
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		resp.Body.Close()
		return r, errStop
	}
	s.body = resp.Body
	s.mu.Unlock()
	defer resp.Body.Close()

	err = readSSE(resp.Body, s.t.c.maxResp, func(m sseMessage) error {
		switch m.event {
		case "", "event":
			var ev Event
			if err := json.Unmarshal(m.data, &ev); err != nil {
				return fmt.Errorf("client: subscription event: %w", err)
			}
			s.mu.Lock()
			dup := s.last != nil && ev.GlobalSequence <= *s.last
			if !dup {
				seq := ev.GlobalSequence
				s.last = &seq
			}
			s.mu.Unlock()
			if dup {
				return nil // never repeat, whatever the server sends
			}
			r.delivered = true
			if !yield(ev, nil) {
				return errStop
			}
		case "cutoff", "shutdown":
			r.goingAway = true
			return io.EOF // reconnect from our own position
		}
		return nil
	})
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return r, err
}

// sseLines returns a bufio.SplitFunc for event stream lines: each ends at
// a line feed, a carriage return, or a carriage return and a line feed.
// A line ended by a carriage return is returned at once (a message is not
// held back until the server sends its next byte); a line feed right
// after it is then skipped as the rest of that line end.
func sseLines() bufio.SplitFunc {
	skipLF := false
	return func(data []byte, atEOF bool) (advance int, token []byte, err error) {
		skip := 0
		if skipLF && len(data) > 0 {
			skipLF = false
			if data[0] == '\n' {
				skip, data = 1, data[1:]
			}
		}
		i := bytes.IndexAny(data, "\r\n")
		switch {
		case i < 0:
			if atEOF && len(data) > 0 {
				return skip + len(data), data, nil
			}
			return skip, nil, nil
		case data[i] == '\n':
			return skip + i + 1, data[:i], nil
		case i+1 < len(data):
			if data[i+1] == '\n' {
				return skip + i + 2, data[:i], nil
			}
			return skip + i + 1, data[:i], nil
		default:
			skipLF = true
			return skip + i + 1, data[:i], nil
		}
	}
}

// sseMessage is one dispatched Server-Sent Event.
type sseMessage struct {
	id, event string
	data      []byte
}

// readSSE parses an event stream (the WHATWG format: "field: value" lines
// ending at a line feed, a carriage return or both, a blank line
// dispatches, ":" lines are comments) and calls each per message until the
// stream ends or each fails. A message (its data) is bounded at max bytes,
// a line at 64 MiB.
func readSSE(r io.Reader, max int64, each func(sseMessage) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	sc.Split(sseLines())
	var m sseMessage
	var data bytes.Buffer
	hasData := false
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			if hasData {
				m.data = bytes.Clone(data.Bytes())
				if err := each(m); err != nil {
					return err
				}
			}
			m, hasData = sseMessage{}, false
			data.Reset()
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "id":
			m.id = string(value)
		case "event":
			m.event = string(value)
		case "data":
			size := data.Len() + len(value)
			if hasData {
				size++ // the line feed joining it to the data before
			}
			if int64(size) > max {
				return fmt.Errorf("%w: larger than %d bytes (Options.MaxResponseBytes)", errMessageTooLarge, max)
			}
			if hasData {
				data.WriteByte('\n')
			}
			data.Write(value)
			hasData = true
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return nil
}
