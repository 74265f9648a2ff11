package tenantpolicy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/batpak-go/batpak/internal/childproc"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/policy/opa"
)

// Bounds of a sandbox process's memory (Options.MemoryBytes).
const (
	DefaultMemoryBytes = 1 << 30
	MinMemoryBytes     = 64 << 20
	MaxMemoryBytes     = 64 << 30
)

// The sandbox's fixed bounds.
const (
	// sandboxGrace is how far past its timeout (Options.Timeout for an
	// evaluation, Options.CheckTimeout for a check or a load) a child may
	// run before it is killed: the child ends a well-behaved evaluation
	// itself at the timeout; what it cannot interrupt ends here.
	sandboxGrace = time.Second
	// childRevisions is how many compiled revisions one evaluation child
	// keeps (the least recently used is dropped, and compiled again when
	// it is next needed).
	childRevisions = 32
	// maxRequest bounds a request to a child: a stored bundle of up to
	// 64 MiB (storedLimits), as JSON, with room.
	maxRequest = 128 << 20
	// maxReply bounds a child's reply (a decision's reasons are bounded
	// by opa.MaxReasons and opa.MaxReasonBytes; a check's errors by the
	// bundle's files).
	maxReply = 16 << 20
)

// The sandbox child's environment variable (its memory limit in bytes;
// its presence makes the process a child) and exit codes.
const (
	envSandbox    = "BATPAK_POLICY_SANDBOX_MEMORY"
	exitMemory    = 4
	exitUsage     = 5
	childArgument = "batpak-policy-sandbox"
)

// ErrSandboxUnavailable: Options.Isolate was set in a binary whose main
// does not call RunChild (or on Windows, where the child's reply pipe
// cannot be passed).
var ErrSandboxUnavailable = errors.New("batpak: this binary cannot evaluate tenants' policies in child processes (its main does not call tenantpolicy.RunChild)")

var sandboxAvailable atomic.Bool

// Available reports whether RunChild was called in this process (and
// returned), so that a Manager can start this binary as its policy
// sandbox (Options.Isolate). Always false on Windows.
func Available() bool { return sandboxAvailable.Load() }

// RunChild makes this process a policy sandbox child when it was started
// as one (it then serves the parent's requests until its standard input
// closes, and exits); otherwise it returns at once and marks the binary
// Available. Call it first in main, before anything else runs: a child
// must not do what the binary otherwise does.
func RunChild() {
	v, ok := os.LookupEnv(envSandbox)
	if !ok {
		sandboxAvailable.Store(runtime.GOOS != "windows")
		return
	}
	os.Exit(serveChild(v))
}

// sandboxRequest is one request to a child.
type sandboxRequest struct {
	// Op is "check" (Dir: an extracted bundle; its tests too when Test),
	// "load" (Bundle, compiled and kept as Rev) or "decide" (Input by
	// Rev).
	Op          string          `json:"op"`
	Dir         string          `json:"dir,omitempty"`
	Test        bool            `json:"test,omitempty"`
	TestTimeout time.Duration   `json:"test_timeout,omitempty"`
	Rev         string          `json:"rev,omitempty"`
	Bundle      []byte          `json:"bundle,omitempty"`
	TempDir     string          `json:"temp_dir,omitempty"` // load: the empty directory to extract Bundle into
	Timeout     time.Duration   `json:"timeout,omitempty"`  // evaluation timeout (opa.Options.Timeout)
	Check       time.Duration   `json:"check,omitempty"`    // check, load: Options.CheckTimeout
	Input       json.RawMessage `json:"input,omitempty"`
	// Inputs are a batch's items ("decide_all"): judged in order up to
	// the first refused.
	Inputs []json.RawMessage `json:"inputs,omitempty"`

	// body, when set, is the request already encoded (a decision's:
	// json.Marshal would check and compact every input again).
	body []byte
}

// decisionRequest is a "decide" (one input) or "decide_all" request by
// rev, encoded. rev is hex and the inputs are JSON encodeInput wrote.
func decisionRequest(op, rev string, inputs []json.RawMessage) *sandboxRequest {
	n := 64 + len(rev)
	for _, in := range inputs {
		n += len(in) + 1
	}
	b := make([]byte, 0, n)
	b = append(append(append(append(b, `{"op":"`...), op...), `","rev":"`...), rev...)
	if op == "decide" {
		b = append(append(append(b, `","input":`...), inputs[0]...), '}')
		return &sandboxRequest{Op: op, Rev: rev, body: b}
	}
	b = append(b, `","inputs":[`...)
	for i, in := range inputs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, in...)
	}
	return &sandboxRequest{Op: op, Rev: rev, body: append(b, "]}"...)}
}

// sandboxReply is a child's answer.
type sandboxReply struct {
	Paths []string `json:"paths,omitempty"` // check, load: the input paths the bundle reads
	// KeyPaths and Cacheable (check, load): what the bundle's decisions
	// are cached on (opa.Gate.CacheKeys), for the manager's own cache.
	KeyPaths  [][]string `json:"key_paths,omitempty"`
	Cacheable bool       `json:"cacheable,omitempty"`
	// Failed (decide): the decision is a failure (POLICY_ERROR), not
	// to be cached.
	Failed    bool            `json:"failed,omitempty"`
	Rejected  *RejectedError  `json:"rejected,omitempty"` // check, load: why the bundle is refused
	Err       string          `json:"err,omitempty"`      // anything else that failed
	NotLoaded bool            `json:"not_loaded,omitempty"`
	Allowed   bool            `json:"allowed,omitempty"`
	Reasons   []policy.Reason `json:"reasons,omitempty"`
	// Decisions answer "decide_all": one per item judged, the last the
	// first refusal, if any.
	Decisions []sandboxDecision `json:"decisions,omitempty"`
}

// sandboxDecision is one item's decision in a "decide_all" reply.
type sandboxDecision struct {
	Allowed bool            `json:"allowed,omitempty"`
	Reasons []policy.Reason `json:"reasons,omitempty"`
	Failed  bool            `json:"failed,omitempty"`
}

// sandbox runs a Manager's checks and evaluations in child processes:
// a pool of checkers, as many as check slots (Options.Checks), and a pool
// of evaluation children, as many as evaluation slots
// (Options.MaxConcurrent). The Manager's shares bound how many of each
// are asked at once, so a child is always there to take.
type sandbox struct {
	path    string
	memory  int64
	tempDir string // where children extract bundles (Options.Dir: Open removes leftovers)

	evals    chan *child // idle evaluation children; nil: start one
	warmOnce sync.Once
	checkers chan *child // idle checker children; nil: start one

	mu     sync.Mutex
	live   map[*child]bool
	closed bool

	started, killed, trips atomic.Uint64 // children started, killed; requests sent
}

// SandboxStats counts the policy sandbox's work since Open (all zero
// without Options.Isolate).
type SandboxStats struct {
	Started  uint64 // child processes started
	Killed   uint64 // children killed: past a timeout or their memory, or failed
	Requests uint64 // requests sent to children (checks, loads, decisions; a batch's 16 items are one)
}

// SandboxStats returns the sandbox's counters; safe for concurrent use.
func (m *Manager) SandboxStats() SandboxStats {
	if m.sb == nil {
		return SandboxStats{}
	}
	return SandboxStats{Started: m.sb.started.Load(), Killed: m.sb.killed.Load(), Requests: m.sb.trips.Load()}
}

// child is one running sandbox process.
type child struct {
	cmd     *exec.Cmd
	in, out *os.File
	stderr  childproc.Tail
	exited  chan struct{}
	broken  bool // failed or killed: never used again
}

func newSandbox(memory int64, tempDir string, slots, checks int) (*sandbox, error) {
	if !Available() {
		return nil, ErrSandboxUnavailable
	}
	path, err := childproc.Self()
	if err != nil {
		return nil, fmt.Errorf("batpak: policy sandbox: %w", err)
	}
	s := &sandbox{path: path, memory: memory, tempDir: tempDir, evals: make(chan *child, slots), checkers: make(chan *child, checks), live: map[*child]bool{}}
	for range slots {
		s.evals <- nil
	}
	for range checks {
		s.checkers <- nil
	}
	return s, nil
}

// warm starts the evaluation children in the background, once: what a
// manager does when it first holds a tenant's bundle, so that the first
// writes do not wait for the children to start (about 40 ms each).
func (s *sandbox) warm() {
	s.warmOnce.Do(func() {
		go func() {
			for range cap(s.evals) {
				c := <-s.evals
				if c == nil {
					c, _ = s.start() // nil on failure: the next request tries again
				}
				s.evals <- c
			}
		}()
	})
}

// start starts a child.
func (s *sandbox) start() (*child, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("the policy sandbox is closed")
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	c := &child{in: inW, out: outR, exited: make(chan struct{})}
	cmd := exec.Command(s.path)
	cmd.Args = []string{childArgument}
	// One evaluation takes one core.
	cmd.Env = childproc.Env(os.Environ(), 1, []string{envSandbox}, envSandbox+"="+strconv.FormatInt(s.memory, 10))
	// Replies go to descriptor 3, so that nothing the child's libraries
	// print can be taken for one.
	cmd.Stdin, cmd.ExtraFiles, cmd.Stderr = inR, []*os.File{outW}, &c.stderr
	err = childproc.Start(cmd)
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("starting the policy sandbox: %w", err)
	}
	c.cmd = cmd
	go func() {
		_ = cmd.Wait()
		close(c.exited)
	}()
	s.live[c] = true
	s.started.Add(1)
	return c, nil
}

// kill ends c and waits for it.
func (s *sandbox) kill(c *child) {
	c.broken = true
	_ = c.cmd.Process.Kill()
	<-c.exited
	c.in.Close()
	c.out.Close()
	s.mu.Lock()
	delete(s.live, c)
	s.mu.Unlock()
}

// close kills every child; later requests fail.
func (s *sandbox) close() {
	s.mu.Lock()
	s.closed = true
	live := make([]*child, 0, len(s.live))
	for c := range s.live {
		live = append(live, c)
	}
	s.mu.Unlock()
	for _, c := range live {
		_ = c.cmd.Process.Kill()
	}
}

// sandboxError is a child that ran past its limit, went over its memory
// or failed; the child is gone.
type sandboxError struct {
	timeout time.Duration // ran past it (0: not a timeout)
	memory  int64         // went over it (0: not memory)
	msg     string
}

func (e *sandboxError) Error() string {
	switch {
	case e.timeout > 0:
		return fmt.Sprintf("it ran past %v and its process was stopped", e.timeout)
	case e.memory > 0:
		return fmt.Sprintf("it took more than %d MiB of memory and its process was stopped (server.policy_memory)", e.memory>>20)
	}
	return "the policy sandbox process failed: " + e.msg
}

// roundTrip sends req to c and reads its reply, within limit; past it, or
// on any failure, c is killed and the error is a *sandboxError.
func (s *sandbox) roundTrip(c *child, req *sandboxRequest, limit time.Duration) (*sandboxReply, error) {
	body := req.body
	if body == nil {
		var err error
		if body, err = json.Marshal(req); err != nil {
			return nil, err
		}
	}
	if len(body) > maxRequest {
		return nil, fmt.Errorf("a policy sandbox request of %d bytes, over %d", len(body), maxRequest)
	}
	deadline := time.Now().Add(limit)
	s.trips.Add(1)
	fail := func(err error) (*sandboxReply, error) {
		timedOut := errors.Is(err, os.ErrDeadlineExceeded)
		s.kill(c)
		s.killed.Add(1)
		if timedOut {
			return nil, &sandboxError{timeout: limit - sandboxGrace}
		}
		if st := c.cmd.ProcessState; st != nil && st.ExitCode() == exitMemory {
			return nil, &sandboxError{memory: s.memory}
		}
		msg := c.stderr.FirstLine()
		if msg == "" {
			msg = err.Error()
		}
		return nil, &sandboxError{msg: msg}
	}
	_ = c.in.SetWriteDeadline(deadline)
	// One write: the child wakes once (a wake-up between processes costs
	// about 15 µs on a 2-core VM).
	if _, err := c.in.Write(append(binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(body)), uint32(len(body))), body...)); err != nil {
		return fail(err)
	}
	_ = c.out.SetReadDeadline(deadline)
	reply, err := readFrame(c.out, maxReply)
	if err != nil {
		return fail(err)
	}
	var r sandboxReply
	dec := json.NewDecoder(bytes.NewReader(reply))
	dec.UseNumber() // a reason's context keeps its numbers exact
	if err := dec.Decode(&r); err != nil {
		return fail(fmt.Errorf("a malformed reply: %w", err))
	}
	return &r, nil
}

// readFrame reads one frame (a 4-byte big-endian length, then as many
// bytes) of at most max bytes.
func readFrame(r io.Reader, max int) ([]byte, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(head[:])
	if int64(n) > int64(max) {
		return nil, fmt.Errorf("a frame of %d bytes, over %d", n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// check runs a bundle's checks (its tests too, when test) on the
// extracted bundle in dir in an idle checker child. The caller holds one
// of the Manager's check slots, so one is idle.
func (s *sandbox) check(dir string, test bool, testTimeout, timeout, checkTimeout time.Duration) (*sandboxReply, error) {
	c := <-s.checkers
	defer func() {
		if c != nil && c.broken {
			c = nil
		}
		s.checkers <- c
	}()
	if c == nil {
		var err error
		if c, err = s.start(); err != nil {
			return nil, err
		}
	}
	return s.roundTrip(c, &sandboxRequest{Op: "check", Dir: dir, Test: test, TestTimeout: testTimeout, Timeout: timeout, Check: checkTimeout}, checkTimeout+sandboxGrace)
}

// decide judges in by revision rev (whose bytes are bundle) in an
// evaluation child, loading the revision there first when the child does
// not hold it. It waits for an idle child within ctx.
func (s *sandbox) decide(ctx context.Context, rev string, bundle []byte, in *policy.Input, timeout, checkTimeout time.Duration) (*sandboxReply, error) {
	input, err := encodeInput(in)
	if err != nil {
		return nil, fmt.Errorf("the policy input: %w", err)
	}
	return s.ask(ctx, rev, bundle, decisionRequest("decide", rev, []json.RawMessage{input}), timeout+sandboxGrace, timeout, checkTimeout)
}

// decideAll judges a batch's items by rev in one round trip, in order up
// to the first refused (reply.Decisions). Its limit is one evaluation
// timeout per item.
func (s *sandbox) decideAll(ctx context.Context, rev string, bundle []byte, ins []*policy.Input, timeout, checkTimeout time.Duration) (*sandboxReply, error) {
	inputs := make([]json.RawMessage, len(ins))
	size := 0
	for i, in := range ins {
		var err error
		if inputs[i], err = encodeInput(in); err != nil {
			return nil, fmt.Errorf("the policy input of item %d: %w", i, err)
		}
		if size += len(inputs[i]); size > maxRequest/2 {
			return nil, fmt.Errorf("the policy inputs of %d items take over %d bytes", i+1, maxRequest/2)
		}
	}
	req := decisionRequest("decide_all", rev, inputs)
	return s.ask(ctx, rev, bundle, req, time.Duration(len(ins))*timeout+sandboxGrace, timeout, checkTimeout)
}

// encodeInput is in as JSON, without escaping <, > and & (which would
// take six bytes each).
func encodeInput(in *policy.Input) (json.RawMessage, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(in); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// ask sends req (a decision by rev) to an idle evaluation child, waiting
// for one within ctx, and returns its reply within limit.
func (s *sandbox) ask(ctx context.Context, rev string, bundle []byte, req *sandboxRequest, limit, timeout, checkTimeout time.Duration) (*sandboxReply, error) {
	// A context already ended sends nothing: select picks at random
	// between ready cases, and an idle child is often ready too.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var c *child
	select {
	case c = <-s.evals:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() {
		if c != nil && c.broken {
			c = nil
		}
		s.evals <- c
	}()
	r, err := s.askIn(&c, rev, bundle, req, limit, timeout, checkTimeout)
	var se *sandboxError
	if errors.As(err, &se) && se.memory > 0 && c == nil {
		// The child held other tenants' revisions too (and the heap
		// their evaluations left): judge again in a fresh child, where
		// only this revision counts against the limit.
		r, err = s.askIn(&c, rev, bundle, req, limit, timeout, checkTimeout)
	}
	return r, err
}

// askIn sends req to *c, starting a child when *c is nil, loading the
// revision there when the child does not hold it. A child that fails or
// is killed is left nil in *c.
func (s *sandbox) askIn(c **child, rev string, bundle []byte, req *sandboxRequest, limit, timeout, checkTimeout time.Duration) (r *sandboxReply, err error) {
	defer func() {
		if *c != nil && (*c).broken {
			*c = nil
		}
	}()
	if *c == nil {
		if *c, err = s.start(); err != nil {
			return nil, err
		}
	}
	if r, err = s.roundTrip(*c, req, limit); err != nil || !r.NotLoaded {
		return r, err
	}
	// The parent makes (and always removes) the directory the child
	// extracts into: a child killed while loading leaves nothing behind.
	tmp, err := os.MkdirTemp(s.tempDir, ".bundle-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	load := &sandboxRequest{Op: "load", Rev: rev, Bundle: bundle, TempDir: tmp, Timeout: timeout, Check: checkTimeout}
	if lr, err := s.roundTrip(*c, load, checkTimeout+sandboxGrace); err != nil {
		return nil, fmt.Errorf("loading the policy: %w", err)
	} else if lr.Rejected != nil {
		return nil, lr.Rejected
	} else if lr.Err != "" {
		return nil, errors.New(lr.Err)
	}
	return s.roundTrip(*c, req, limit)
}

// isolatedGate is a policy.Gate judging by a tenant's revision in the
// Manager's sandbox.
type isolatedGate struct {
	s                     *sandbox
	rev                   string
	bundle                []byte
	timeout, checkTimeout time.Duration
	// cache answers again what the revision decided, as an in-process
	// gate does (keyed on the input fields it reads; nil: not cacheable),
	// without a round trip.
	cache *opa.DecisionCache
}

// decisionCacheSize is how many decisions an isolated gate's cache keeps,
// in the server's memory: with opa.DecisionCache's bounds (keys of at most
// 65 bytes, reasons of at most opa.MaxCachedReasonBytes) at most about
// 15 MiB for a revision, typically a tenth of it (most entries are
// allows), for a working set of 16,384 distinct inputs.
const decisionCacheSize = 1 << 14

// batchChunk is how many of a batch's items go to the child in one
// request: between requests the batch stops if its context ended.
const batchChunk = 16

func newIsolatedGate(s *sandbox, bundle []byte, timeout, checkTimeout time.Duration, check *sandboxReply) *isolatedGate {
	sum := sha256.Sum256(bundle)
	g := &isolatedGate{s: s, rev: hex.EncodeToString(sum[:]), bundle: bundle, timeout: timeout, checkTimeout: checkTimeout}
	if check != nil {
		g.cache = opa.NewDecisionCache(check.KeyPaths, check.Cacheable, decisionCacheSize)
	}
	return g
}

// Name implements policy.Gate.
func (g *isolatedGate) Name() string { return "tenant" }

// Evaluate implements policy.Gate: a child that fails, runs past the
// timeout or goes over its memory denies with POLICY_ERROR saying so.
func (g *isolatedGate) Evaluate(ctx context.Context, in *policy.Input) *policy.Denial {
	if d, ok := g.cache.Get(in); ok {
		return g.denial(d.Allowed, d.Reasons)
	}
	r, err := g.s.decide(ctx, g.rev, g.bundle, in, g.timeout, g.checkTimeout)
	if err == nil && r.Err != "" {
		err = errors.New(r.Err)
	}
	if err != nil {
		var se *sandboxError
		if errors.As(err, &se) {
			err = fmt.Errorf("policy evaluation failed: %w", err)
		}
		return &policy.Denial{Gate: "tenant", Code: policy.CodePolicyError, Message: err.Error(), Revision: g.rev,
			Reasons: []policy.Reason{{Code: policy.CodePolicyError, Message: err.Error()}}}
	}
	if !r.Failed && g.cache != nil {
		g.cache.Put(in, opa.Decision{Allowed: r.Allowed, Reasons: r.Reasons, Revision: g.rev})
	}
	return g.denial(r.Allowed, r.Reasons)
}

// denial is a decision as a *policy.Denial (nil when allowed).
func (g *isolatedGate) denial(allowed bool, reasons []policy.Reason) *policy.Denial {
	if allowed {
		return nil
	}
	d := &policy.Denial{Gate: "tenant", Reasons: reasons, Revision: g.rev}
	if len(reasons) > 0 {
		d.Code, d.Message, d.Context = reasons[0].Code, reasons[0].Message, reasons[0].Context
	}
	return d
}

// EvaluateAll judges a batch's items, those not in the cache in one round
// trip: the denials of the items judged, in order (nil: allowed), up to
// and with the first refused. An error (the child failed, ran past the
// items' timeouts or went over its memory) says nothing of which item:
// judge them one at a time then.
func (g *isolatedGate) EvaluateAll(ctx context.Context, ins []*policy.Input) ([]*policy.Denial, error) {
	out := make([]*policy.Denial, len(ins))
	known := make([]bool, len(ins))
	var ask []int // the items before the first the cache refuses that it does not hold
	for i, in := range ins {
		if d, ok := g.cache.Get(in); ok {
			known[i], out[i] = true, g.denial(d.Allowed, d.Reasons)
			if out[i] != nil {
				break
			}
			continue
		}
		ask = append(ask, i)
	}
	// In chunks, so that a batch whose client went away stops within one
	// chunk's timeouts (each item may take up to the evaluation timeout).
judging:
	for start := 0; start < len(ask); start += batchChunk {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		part := ask[start:min(start+batchChunk, len(ask))]
		sent := make([]*policy.Input, len(part))
		for k, i := range part {
			sent[k] = ins[i]
		}
		r, err := g.s.decideAll(ctx, g.rev, g.bundle, sent, g.timeout, g.checkTimeout)
		if err == nil && r.Err != "" {
			err = errors.New(r.Err)
		}
		if err == nil && len(r.Decisions) == 0 {
			err = errors.New("the policy sandbox judged none of the batch's items")
		}
		if err != nil {
			return nil, err
		}
		for k, d := range r.Decisions[:min(len(r.Decisions), len(part))] {
			i := part[k]
			known[i], out[i] = true, g.denial(d.Allowed, d.Reasons)
			if !d.Failed && g.cache != nil {
				g.cache.Put(ins[i], opa.Decision{Allowed: d.Allowed, Reasons: d.Reasons, Revision: g.rev})
			}
			if out[i] != nil {
				break judging
			}
		}
		if len(r.Decisions) < len(part) {
			break
		}
	}
	// In order, up to the first refused or the first not judged (the
	// caller judges the rest one at a time).
	for i := range ins {
		if !known[i] {
			return out[:i], nil
		}
		if out[i] != nil {
			return out[:i+1], nil
		}
	}
	return out, nil
}
