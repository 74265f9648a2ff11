// This file is an adapter for the peerbench harness in ../shared/peerbench
// (see run.sh here): it is copied into the harness's directory and built
// with it, never with this module, which is why it lives under bench/
// with a build tag.

//go:build peerbench

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

func init() { register("batpak-http", func() Store { return &batpakHTTP{} }) }

// batpakHTTP is `batpak serve` (the binary named by $BATPAK_BIN) started as
// a child process for every run, on a loopback port, with one tenant; the
// producers append over HTTP/1.1 keep-alive connections (one per
// producer, driven directly: see rawConn), each event one POST /v1/tenants/bench/events with
// expected_clock (optimistic concurrency, like the other adapters), each
// batch one POST /v1/tenants/bench/batches. Durable = the tenant's
// default sync setting ("durable": a 2xx after fdatasync, group commit
// across requests); Buffered = tenant setting "buffered".
type batpakHTTP struct {
	cmd   *exec.Cmd
	base  string
	key   string
	hc    *http.Client
	last  []map[string]uint64 // per producer: entity -> last clock + 1
	conns []*rawConn          // per producer: one keep-alive connection
	addr  string
}

// rawConn is one producer's HTTP/1.1 keep-alive connection, driven
// directly (request written with one write, response read by
// readResponse): the load generator shares the 2 CPUs with the
// server, and net/http's Transport spends two goroutine hand-offs per
// request on top of the same bytes on the wire.
type rawConn struct {
	c    net.Conn
	br   *bufio.Reader
	buf  []byte
	body []byte // the producer's request body, built in place
}

func (s *batpakHTTP) conn(p int) (*rawConn, error) {
	if rc := s.conns[p]; rc != nil {
		return rc, nil
	}
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		return nil, err
	}
	rc := &rawConn{c: c, br: bufio.NewReaderSize(c, 64<<10)}
	s.conns[p] = rc
	return rc, nil
}

// post sends body to path on producer p's connection and returns the
// response body (an error for a status past 299; ErrConflict for 409).
// The body shares the connection's buffer: it is good until the next post
// on the connection.
func (s *batpakHTTP) post(p int, path string, body []byte) ([]byte, error) {
	rc, err := s.conn(p)
	if err != nil {
		return nil, err
	}
	b := rc.buf[:0]
	b = append(b, "POST "...)
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer "...)
	b = append(b, s.key...)
	b = append(b, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	rc.buf = b
	fail := func(err error) ([]byte, error) {
		rc.c.Close()
		s.conns[p] = nil
		return nil, err
	}
	if _, err := rc.c.Write(b); err != nil {
		return fail(err)
	}
	status, out, closing, err := rc.readResponse()
	if err != nil {
		return fail(err)
	}
	if closing {
		rc.c.Close()
		s.conns[p] = nil
	}
	if status == 409 {
		return nil, errors.Join(ErrConflict, fmt.Errorf("%s", out))
	}
	if status >= 300 {
		return nil, fmt.Errorf("batpak-http: POST %s: %d %s", path, status, out)
	}
	return out, nil
}

// readResponse reads one HTTP/1.1 response with a Content-Length (every
// answer of the routes measured has one): its status, body (in rc's read
// buffer, good until the next read) and whether the server closes the
// connection. A lean parser, as the other adapters' clients are: the load
// generator shares the CPUs with the server it measures.
func (rc *rawConn) readResponse() (status int, body []byte, closing bool, err error) {
	line, err := rc.br.ReadSlice('\n')
	if err != nil {
		return 0, nil, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, nil, false, fmt.Errorf("batpak-http: bad status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, false, fmt.Errorf("batpak-http: bad status line %q", line)
	}
	length := -1
	for {
		line, err = rc.br.ReadSlice('\n')
		if err != nil {
			return 0, nil, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, nil, false, fmt.Errorf("batpak-http: bad header %q", line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil {
				return 0, nil, false, fmt.Errorf("batpak-http: bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Connection")):
			closing = bytes.EqualFold(value, []byte("close"))
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return 0, nil, false, fmt.Errorf("batpak-http: unexpected Transfer-Encoding %q", value)
		}
	}
	if length < 0 {
		return 0, nil, false, errors.New("batpak-http: response without Content-Length")
	}
	if length > rc.br.Size() {
		body = make([]byte, length)
		_, err = io.ReadFull(rc.br, body)
		return status, body, closing, err
	}
	if body, err = rc.br.Peek(length); err != nil {
		return 0, nil, false, err
	}
	_, _ = rc.br.Discard(length)
	return status, body, closing, nil
}

const benchOperator = "bpko_peerbenchoperatortokenpeerbenchoperatortokenpeerbenc"

func (s *batpakHTTP) Name() string { return "batpak-http" }

func (s *batpakHTTP) Describe() string {
	return "batpak serve over loopback HTTP/1.1 keep-alive (one connection per producer), one tenant, platform policy none; durable tenant sync = fdatasync per group commit"
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (s *batpakHTTP) Open(ctx context.Context, o OpenOptions) error {
	bin := os.Getenv("BATPAK_BIN")
	if bin == "" {
		return errors.New("batpak-http: set BATPAK_BIN to a batpak binary (run.sh does)")
	}
	addr, err := freePort()
	if err != nil {
		return err
	}
	s.cmd = exec.Command(bin, "serve", "--root", o.Dir, "--listen", addr, "--access-log", "off")
	s.cmd.Env = append(os.Environ(), "BATPAK_OPERATOR_TOKEN="+benchOperator)
	s.cmd.Stdout, s.cmd.Stderr = os.Stderr, os.Stderr
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.base = "http://" + addr
	s.addr = addr
	s.hc = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.Producers + 4, MaxConnsPerHost: o.Producers + 4}}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := s.hc.Get(s.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("batpak-http: server not ready at %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	sync := "durable"
	if o.Mode == Buffered {
		sync = "buffered"
	}
	if _, err := s.call(ctx, benchOperator, "POST", "/v1/admin/tenants", map[string]any{"id": "bench", "settings": map[string]string{"sync": sync},
		"quotas": map[string]any{"events_per_second": -1, "bytes_per_second": -1, "requests_per_second": -1, "storage_bytes": -1}}); err != nil {
		return err
	}
	out, err := s.call(ctx, benchOperator, "POST", "/v1/admin/tenants/bench/keys", map[string]any{"name": "bench", "roles": []string{"writer"}})
	if err != nil {
		return err
	}
	var k struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(out, &k); err != nil || k.Key == "" {
		return fmt.Errorf("batpak-http: key: %v %s", err, out)
	}
	s.key = k.Key
	s.last = make([]map[string]uint64, o.Producers)
	s.conns = make([]*rawConn, o.Producers)
	for i := range s.last {
		s.last[i] = map[string]uint64{}
	}
	return nil
}

func (s *batpakHTTP) call(ctx context.Context, token, method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(ctx, method, s.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == 409 {
		return nil, errors.Join(ErrConflict, fmt.Errorf("%s", out))
	}
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("batpak-http: %s %s: %d %s", method, path, resp.StatusCode, out)
	}
	return out, nil
}

// expect is the expected_clock of producer p's next append to entity:
// its last clock, or none yet ("no_events").
func (s *batpakHTTP) expect(p int, entity string) (clock uint64, known bool) {
	if v := s.last[p][entity]; v > 0 {
		return v - 1, true
	}
	return 0, false
}

// appendItem writes one append request's JSON object to b; expect says
// whether to write expected_clock, known whether it is clock (or
// "no_events").
func appendItem(b []byte, entity string, kind uint16, payload []byte, expect, known bool, clock uint64) []byte {
	b = append(b, `{"entity":`...)
	b = strconv.AppendQuote(b, entity)
	b = append(b, `,"scope":"bench","kind":"1:`...)
	b = strconv.AppendUint(b, uint64(kind)+1, 10)
	b = append(b, `","payload":`...)
	b = append(b, payload...)
	switch {
	case expect && known:
		b = append(b, `,"expected_clock":`...)
		b = strconv.AppendUint(b, clock, 10)
	case expect:
		b = append(b, `,"expected_clock":"no_events"`...)
	}
	return append(b, '}')
}

// body returns producer p's request body buffer, emptied.
func (s *batpakHTTP) body(p int) ([]byte, error) {
	rc, err := s.conn(p)
	if err != nil {
		return nil, err
	}
	return rc.body[:0], nil
}

// keepBody keeps a grown body buffer for producer p's next request (post
// copies the body before it returns).
func (s *batpakHTTP) keepBody(p int, b []byte) {
	if rc := s.conns[p]; rc != nil {
		rc.body = b
	}
}

func (s *batpakHTTP) Append(ctx context.Context, p int, entity string, kind uint16, payload []byte) error {
	body, err := s.body(p)
	if err != nil {
		return err
	}
	clock, known := s.expect(p, entity)
	body = appendItem(body, entity, kind, payload, true, known, clock)
	s.keepBody(p, body)
	out, err := s.post(p, "/v1/tenants/bench/events", body)
	if err != nil {
		return err
	}
	clock, _, err = lastClock(out)
	if err != nil {
		return err
	}
	s.last[p][entity] = clock + 1
	return nil
}

func (s *batpakHTTP) AppendBatch(ctx context.Context, p int, entity string, events []Event) error {
	body, err := s.body(p)
	if err != nil {
		return err
	}
	body = append(body, `{"events":[`...)
	clock, known := s.expect(p, entity)
	for i, e := range events {
		if i > 0 {
			body = append(body, ',')
		}
		body = appendItem(body, entity, e.Kind, e.Payload, i == 0, known, clock)
	}
	body = append(body, "]}"...)
	s.keepBody(p, body)
	out, err := s.post(p, "/v1/tenants/bench/batches", body)
	if err != nil {
		return err
	}
	clock, n, err := lastClock(out)
	if err != nil {
		return err
	}
	if n != len(events) {
		return fmt.Errorf("batpak-http: %d receipts for %d items", n, len(events))
	}
	s.last[p][entity] = clock + 1
	return nil
}

// lastClock reads a receipt (or a batch's receipts) as the server writes
// them: the last "clock" member's value and how many receipts there are.
func lastClock(out []byte) (clock uint64, n int, err error) {
	key := []byte(`"clock":`)
	for rest := out; ; {
		i := bytes.Index(rest, key)
		if i < 0 {
			break
		}
		rest = rest[i+len(key):]
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		if clock, err = strconv.ParseUint(string(rest[:j]), 10, 64); err != nil {
			return 0, 0, fmt.Errorf("batpak-http: receipt %s: %v", out, err)
		}
		n++
	}
	if n == 0 {
		return 0, 0, fmt.Errorf("batpak-http: no receipt in %s", out)
	}
	return clock, n, nil
}

func (s *batpakHTTP) Counters(ctx context.Context) (map[string]float64, error) {
	out, err := s.call(ctx, s.key, "GET", "/v1/tenants/bench/stats", nil)
	if err != nil {
		return nil, err
	}
	var st struct {
		Fsyncs float64 `json:"fsyncs"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, err
	}
	return map[string]float64{"syncs": st.Fsyncs}, nil
}

func (s *batpakHTTP) Close() error {
	for i, rc := range s.conns {
		if rc != nil {
			rc.c.Close()
			s.conns[i] = nil
		}
	}
	if s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		s.cmd = nil
		return err
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
		s.cmd = nil
		return errors.New("batpak-http: server did not stop within 30s of SIGTERM")
	}
}
