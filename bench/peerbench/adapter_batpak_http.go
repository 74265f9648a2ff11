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
// directly (request written with one write, response read with
// http.ReadResponse): the load generator shares the 2 CPUs with the
// server, and net/http's Transport spends two goroutine hand-offs per
// request on top of the same bytes on the wire.
type rawConn struct {
	c   net.Conn
	br  *bufio.Reader
	buf []byte
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
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		return fail(err)
	}
	out, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return fail(err)
	}
	if resp.Close {
		rc.c.Close()
		s.conns[p] = nil
	}
	if resp.StatusCode == 409 {
		return nil, errors.Join(ErrConflict, fmt.Errorf("%s", out))
	}
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("batpak-http: POST %s: %d %s", path, resp.StatusCode, out)
	}
	return out, nil
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
		"quotas": map[string]any{"events_per_second": -1, "bytes_per_second": -1, "storage_bytes": -1}}); err != nil {
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

func (s *batpakHTTP) expect(p int, entity string) any {
	if v := s.last[p][entity]; v > 0 {
		return v - 1
	}
	return "no_events"
}

func kindOf(k uint16) string { return "1:" + strconv.Itoa(int(k)+1) }

// appendItem writes one append request's JSON object to b.
func appendItem(b []byte, entity string, kind uint16, payload []byte, expect any) []byte {
	b = append(b, `{"entity":`...)
	b = strconv.AppendQuote(b, entity)
	b = append(b, `,"scope":"bench","kind":"`...)
	b = append(b, kindOf(kind)...)
	b = append(b, `","payload":`...)
	b = append(b, payload...)
	switch e := expect.(type) {
	case uint64:
		b = append(b, `,"expected_clock":`...)
		b = strconv.AppendUint(b, e, 10)
	case string:
		b = append(b, `,"expected_clock":"`...)
		b = append(b, e...)
		b = append(b, '"')
	}
	return append(b, '}')
}

func (s *batpakHTTP) Append(ctx context.Context, p int, entity string, kind uint16, payload []byte) error {
	body := appendItem(make([]byte, 0, 96+len(payload)), entity, kind, payload, s.expect(p, entity))
	out, err := s.post(p, "/v1/tenants/bench/events", body)
	if err != nil {
		return err
	}
	var r struct {
		Clock uint64 `json:"clock"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return err
	}
	s.last[p][entity] = r.Clock + 1
	return nil
}

func (s *batpakHTTP) AppendBatch(ctx context.Context, p int, entity string, events []Event) error {
	body := make([]byte, 0, 32+len(events)*200)
	body = append(body, `{"events":[`...)
	for i, e := range events {
		if i > 0 {
			body = append(body, ',')
		}
		var expect any
		if i == 0 {
			expect = s.expect(p, entity)
		}
		body = appendItem(body, entity, e.Kind, e.Payload, expect)
	}
	body = append(body, "]}"...)
	out, err := s.post(p, "/v1/tenants/bench/batches", body)
	if err != nil {
		return err
	}
	var r struct {
		Receipts []struct {
			Clock uint64 `json:"clock"`
		} `json:"receipts"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return err
	}
	if len(r.Receipts) != len(events) {
		return fmt.Errorf("batpak-http: %d receipts for %d items", len(r.Receipts), len(events))
	}
	if n := len(r.Receipts); n > 0 {
		s.last[p][entity] = r.Receipts[n-1].Clock + 1
	}
	return nil
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
