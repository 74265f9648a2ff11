package main

import (
	"fmt"
	"io"
	"mime"
	"net/http"
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

// boundedTransport wraps the HTTP transport the CLI's server client uses
// and bounds the response bodies it returns (see maxServerMessageBytes).
type boundedTransport struct {
	rt  http.RoundTripper
	max int64
}

func newBoundedTransport() *boundedTransport {
	return &boundedTransport{rt: http.DefaultTransport.(*http.Transport).Clone(), max: maxServerMessageBytes}
}

// RoundTrip implements http.RoundTripper.
func (b *boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := b.rt.RoundTrip(req)
	if err != nil || resp.Body == nil {
		return resp, err
	}
	what := req.Method + " " + req.URL.Path
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
// length made of messages within it goes on.
type sseBoundBody struct {
	rc     io.ReadCloser
	max    int64
	n      int64 // bytes of the message being read
	lastNL bool  // the last byte (carriage returns aside) was a line feed
	what   string
}

func (s *sseBoundBody) Read(p []byte) (int, error) {
	n, err := s.rc.Read(p)
	for i, c := range p[:n] {
		if s.n++; s.n > s.max {
			return i, fmt.Errorf("the server's event stream %s sent a message larger than %d bytes, the most the CLI reads of one message", s.what, s.max)
		}
		switch c {
		case '\r':
		case '\n':
			if s.lastNL {
				s.n = 0 // a blank line: the message ends with this byte
			}
			s.lastNL = true
		default:
			s.lastNL = false
		}
	}
	return n, err
}

func (s *sseBoundBody) Close() error { return s.rc.Close() }
