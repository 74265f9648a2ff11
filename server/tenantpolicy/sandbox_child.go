package tenantpolicy

import (
	"bytes"
	"container/list"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"

	"github.com/batpak-go/batpak/internal/childproc"
	"github.com/batpak-go/batpak/policy"
	"github.com/batpak-go/batpak/policy/opa"
)

// serveChild is a sandbox child's life: requests from stdin, replies to
// descriptor 3, until stdin closes (the parent closed it, or died). It
// returns the exit code.
func serveChild(memory string) int {
	limit, err := strconv.ParseInt(memory, 10, 64)
	if err != nil || limit <= 0 {
		fmt.Fprintln(os.Stderr, "batpak policy sandbox: started without its memory limit")
		return exitUsage
	}
	childproc.LimitMemory(limit, "batpak policy sandbox", exitMemory)
	replies := os.NewFile(3, "replies")
	if replies == nil {
		fmt.Fprintln(os.Stderr, "batpak policy sandbox: started without its reply pipe")
		return exitUsage
	}
	gates := newGateCache(childRevisions)
	for {
		body, err := readFrame(os.Stdin, maxRequest)
		if errors.Is(err, io.EOF) {
			return 0
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "batpak policy sandbox: reading a request:", err)
			return exitUsage
		}
		var req sandboxRequest
		if err := json.Unmarshal(body, &req); err != nil {
			fmt.Fprintln(os.Stderr, "batpak policy sandbox: a malformed request:", err)
			return exitUsage
		}
		reply := serveRequest(&req, gates, limit)
		out, err := json.Marshal(reply)
		if err == nil && len(out) > maxReply {
			out, err = json.Marshal(&sandboxReply{Err: fmt.Sprintf("the policy's answer takes %d bytes, over %d", len(out), maxReply)})
		}
		if err != nil {
			out, _ = json.Marshal(&sandboxReply{Err: "encoding the policy's answer: " + err.Error()})
		}
		if _, err := replies.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(out))), out...)); err != nil {
			return 0 // the parent is gone
		}
	}
}

// serveRequest carries out one request; limit is the child's memory
// limit.
func serveRequest(req *sandboxRequest, gates *gateCache, limit int64) *sandboxReply {
	switch req.Op {
	case "check":
		g, err := checkDir(context.Background(), req.Dir, req.Test, req.TestTimeout, req.Timeout, req.Check)
		return checkReply(g, err)
	case "load":
		// What the revisions held and the evaluations left count against
		// the memory limit the new revision must compile under: past a
		// quarter of it, start again from an empty cache.
		if liveHeap() > limit/4 {
			gates.clear()
			runtime.GC()
		}
		if err := Extract(bytes.NewReader(req.Bundle), req.TempDir, storedLimits); err != nil {
			return &sandboxReply{Err: err.Error()}
		}
		g, err := checkDir(context.Background(), req.TempDir, false, 0, req.Timeout, req.Check)
		if err == nil {
			gates.put(req.Rev, g)
		}
		return checkReply(g, err)
	case "decide":
		g := gates.get(req.Rev)
		if g == nil {
			return &sandboxReply{NotLoaded: true}
		}
		in, err := decodeInput(req.Input)
		if err != nil {
			return &sandboxReply{Err: "the policy input: " + err.Error()}
		}
		d, err := g.Decide(context.Background(), in)
		return &sandboxReply{Allowed: d.Allowed, Reasons: d.Reasons, Failed: err != nil}
	case "decide_all":
		g := gates.get(req.Rev)
		if g == nil {
			return &sandboxReply{NotLoaded: true}
		}
		r := &sandboxReply{}
		for i, raw := range req.Inputs {
			in, err := decodeInput(raw)
			if err != nil {
				return &sandboxReply{Err: fmt.Sprintf("the policy input of item %d: %v", i, err)}
			}
			d, err := g.Decide(context.Background(), in)
			r.Decisions = append(r.Decisions, sandboxDecision{Allowed: d.Allowed, Reasons: d.Reasons, Failed: err != nil})
			if !d.Allowed {
				break
			}
		}
		return r
	}
	return &sandboxReply{Err: fmt.Sprintf("unknown request %q", req.Op)}
}

// decodeInput decodes one policy input, its numbers exact (an expected
// clock of 2^64-1 stays what it was).
func decodeInput(raw json.RawMessage) (*policy.Input, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var in policy.Input
	if err := dec.Decode(&in); err != nil {
		return nil, err
	}
	return &in, nil
}

func checkReply(g *opa.Gate, err error) *sandboxReply {
	var rej *RejectedError
	switch {
	case errors.As(err, &rej):
		return &sandboxReply{Rejected: rej}
	case err != nil:
		return &sandboxReply{Err: err.Error()}
	}
	keys, cacheable := g.CacheKeys()
	return &sandboxReply{Paths: g.InputPaths(), KeyPaths: keys, Cacheable: cacheable}
}

// gateCache keeps a child's compiled revisions, the least recently used
// dropped past max.
type gateCache struct {
	max   int
	order *list.List // of *gateEntry, most recent first
	byRev map[string]*list.Element
}

type gateEntry struct {
	rev string
	g   *opa.Gate
}

func newGateCache(max int) *gateCache {
	return &gateCache{max: max, order: list.New(), byRev: map[string]*list.Element{}}
}

func (c *gateCache) get(rev string) *opa.Gate {
	e := c.byRev[rev]
	if e == nil {
		return nil
	}
	c.order.MoveToFront(e)
	return e.Value.(*gateEntry).g
}

func (c *gateCache) clear() {
	c.order.Init()
	clear(c.byRev)
}

// liveHeap is the heap the last GC found live.
func liveHeap() int64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return int64(s[0].Value.Uint64())
}

func (c *gateCache) put(rev string, g *opa.Gate) {
	if e := c.byRev[rev]; e != nil {
		e.Value.(*gateEntry).g = g
		c.order.MoveToFront(e)
		return
	}
	c.byRev[rev] = c.order.PushFront(&gateEntry{rev, g})
	for c.order.Len() > c.max {
		last := c.order.Back()
		delete(c.byRev, last.Value.(*gateEntry).rev)
		c.order.Remove(last)
	}
}
