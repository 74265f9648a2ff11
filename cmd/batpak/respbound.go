package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"mime"
	"net/http"
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

// defaultServerIdle is remote.timeout's default (client.Options.
// IdleTimeout): how long the CLI waits for a server that sends nothing —
// the answer's headers once the request is sent (verify, import and
// uploads wait for the server's work), the next bytes of a request body
// the server stopped reading, or of an answer — and the most each MiB of
// a JSON answer (read whole) may take. An event stream is watched at 45 s
// (client.StreamIdleTimeout) whatever it is.
const defaultServerIdle = 5 * time.Minute

// boundedTransport wraps the HTTP transport the CLI's server client uses:
// it bounds the response bodies it returns (see maxServerMessageBytes).
// The client ends a round trip during which the server sent nothing for
// remote.timeout (client.Options.IdleTimeout).
type boundedTransport struct {
	rt  http.RoundTripper
	max int64
}

// newBoundedTransport is the CLI's transport; roots, when not nil, verify
// an https server's certificate (remote.ca_file's CA with the system's
// roots, see certroots.Load).
func newBoundedTransport(roots *x509.CertPool) *boundedTransport {
	rt := http.DefaultTransport.(*http.Transport).Clone()
	// A batpak server never compresses its answers: asking for gzip would
	// only let a hostile one send a small body that inflates.
	rt.DisableCompression = true
	if roots != nil {
		rt.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	return &boundedTransport{rt: rt, max: maxServerMessageBytes}
}

// RoundTrip implements http.RoundTripper.
func (b *boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	what := req.Method + " " + req.URL.Path
	resp, err := b.rt.RoundTrip(req)
	if err != nil || resp.Body == nil {
		return resp, err
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
