//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/batpak-go/batpak/internal/casmodel"

	"github.com/batpak-go/batpak/server/auth"
)

// A real three-process cluster: `batpak serve --cluster` children on
// loopback TCP (raft between them, HTTP to them), faults injected with
// signals (kill -9, SIGSTOP/SIGCONT) and by wiping a node's data root,
// while HTTP clients append and read through any node.
//
// BATPAK_CLUSTER_PROCESS_ROUNDS sets the number of fault rounds (default
// 4); BATPAK_CLUSTER_PROCESS_SEED the seed (default: the clock), so a
// failure replays with the seed it logs.

// procNode is one cluster node: fixed API and raft ports (a restarted node
// keeps its raft address and its URL), its own data root.
type procNode struct {
	id     string
	root   string
	api    int
	raft   int
	base   string
	child  *procChild
	paused bool
	logs   procLogs
	// started: n ran once, so its ports are the cluster's to keep (its
	// raft address is a member's).
	started bool
}

// procChild is a running `batpak serve` child process; logs is its
// node's stderr over every start.
type procChild struct {
	cmd  *exec.Cmd
	done chan error
	logs *procLogs
}

// procLogs keeps the last lines a node wrote, across restarts.
type procLogs struct {
	mu    sync.Mutex
	lines []string
}

func (l *procLogs) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	if len(l.lines) > 2000 {
		l.lines = append([]string(nil), l.lines[1000:]...)
	}
}

func (l *procLogs) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines[max(0, len(l.lines)-n):], "\n")
}

func (c *procChild) tail(n int) string { return c.logs.tail(n) }

// procCluster is the test's handle on three nodes.
type procCluster struct {
	t     *testing.T
	op    string
	admin string // the tenant's admin key, once setupProcTenant made it
	nodes []*procNode
	http  *http.Client
}

// freePort is a loopback TCP port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// newProcCluster starts n1 (bootstrap), then n2 and n3 joining through
// n1, with 300 ms raft timings, and waits for three members and a leader.
func newProcCluster(t *testing.T) *procCluster {
	t.Helper()
	dir := isolate(t)
	t.Setenv("BATPAK_SERVER_CLUSTER_HEARTBEAT_TIMEOUT", "300ms")
	t.Setenv("BATPAK_SERVER_CLUSTER_ELECTION_TIMEOUT", "300ms")
	t.Setenv("BATPAK_SERVER_CLUSTER_LEADER_LEASE_TIMEOUT", "300ms")
	op, _, _ := auth.NewOperatorToken()
	pc := &procCluster{t: t, op: op, http: &http.Client{
		Timeout:       3 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{MaxIdleConnsPerHost: 16, DisableKeepAlives: false},
	}}
	for i := 1; i <= 3; i++ {
		n := &procNode{id: fmt.Sprintf("n%d", i), root: filepath.Join(dir, fmt.Sprintf("n%d", i)), api: freePort(t), raft: freePort(t)}
		n.base = fmt.Sprintf("http://127.0.0.1:%d", n.api)
		pc.nodes = append(pc.nodes, n)
	}
	t.Cleanup(func() {
		for _, n := range pc.nodes {
			if n.child != nil {
				_ = n.child.cmd.Process.Kill()
				<-n.child.done
			}
		}
		if t.Failed() {
			for _, n := range pc.nodes {
				t.Logf("--- %s log tail:\n%s", n.id, n.logs.tail(60))
			}
		}
	})
	pc.start(pc.nodes[0], "--cluster-bootstrap")
	pc.waitLeader(20 * time.Second)
	pc.start(pc.nodes[1], "--cluster-join", pc.nodes[0].base)
	pc.start(pc.nodes[2], "--cluster-join", pc.nodes[0].base)
	pc.waitHealthy(30 * time.Second)
	return pc
}

// start runs `batpak serve --cluster` for n and waits until it listens.
// At a node's first start, a port freePort chose that another process
// took meanwhile (tests run in parallel) is replaced and the start tried
// again; a restarted node keeps its ports.
func (pc *procCluster) start(n *procNode, extra ...string) {
	pc.t.Helper()
	for attempt := 1; ; attempt++ {
		err := pc.startOnce(n, extra...)
		if err == nil {
			n.started = true
			return
		}
		if n.started || attempt == 3 || !strings.Contains(n.logs.tail(5), "address already in use") {
			pc.t.Fatal(err)
		}
		n.api, n.raft = freePort(pc.t), freePort(pc.t)
		n.base = fmt.Sprintf("http://127.0.0.1:%d", n.api)
	}
}

// startOnce is one attempt of start: nil once n listens.
func (pc *procCluster) startOnce(n *procNode, extra ...string) error {
	t := pc.t
	t.Helper()
	args := append([]string{"serve", "--root", n.root, "--listen", fmt.Sprintf("127.0.0.1:%d", n.api), "--access-log", "off",
		"--cluster", "--cluster-node-id", n.id, "--cluster-bind", fmt.Sprintf("127.0.0.1:%d", n.raft)}, extra...)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join(args, "\x1f"), "BATPAK_OPERATOR_TOKEN="+pc.op)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &procChild{cmd: cmd, done: make(chan error, 1), logs: &n.logs}
	c.logs.add(fmt.Sprintf("--- start %s", strings.Join(extra, " ")))
	listening := make(chan struct{}, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			c.logs.add(sc.Text())
			if listeningRE.MatchString(sc.Text()) {
				select {
				case listening <- struct{}{}:
				default:
				}
			}
		}
		c.done <- cmd.Wait()
	}()
	select {
	case <-listening:
		n.child, n.paused = c, false
		return nil
	case err := <-c.done:
		return fmt.Errorf("%s: batpak serve exited before listening: %v\n%s", n.id, err, c.tail(40))
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("%s: batpak serve did not listen within 30s\n%s", n.id, c.tail(40))
	}
}

// kill sends SIGKILL to n and waits for it to exit.
func (pc *procCluster) kill(n *procNode) {
	if n.child == nil {
		return
	}
	_ = n.child.cmd.Process.Kill()
	<-n.child.done
	n.child, n.paused = nil, false
}

func (pc *procCluster) signal(n *procNode, sig syscall.Signal) {
	if err := n.child.cmd.Process.Signal(sig); err != nil {
		pc.t.Fatalf("%s: %v: %v", n.id, sig, err)
	}
	n.paused = sig == syscall.SIGSTOP
}

// live are the nodes running and not paused.
func (pc *procCluster) live() []*procNode {
	var out []*procNode
	for _, n := range pc.nodes {
		if n.child != nil && !n.paused {
			out = append(out, n)
		}
	}
	return out
}

// status is GET /v1/cluster on n (nil if n does not answer).
func (pc *procCluster) status(n *procNode) map[string]any {
	st, body, _, err := pc.send(context.Background(), "GET", n.base+"/v1/cluster", pc.op, nil, nil, false)
	if err != nil || st != 200 {
		return nil
	}
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	return m
}

// waitLeader returns the node that leads, as the live nodes agree.
func (pc *procCluster) waitLeader(within time.Duration) *procNode {
	pc.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for _, n := range pc.live() {
			if st := pc.status(n); st != nil && st["state"] == "leader" {
				return n
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	pc.t.Fatalf("no leader within %s", within)
	return nil
}

// waitHealthy waits until every node runs, they agree on one leader
// whose URL they know, and each counts three voters.
func (pc *procCluster) waitHealthy(within time.Duration) *procNode {
	pc.t.Helper()
	deadline := time.Now().Add(within)
	var last []string
	for time.Now().Before(deadline) {
		last = last[:0]
		leaders := map[string]bool{}
		ok := true
		for _, n := range pc.nodes {
			st := pc.status(n)
			if st == nil {
				ok = false
				last = append(last, n.id+": no answer")
				continue
			}
			ld, _ := st["leader"].(map[string]any)
			lid, _ := ld["id"].(string)
			ms, _ := st["members"].([]any)
			urls := 0
			for _, m := range ms {
				if u, _ := m.(map[string]any)["url"].(string); u != "" {
					urls++
				}
			}
			last = append(last, fmt.Sprintf("%s: %v leader %q, %d members (%d with URLs)", n.id, st["state"], lid, len(ms), urls))
			if lid == "" || len(ms) != 3 || urls != 3 {
				ok = false
			}
			leaders[lid] = true
		}
		if ok && len(leaders) == 1 {
			for _, n := range pc.nodes {
				if leaders[n.id] {
					return n
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	pc.t.Fatalf("cluster not healthy within %s: %s", within, strings.Join(last, "; "))
	return nil
}

// send makes one request; with follow, it re-sends it (same headers and
// body: every node is trusted with the credential) to the Location of
// up to four 307 redirects.
func (pc *procCluster) send(ctx context.Context, method, target, token string, hdr http.Header, body []byte, follow bool) (int, []byte, http.Header, error) {
	for hop := 0; ; hop++ {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, target, rd)
		if err != nil {
			return 0, nil, nil, err
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := pc.http.Do(req)
		if err != nil {
			return 0, nil, nil, err
		}
		b, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
		res.Body.Close()
		if err != nil {
			return 0, nil, nil, err
		}
		if res.StatusCode == http.StatusTemporaryRedirect && follow && hop < 4 {
			loc, err := url.Parse(res.Header.Get("Location"))
			if err != nil {
				return 0, nil, nil, fmt.Errorf("307 with Location %q: %v", res.Header.Get("Location"), err)
			}
			target = loc.String()
			continue
		}
		return res.StatusCode, b, res.Header, nil
	}
}

// problemCode is a problem response's code.
func problemCode(b []byte) string {
	var p struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(b, &p)
	return p.Code
}

// writeResult is the fate of one logical write (every attempt under its
// idempotency keys): acknowledged (2xx), refused (a 4xx), or unknown.
type writeResult struct {
	status int
	body   []byte
	maybe  bool // some attempt may have been applied
}

// write sends a write to random nodes until a definite answer or until
// giveUp passes, retrying the same body (the same idempotency keys) after
// NOT_LEADER, OUTCOME_UNKNOWN, BUSY, other 503s, 429 and transport
// errors. A 5xx other than 503 is reported through errs.
func (pc *procCluster) write(rng *rand.Rand, path, token string, hdr http.Header, body []byte, giveUp time.Time, errs func(string)) writeResult {
	var r writeResult
	for time.Now().Before(giveUp) {
		n := pc.nodes[rng.Intn(len(pc.nodes))]
		st, b, _, err := pc.send(context.Background(), "POST", n.base+path, token, hdr, body, true)
		switch {
		case err != nil:
			// Refused connections never reached a server; anything else
			// (a timeout on a paused node, a reset by a killed one) may
			// have been proposed.
			if !errors.Is(err, syscall.ECONNREFUSED) {
				r.maybe = true
			}
		case st/100 == 2:
			r.status, r.body = st, b
			return r
		case st == 503 && problemCode(b) == "NOT_LEADER", st == 429, st == http.StatusTemporaryRedirect:
			// Not proposed: retry (a 307 here: redirects went round while
			// the nodes' views of the leader differed).
		case st == 503:
			r.maybe = true
		case st >= 500:
			errs(fmt.Sprintf("POST %s via %s: %d %s", path, n.id, st, b))
			r.maybe = true
		default:
			r.status, r.body = st, b
			return r
		}
		time.Sleep(time.Duration(20+rng.Intn(60)) * time.Millisecond)
	}
	r.maybe = true
	return r
}

// keyFate is what the clients know of one idempotency key.
type keyFate struct {
	acked   bool
	refused bool
	id      string
	seq     uint64
	clock   uint64
}

// procHistory is what every client saw over the run.
type procHistory struct {
	mu   sync.Mutex
	keys map[string]*keyFate
	ops  []porcupine.Operation
	errs []string
	// counts
	acked, refused, unknown, localReads, linReads, retried int
}

func (h *procHistory) fail(s string) {
	h.mu.Lock()
	h.errs = append(h.errs, s)
	h.mu.Unlock()
}

func (h *procHistory) key(k string) *keyFate {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := &keyFate{}
	h.keys[k] = f
	return f
}

type wireReceipt struct {
	ID             string `json:"id"`
	GlobalSequence uint64 `json:"global_sequence"`
	Clock          uint64 `json:"clock"`
}

func (h *procHistory) acknowledge(f *keyFate, r wireReceipt) {
	h.mu.Lock()
	f.acked, f.id, f.seq, f.clock = true, r.ID, r.GlobalSequence, r.Clock
	h.acked++
	h.mu.Unlock()
}

// procClient is one client goroutine.
type procClient struct {
	pc     *procCluster
	h      *procHistory
	id     int
	rng    *rand.Rand
	writer string
	reader string
	tenant string
	round  *atomic.Int64
	stop   chan struct{}
	t0     time.Time
}

func (cl *procClient) stopped() bool {
	select {
	case <-cl.stop:
		return true
	case <-time.After(time.Duration(5+cl.rng.Intn(25)) * time.Millisecond):
		return false
	}
}

// giveUp: a write keeps retrying until 25 s after it began; the run stops
// clients only once the cluster is healed, so nearly every write gets a
// definite answer.
func giveUp() time.Time { return time.Now().Add(25 * time.Second) }

func (cl *procClient) now() int64 { return int64(time.Since(cl.t0)) }

// singles appends one event at a time under an Idempotency-Key header and
// reads each acknowledged one back on a random node with min_seq.
func (cl *procClient) singles() {
	for i := 0; !cl.stopped(); i++ {
		key := fmt.Sprintf("single-%d-%d", cl.id, i)
		f := cl.h.key(key)
		body := fmt.Appendf(nil, `{"entity":"single-%d","scope":"s","kind":"1:1","payload":{"i":%d}}`, cl.id, i)
		r := cl.pc.write(cl.rng, "/v1/tenants/"+cl.tenant+"/events", cl.writer, http.Header{"Idempotency-Key": {key}}, body, giveUp(), cl.h.fail)
		if !cl.settle(f, key, r) {
			continue
		}
		var rc wireReceipt
		if err := json.Unmarshal(r.body, &rc); err != nil {
			cl.h.fail(fmt.Sprintf("single %s: receipt %s: %v", key, r.body, err))
			continue
		}
		cl.h.acknowledge(f, rc)
		cl.readYourWrite(rc)
	}
}

// settle records a write's fate; true when acknowledged.
func (cl *procClient) settle(f *keyFate, key string, r writeResult) bool {
	cl.noteRetried(r)
	switch {
	case r.status/100 == 2:
		return true
	case r.status != 0:
		cl.h.fail(fmt.Sprintf("write %s refused: %d %s", key, r.status, r.body))
		cl.h.mu.Lock()
		f.refused = true
		cl.h.refused++
		cl.h.mu.Unlock()
	default:
		cl.h.mu.Lock()
		cl.h.unknown++
		cl.h.mu.Unlock()
	}
	return false
}

// noteRetried counts writes that got a definite answer after an attempt
// of unknown outcome (the idempotent retry decided them).
func (cl *procClient) noteRetried(r writeResult) {
	if r.maybe && r.status != 0 {
		cl.h.mu.Lock()
		cl.h.retried++
		cl.h.mu.Unlock()
	}
}

// readYourWrite reads an acknowledged event on a random node with
// min_seq=its sequence: the node must have it, or say it has not caught
// up (or not answer: it may be down or paused); a node that does not know
// the key yet redirects to the leader.
func (cl *procClient) readYourWrite(rc wireReceipt) {
	n := cl.pc.nodes[cl.rng.Intn(len(cl.pc.nodes))]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, b, _, err := cl.pc.send(ctx, "GET", fmt.Sprintf("%s/v1/tenants/%s/events/%s?min_seq=%d", n.base, cl.tenant, rc.ID, rc.GlobalSequence), cl.reader, nil, nil, true)
	switch {
	case err != nil, st == 503, st == http.StatusTemporaryRedirect:
	case st == 200:
		var ev struct {
			ID             string `json:"id"`
			GlobalSequence uint64 `json:"global_sequence"`
		}
		_ = json.Unmarshal(b, &ev)
		if ev.ID != rc.ID || ev.GlobalSequence != rc.GlobalSequence {
			cl.h.fail(fmt.Sprintf("read-your-writes on %s: event %s seq %d read back as %s", n.id, rc.ID, rc.GlobalSequence, b))
		}
		cl.h.mu.Lock()
		cl.h.localReads++
		cl.h.mu.Unlock()
	default:
		cl.h.fail(fmt.Sprintf("read-your-writes on %s: event %s with min_seq=%d: %d %s", n.id, rc.ID, rc.GlobalSequence, st, b))
	}
}

// batches appends atomic batches of 3 events, each with its own
// idempotency key in the body.
func (cl *procClient) batches() {
	for i := 0; !cl.stopped(); i++ {
		var items []string
		var fates []*keyFate
		var keys []string
		for j := range 3 {
			key := fmt.Sprintf("batch-%d-%d-%d", cl.id, i, j)
			keys = append(keys, key)
			fates = append(fates, cl.h.key(key))
			items = append(items, fmt.Sprintf(`{"entity":"batch-%d","scope":"s","kind":"1:2","payload":{"i":%d,"j":%d},"idempotency_key":%q}`, cl.id, i, j, key))
		}
		body := []byte(`{"events":[` + strings.Join(items, ",") + `]}`)
		r := cl.pc.write(cl.rng, "/v1/tenants/"+cl.tenant+"/batches", cl.writer, nil, body, giveUp(), cl.h.fail)
		if !cl.settle(fates[0], keys[0], r) {
			if r.status != 0 {
				cl.h.mu.Lock()
				for _, f := range fates[1:] {
					f.refused = true
				}
				cl.h.mu.Unlock()
			}
			continue
		}
		var out struct {
			Receipts []wireReceipt `json:"receipts"`
		}
		if err := json.Unmarshal(r.body, &out); err != nil || len(out.Receipts) != 3 {
			cl.h.fail(fmt.Sprintf("batch %d: receipts %s: %v", i, r.body, err))
			continue
		}
		for j, rc := range out.Receipts {
			cl.h.acknowledge(fates[j], rc)
		}
	}
}

// casAndReads mixes compare-and-set appends (expecting the count it last
// saw) and linearizable reads on two entities per round, shared by the
// compare-and-set clients.
func (cl *procClient) casAndReads() {
	known := map[string]int{}
	for i := 0; !cl.stopped(); i++ {
		e := fmt.Sprintf("cas-r%d-%c", cl.round.Load(), 'a'+rune(cl.rng.Intn(2)))
		if cl.rng.Intn(5) < 2 {
			cl.linearizableRead(e, known)
			continue
		}
		key := fmt.Sprintf("cas-%d-%d", cl.id, i)
		f := cl.h.key(key)
		in := casmodel.In{Entity: e, Expect: known[e]}
		expect := `"no_events"`
		if in.Expect > 0 {
			expect = strconv.Itoa(in.Expect - 1)
		}
		body := fmt.Appendf(nil, `{"entity":%q,"scope":"s","kind":"1:3","payload":{"c":%d,"i":%d},"expected_clock":%s}`, e, cl.id, i, expect)
		call := cl.now()
		r := cl.pc.write(cl.rng, "/v1/tenants/"+cl.tenant+"/events", cl.writer, http.Header{"Idempotency-Key": {key}}, body, giveUp(), cl.h.fail)
		op := porcupine.Operation{ClientId: cl.id, Input: in, Call: call}
		if r.status/100 == 2 || r.status == 409 {
			cl.noteRetried(r)
		}
		switch {
		case r.status/100 == 2:
			var rc wireReceipt
			if err := json.Unmarshal(r.body, &rc); err != nil {
				cl.h.fail(fmt.Sprintf("cas %s: receipt %s", key, r.body))
				continue
			}
			cl.h.acknowledge(f, rc)
			op.Output, op.Return = casmodel.Out{Result: 'o', Count: int(rc.Clock) + 1}, cl.now()
			known[e] = int(rc.Clock) + 1
		case r.status == 409 && problemCode(r.body) == "CONFLICT":
			var p struct {
				Actual any `json:"actual"`
			}
			_ = json.Unmarshal(r.body, &p)
			count := 0
			if c, ok := p.Actual.(float64); ok {
				count = int(c) + 1
			}
			op.Output, op.Return = casmodel.Out{Result: 'c', Count: count}, cl.now()
			known[e] = count
			cl.h.mu.Lock()
			f.refused = true
			cl.h.refused++
			cl.h.mu.Unlock()
		case r.status != 0:
			cl.settle(f, key, r)
			continue
		default:
			op.Output, op.Return = casmodel.Out{Result: '?'}, casmodel.OpenEnded
			cl.settle(f, key, r)
		}
		cl.h.mu.Lock()
		cl.h.ops = append(cl.h.ops, op)
		cl.h.mu.Unlock()
	}
}

// linearizableRead reads an entity's stream with consistency=linearizable
// through a random node (followers redirect to the leader); a read that
// fails is left out of the history.
func (cl *procClient) linearizableRead(entity string, known map[string]int) {
	n := cl.pc.nodes[cl.rng.Intn(len(cl.pc.nodes))]
	call := cl.now()
	st, b, _, err := cl.pc.send(context.Background(), "GET", fmt.Sprintf("%s/v1/tenants/%s/entities/%s/events?consistency=linearizable&limit=1000", n.base, cl.tenant, entity), cl.reader, nil, nil, true)
	ret := cl.now()
	if err != nil || st != 200 {
		if err == nil && st != 503 && st != http.StatusTemporaryRedirect {
			cl.h.fail(fmt.Sprintf("linearizable read of %s via %s: %d %s", entity, n.id, st, b))
		}
		return
	}
	var out struct {
		Events []struct {
			Clock uint64 `json:"clock"`
		} `json:"events"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		cl.h.fail(fmt.Sprintf("linearizable read of %s: %s", entity, b))
		return
	}
	count := 0
	for i, ev := range out.Events {
		if ev.Clock != uint64(i) {
			cl.h.fail(fmt.Sprintf("linearizable read of %s: event %d has clock %d", entity, i, ev.Clock))
		}
		count = int(ev.Clock) + 1
	}
	known[entity] = count
	cl.h.mu.Lock()
	cl.h.linReads++
	cl.h.ops = append(cl.h.ops, porcupine.Operation{ClientId: cl.id, Input: casmodel.In{Entity: entity, Read: true}, Call: call, Output: casmodel.Out{Result: 'r', Count: count}, Return: ret})
	cl.h.mu.Unlock()
}

// setupProcTenant creates tenant id and issues a writer and an admin key,
// through any node (followers redirect to the leader).
func (pc *procCluster) setupProcTenant(id string) (writer, admin string) {
	t := pc.t
	t.Helper()
	rng := rand.New(rand.NewSource(1))
	deadline := time.Now().Add(20 * time.Second)
	r := pc.write(rng, "/v1/admin/tenants", pc.op, nil, fmt.Appendf(nil, `{"id":%q,"quotas":{"events_per_second":-1,"bytes_per_second":-1,"requests_per_second":-1}}`, id), deadline, func(s string) { t.Error(s) })
	if r.status != 201 && !(r.status == 409 && r.maybe) {
		t.Fatalf("create tenant %s: %d %s", id, r.status, r.body)
	}
	keys := map[string]string{}
	for _, role := range []string{"writer", "admin"} {
		r := pc.write(rng, "/v1/admin/tenants/"+id+"/keys", pc.op, nil, fmt.Appendf(nil, `{"roles":[%q]}`, role), deadline, func(s string) { t.Error(s) })
		var k struct {
			Key string `json:"key"`
		}
		if r.status != 201 || json.Unmarshal(r.body, &k) != nil || k.Key == "" {
			t.Fatalf("issue a %s key: %d %s", role, r.status, r.body)
		}
		keys[role] = k.Key
	}
	pc.admin = keys["admin"]
	return keys["writer"], keys["admin"]
}

// marker appends one event and returns its sequence: once a node holds
// it, it has applied every write acknowledged before.
func (pc *procCluster) marker(tenant, writer, name string) uint64 {
	t := pc.t
	t.Helper()
	rng := rand.New(rand.NewSource(2))
	r := pc.write(rng, "/v1/tenants/"+tenant+"/events", writer, http.Header{"Idempotency-Key": {name}},
		fmt.Appendf(nil, `{"entity":"marker","scope":"s","kind":"1:9","payload":{"m":%q}}`, name), time.Now().Add(30*time.Second), func(s string) { t.Error(s) })
	var rc wireReceipt
	if r.status/100 != 2 || json.Unmarshal(r.body, &rc) != nil {
		t.Fatalf("marker %s: %d %s", name, r.status, r.body)
	}
	return rc.GlobalSequence
}

// procEvent is an event as a replica holds it.
type procEvent struct {
	ID             string          `json:"id"`
	GlobalSequence uint64          `json:"global_sequence"`
	Entity         string          `json:"entity"`
	Kind           string          `json:"kind"`
	Clock          uint64          `json:"clock"`
	TimestampUS    int64           `json:"timestamp_us"`
	CorrelationID  string          `json:"correlation_id"`
	IdempotencyKey *string         `json:"idempotency_key"`
	Payload        json.RawMessage `json:"payload"`
}

// events reads every event n holds (NDJSON query, consistency local)
// once it holds sequence minSeq.
func (pc *procCluster) events(n *procNode, tenant, key string, minSeq uint64) []procEvent {
	t := pc.t
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		st, b, _, err := pc.send(ctx, "GET", fmt.Sprintf("%s/v1/tenants/%s/events?min_seq=%d&consistency=local", n.base, tenant, minSeq), key,
			http.Header{"Accept": {"application/x-ndjson"}}, nil, false)
		cancel()
		if err == nil && st == 200 {
			var out []procEvent
			for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
				if len(line) == 0 {
					continue
				}
				var ev procEvent
				if err := json.Unmarshal(line, &ev); err != nil {
					t.Fatalf("%s: event line %q: %v", n.id, line, err)
				}
				if ev.ID == "" {
					continue // the {"next_after": …} trailer
				}
				out = append(out, ev)
			}
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: reading every event with min_seq=%d: %d %s %v", n.id, minSeq, st, b, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// wipeAndRejoin replaces n's disk: kill -9, wait until the two others hold
// every acknowledged write (a wiped node's log is gone, so what it helped
// commit must be on the others first), remove n from the membership
// (DELETE /v1/cluster/nodes/{id}), delete its data root, and start it
// empty with --cluster-join: the leader adds it anew and sends it the
// log (or a snapshot).
func (pc *procCluster) wipeAndRejoin(n *procNode, tenant, writer string, rng *rand.Rand) {
	t := pc.t
	t.Helper()
	pc.kill(n)
	seq := pc.marker(tenant, writer, fmt.Sprintf("before-wipe-%s-%d", n.id, rng.Int63()))
	var via *procNode
	for _, o := range pc.nodes {
		if o != n {
			pc.events(o, tenant, pc.admin, seq)
			via = o
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for tries := 0; ; tries++ {
		st, b, _, err := pc.send(context.Background(), "DELETE", via.base+"/v1/cluster/nodes/"+n.id, pc.op, nil, nil, true)
		if err == nil && (st == 204 || st == 404 && tries > 0) { // 404: an earlier try removed it
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("remove %s: %d %s %v", n.id, st, b, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := os.RemoveAll(n.root); err != nil {
		t.Fatal(err)
	}
	pc.start(n, "--cluster-join", via.base)
}

// TestClusterProcessNemesis runs seeded fault rounds against three
// `batpak serve --cluster` processes while clients append (singles,
// batches, compare-and-set, all idempotent and retried) and read
// (linearizable, and read-your-writes with min_seq on any node). Each
// round kills the leader or a follower with SIGKILL, or pauses a node
// with SIGSTOP; once per run a node's data root is wiped. Afterwards: every
// acknowledged write is on every node exactly once, no refused one is,
// the replicas are identical and verify, and the compare-and-set/read
// history is linearizable.
func TestClusterProcessNemesis(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three batpak serve processes")
	}
	rounds := 4
	if v, err := strconv.Atoi(os.Getenv("BATPAK_CLUSTER_PROCESS_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	seed := time.Now().UnixNano() % 1_000_000_000
	if v, err := strconv.ParseInt(os.Getenv("BATPAK_CLUSTER_PROCESS_SEED"), 10, 64); err == nil {
		seed = v
	}
	replay := fmt.Sprintf("BATPAK_CLUSTER_PROCESS_SEED=%d BATPAK_CLUSTER_PROCESS_ROUNDS=%d", seed, rounds)
	t.Logf("%s", replay)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay with %s", replay)
		}
	})
	start := time.Now()
	rng := rand.New(rand.NewSource(seed))
	pc := newProcCluster(t)
	const tenant = "acme"
	writer, admin := pc.setupProcTenant(tenant)
	t.Logf("cluster up and tenant created in %s", time.Since(start).Round(time.Millisecond))

	h := &procHistory{keys: map[string]*keyFate{}}
	stop := make(chan struct{})
	var round atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := range 5 {
		cl := &procClient{pc: pc, h: h, id: w, rng: rand.New(rand.NewSource(seed*10 + int64(w))), writer: writer, reader: admin, tenant: tenant, round: &round, stop: stop, t0: t0}
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch w {
			case 0:
				cl.singles()
			case 1:
				cl.batches()
			default:
				cl.casAndReads()
			}
		}()
	}
	stopClients := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopClients()

	wipeRound := rng.Intn(rounds)
	faults := map[string]int{}
	for r := range rounds {
		round.Store(int64(r))
		time.Sleep(time.Duration(300+rng.Intn(500)) * time.Millisecond)
		leader := pc.waitHealthy(30 * time.Second)
		var followers []*procNode
		for _, n := range pc.nodes {
			if n != leader {
				followers = append(followers, n)
			}
		}
		hold := time.Duration(800+rng.Intn(1500)) * time.Millisecond
		tf := time.Now()
		var fault string
		switch k := rng.Intn(3); {
		case r == wipeRound:
			n := pc.nodes[rng.Intn(3)]
			fault = "wipe-" + map[bool]string{true: "leader", false: "follower"}[n == leader]
			pc.wipeAndRejoin(n, tenant, writer, rng)
		case k == 0:
			fault = "kill-leader"
			pc.kill(leader)
			time.Sleep(hold)
			pc.start(leader, "--cluster-join", followers[0].base)
		case k == 1:
			fault = "kill-follower"
			n := followers[rng.Intn(2)]
			pc.kill(n)
			time.Sleep(hold)
			pc.start(n, "--cluster-join", leader.base)
		default:
			n := pc.nodes[rng.Intn(3)]
			fault = "pause-" + map[bool]string{true: "leader", false: "follower"}[n == leader]
			// Half the pauses outlast the clients' 3 s request timeout:
			// their requests to it end with an unknown outcome while it
			// still holds them, and a paused leader finds itself deposed.
			pause := hold + time.Second
			if rng.Intn(2) == 0 {
				pause += 2 * time.Second
				fault += "-long"
			}
			pc.signal(n, syscall.SIGSTOP)
			time.Sleep(pause)
			pc.signal(n, syscall.SIGCONT)
		}
		faults[fault]++
		healed := time.Now()
		pc.waitHealthy(30 * time.Second)
		t.Logf("round %d: %s (hold %s) took %s, healthy again %s later", r, fault, hold, healed.Sub(tf).Round(time.Millisecond), time.Since(healed).Round(time.Millisecond))
	}
	time.Sleep(500 * time.Millisecond)
	stopClients()
	clientsStopped := time.Now()

	// Healed: every node holds the last write.
	last := pc.marker(tenant, writer, "final")
	var replicas [][]procEvent
	for _, n := range pc.nodes {
		replicas = append(replicas, pc.events(n, tenant, admin, last))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.errs) > 0 {
		t.Errorf("clients saw %d errors:\n%s", len(h.errs), strings.Join(h.errs[:min(len(h.errs), 30)], "\n"))
	}
	if h.acked == 0 || h.linReads == 0 {
		t.Fatalf("%d writes acknowledged, %d linearizable reads: the clients did not run", h.acked, h.linReads)
	}
	for i, evs := range replicas {
		checkProcReplica(t, pc.nodes[i].id, evs, h)
	}
	for i := 1; i < len(replicas); i++ {
		a, b := replicas[0], replicas[i]
		if len(a) != len(b) {
			t.Errorf("%s holds %d events, %s %d", pc.nodes[0].id, len(a), pc.nodes[i].id, len(b))
			continue
		}
		for j := range a {
			ea, _ := json.Marshal(a[j])
			eb, _ := json.Marshal(b[j])
			if !bytes.Equal(ea, eb) {
				t.Errorf("event %d differs: %s has %s, %s has %s", j, pc.nodes[0].id, ea, pc.nodes[i].id, eb)
				break
			}
		}
	}
	for _, n := range pc.nodes {
		// Verify runs on the node asked (it changes nothing): no redirect.
		st, b, _, err := pc.send(context.Background(), "POST", n.base+"/v1/tenants/"+tenant+"/verify", admin, nil, nil, false)
		var rep struct {
			OK     bool   `json:"ok"`
			Events uint64 `json:"events"`
		}
		if err != nil || st != 200 || json.Unmarshal(b, &rep) != nil || !rep.OK || rep.Events != uint64(len(replicas[0])) {
			t.Errorf("verify on %s: %d %s %v (want ok with %d events)", n.id, st, b, err, len(replicas[0]))
		}
	}
	res, _ := porcupine.CheckOperationsVerbose(casmodel.Model, h.ops, 20*time.Second)
	switch res {
	case porcupine.Illegal:
		var b strings.Builder
		for _, op := range h.ops {
			fmt.Fprintf(&b, "client %d [%d, %d] %s\n", op.ClientId, op.Call, op.Return, casmodel.Model.DescribeOperation(op.Input, op.Output))
		}
		t.Errorf("compare-and-set/read history is not linearizable:\n%s", b.String())
	case porcupine.Unknown:
		t.Logf("porcupine timed out on %d operations", len(h.ops))
	}
	t.Logf("%d rounds (faults %v) in %s; %d writes acknowledged, %d refused, %d unknown (%d decided by a retry after an attempt of unknown outcome); %d events on each node; %d read-your-writes reads, %d linearizable reads; %d operations checked by porcupine (checks %s)",
		rounds, faults, time.Since(start).Round(time.Millisecond), h.acked, h.refused, h.unknown, h.retried, len(replicas[0]), h.localReads, h.linReads, len(h.ops), time.Since(clientsStopped).Round(time.Millisecond))
}

// checkProcReplica checks one node's events against the history: every
// acknowledged key is there once with its receipt's id, sequence and
// clock; no refused key is; every event carries a key a client used.
func checkProcReplica(t *testing.T, node string, evs []procEvent, h *procHistory) {
	t.Helper()
	seen := map[string]int{}
	for i, ev := range evs {
		if ev.GlobalSequence != uint64(i) {
			t.Errorf("%s: event %d has global sequence %d", node, i, ev.GlobalSequence)
			return
		}
		if ev.IdempotencyKey == nil {
			t.Errorf("%s: event %s (%s) has no idempotency key: no client wrote it", node, ev.ID, ev.Entity)
			continue
		}
		k := *ev.IdempotencyKey
		seen[k]++
		f := h.keys[k]
		switch {
		case ev.Entity == "marker":
		case f == nil:
			t.Errorf("%s: event %s has key %q no client used", node, ev.ID, k)
		case f.refused:
			t.Errorf("%s: event %s (key %s) was refused to its client, yet it is stored", node, ev.ID, k)
		case f.acked && (f.id != ev.ID || f.seq != ev.GlobalSequence || f.clock != ev.Clock):
			t.Errorf("%s: key %s acknowledged as %s seq %d clock %d, stored as %s seq %d clock %d", node, k, f.id, f.seq, f.clock, ev.ID, ev.GlobalSequence, ev.Clock)
		}
	}
	var missing []string
	for k, f := range h.keys {
		if f.acked && seen[k] == 0 {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("%s: %d acknowledged writes missing: %v", node, len(missing), missing[:min(len(missing), 20)])
	}
	for k, c := range seen {
		if c > 1 {
			t.Errorf("%s: idempotency key %s is on %d events", node, k, c)
		}
	}
}

// subscribeStatusError: the subscribe request was answered, not 200.
type subscribeStatusError struct {
	node   string
	status int
	body   string
}

func (e *subscribeStatusError) Error() string {
	return fmt.Sprintf("subscribe on %s: %d %s", e.node, e.status, e.body)
}

// sseFrame is one event a subscriber received.
type sseFrame struct {
	seq uint64
	id  string
}

// subscribeOnce follows tenant's events on n from after lastSeq (as
// Last-Event-ID; none when first) until the stream ends or ctx does,
// appending what it receives to got.
func (pc *procCluster) subscribeOnce(ctx context.Context, n *procNode, tenant, key string, first bool, lastSeq uint64, got *[]sseFrame, mu *sync.Mutex) error {
	req, err := http.NewRequestWithContext(ctx, "GET", n.base+"/v1/tenants/"+tenant+"/subscribe", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if !first {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(lastSeq, 10))
	}
	cl := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
		return &subscribeStatusError{node: n.id, status: res.StatusCode, body: string(b)}
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var id, event string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if event != "event" {
				return fmt.Errorf("%s on %s: %s", event, n.id, line)
			}
			seq, err := strconv.ParseUint(id, 10, 64)
			if err != nil {
				return fmt.Errorf("event id %q: %v", id, err)
			}
			var ev struct {
				ID             string `json:"id"`
				GlobalSequence uint64 `json:"global_sequence"`
			}
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev); err != nil || ev.GlobalSequence != seq {
				return fmt.Errorf("event data %q (id %d): %v", line, seq, err)
			}
			mu.Lock()
			*got = append(*got, sseFrame{seq: seq, id: ev.ID})
			mu.Unlock()
			id, event = "", ""
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}

// TestClusterProcessSSEFailover subscribes on a follower of a
// three-process cluster, kills the leader with SIGKILL while a writer
// appends, then moves the subscription to the other survivor with
// Last-Event-ID: the subscriber gets every event exactly once, in
// sequence order, with no gap.
func TestClusterProcessSSEFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three batpak serve processes")
	}
	pc := newProcCluster(t)
	const tenant = "sse"
	writer, admin := pc.setupProcTenant(tenant)
	leader := pc.waitHealthy(30 * time.Second)
	var followers []*procNode
	for _, n := range pc.nodes {
		if n != leader {
			followers = append(followers, n)
		}
	}

	// The writer: one event at a time, idempotent, retried until acknowledged.
	var acked atomic.Int64
	stopWriter := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		rng := rand.New(rand.NewSource(3))
		for i := 0; ; i++ {
			select {
			case <-stopWriter:
				return
			default:
			}
			r := pc.write(rng, "/v1/tenants/"+tenant+"/events", writer, http.Header{"Idempotency-Key": {fmt.Sprintf("sse-%d", i)}},
				fmt.Appendf(nil, `{"entity":"sse","scope":"s","kind":"1:1","payload":{"i":%d}}`, i), time.Now().Add(20*time.Second), func(s string) { t.Error(s) })
			if r.status/100 == 2 {
				acked.Add(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	stopWriting := sync.OnceFunc(func() { close(stopWriter); <-writerDone })
	defer stopWriting()
	waitAcked := func(n int64, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for acked.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d writes acknowledged within %s, want %d", acked.Load(), within, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	var mu sync.Mutex
	var got []sseFrame
	last := func() (uint64, bool) {
		mu.Lock()
		defer mu.Unlock()
		if len(got) == 0 {
			return 0, false
		}
		return got[len(got)-1].seq, true
	}
	// The subscriber follows on sub until moved (its context cancelled),
	// then resumes from its last event on the next node.
	type leg struct {
		n      *procNode
		cancel context.CancelFunc
		done   chan error
	}
	var all []*leg
	legs := func() string {
		var out []string
		for _, l := range all {
			select {
			case err := <-l.done:
				l.done <- err
				out = append(out, fmt.Sprintf("%s ended: %v", l.n.id, err))
			default:
				out = append(out, l.n.id+" running")
			}
		}
		return strings.Join(out, "; ")
	}
	follow := func(n *procNode) *leg {
		ctx, cancel := context.WithCancel(context.Background())
		l := &leg{n: n, cancel: cancel, done: make(chan error, 1)}
		all = append(all, l)
		go func() {
			// Connecting is retried while the node answers with a
			// retryable status (307, 503); a stream that ends is not.
			for deadline := time.Now().Add(15 * time.Second); ; {
				seq, ok := last()
				err := pc.subscribeOnce(ctx, n, tenant, admin, !ok, seq, &got, &mu)
				var ns *subscribeStatusError
				if errors.As(err, &ns) && (ns.status == 307 || ns.status == 503) && time.Now().Before(deadline) && ctx.Err() == nil {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				l.done <- err
				return
			}
		}()
		return l
	}
	waitEvents := func(n int, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			mu.Lock()
			have := len(got)
			mu.Unlock()
			if have >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the subscriber has %d events after %s, want %d (legs: %s)", have, within, n, legs())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	l1 := follow(followers[0])
	waitAcked(40, 20*time.Second)
	waitEvents(20, 10*time.Second)
	tKill := time.Now()
	pc.kill(leader)
	before := acked.Load()
	waitAcked(before+40, 30*time.Second)
	t.Logf("leader %s killed; 40 writes acknowledged by the new leader %s later", leader.id, time.Since(tKill).Round(time.Millisecond))
	// The follower's stream survived the failover: it delivers the new
	// leader's events.
	waitEvents(int(before)+20, 10*time.Second)
	select {
	case err := <-l1.done:
		t.Fatalf("the subscription on %s ended at the failover: %v", l1.n.id, err)
	default:
	}
	// Move to the other survivor, resuming with Last-Event-ID.
	l1.cancel()
	<-l1.done
	l2 := follow(followers[1])
	pc.start(leader, "--cluster-join", followers[0].base)
	waitAcked(acked.Load()+40, 30*time.Second)
	stopWriting()
	final := pc.marker(tenant, writer, "final")
	waitEvents(int(final)+1, 20*time.Second)
	l2.cancel()
	<-l2.done

	evs := pc.events(followers[1], tenant, admin, final)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(evs) {
		t.Errorf("the subscriber received %d events, the tenant holds %d", len(got), len(evs))
	}
	for i, f := range got {
		if f.seq != uint64(i) {
			t.Fatalf("event %d received has sequence %d: a gap or a repeat (received %v …)", i, f.seq, got[max(0, i-3):min(len(got), i+3)])
		}
		if i < len(evs) && evs[i].ID != f.id {
			t.Fatalf("event %d received is %s, the tenant's is %s", i, f.id, evs[i].ID)
		}
	}
	t.Logf("%d events received exactly once across the failover (subscribed on %s, leader %s killed, resumed on %s)", len(got), followers[0].id, leader.id, followers[1].id)
}
