// This file is an adapter for the peerbench harness in ../shared/peerbench
// (see run-cluster.sh here): it is copied into the harness's directory and
// built with it, never with this module, which is why it lives under bench/
// with a build tag.

//go:build peerbench

package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

func init() { register("batpak-r3", func() Store { return &batpakR3{} }) }

// batpakR3 is a 3-node batpak cluster (server/cluster: hashicorp/raft with
// raft-boltdb) in this process, node-to-node traffic over loopback TCP:
// node 0 bootstraps alone, nodes 1 and 2 join it, and every append goes
// through the leader with Node.Append (one event) or Node.AppendBatch (an
// atomic batch). A receipt means the raft entry carrying the write is in a
// majority of nodes' raft logs (raft.db, fsynced) and applied on the
// leader's store — the same promise as jetstream-r3's PubAck. Buffered runs
// are the same as durable ones: raft's log is always synced. Optimistic
// concurrency as in the batpak adapter: ExpectNoEvents for an entity's
// first event, then ExpectClock(last clock). Raft's default timings (1 s
// heartbeat and election timeouts).
type batpakR3 struct {
	nodes  []*cluster.Node
	leader *cluster.Node
	last   []map[string]uint64 // per producer: entity -> last clock + 1 (0 = none)
}

const r3Tenant = "bench"

func (s *batpakR3) Name() string { return "batpak-r3" }

func (s *batpakR3) Describe() string {
	return "batpak-go server/cluster x3 in-process, hashicorp/raft v1.7.2 TCP transport on 127.0.0.1, raft-boltdb v2 log (synced), " +
		"raft default timings; a receipt = committed by a quorum and applied on the leader"
}

func (s *batpakR3) Open(ctx context.Context, o OpenOptions) error {
	for i := 0; i < 3; i++ {
		n, err := cluster.Open(cluster.Config{
			ID:   "r" + strconv.Itoa(i),
			Dir:  filepath.Join(o.Dir, "n"+strconv.Itoa(i)),
			Bind: "127.0.0.1:0",
		})
		if err != nil {
			s.Close()
			return err
		}
		s.nodes = append(s.nodes, n)
	}
	if err := s.nodes[0].Bootstrap(cluster.Server{ID: s.nodes[0].ID(), Address: s.nodes[0].Addr()}); err != nil {
		s.Close()
		return err
	}
	deadline := time.Now().Add(15 * time.Second)
	for !s.nodes[0].IsLeader() {
		if time.Now().After(deadline) {
			s.Close()
			return errors.New("batpak-r3: node 0 did not become leader")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, n := range s.nodes[1:] {
		if err := s.nodes[0].Join(n.ID(), n.Addr()); err != nil {
			s.Close()
			return fmt.Errorf("batpak-r3: joining %s: %w", n.ID(), err)
		}
	}
	s.leader = s.nodes[0]
	// One write every node has applied: the followers are caught up and
	// the tenant's store exists everywhere before the clock starts.
	rs, err := s.leader.Append(ctx, r3Tenant, core.BatchItem{Coordinate: core.Coordinate{Entity: "warm", Scope: "bench"}, Kind: bpKind(0), Payload: []byte(`{}`)})
	if err != nil {
		s.Close()
		return err
	}
	for _, n := range s.nodes {
		wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := n.WaitApplied(wctx, rs[0].Index)
		cancel()
		if err != nil {
			s.Close()
			return fmt.Errorf("batpak-r3: %s catching up: %w", n.ID(), err)
		}
	}
	s.last = make([]map[string]uint64, o.Producers)
	for i := range s.last {
		s.last[i] = map[string]uint64{}
	}
	return nil
}

func (s *batpakR3) expect(p int, entity string) core.Expectation {
	if v := s.last[p][entity]; v > 0 {
		return core.ExpectClock(v - 1)
	}
	return core.ExpectNoEvents()
}

func r3Refusal(err error) error {
	var ce *core.ConflictError
	if errors.As(err, &ce) {
		return errors.Join(ErrConflict, err)
	}
	return err
}

func (s *batpakR3) Append(ctx context.Context, p int, entity string, kind uint16, payload []byte) error {
	it := core.BatchItem{Coordinate: core.Coordinate{Entity: entity, Scope: "bench"}, Kind: bpKind(kind), Payload: payload,
		Options: core.AppendOptions{ExpectedClock: s.expect(p, entity)}}
	rs, err := s.leader.Append(ctx, r3Tenant, it)
	if err != nil {
		return err
	}
	if rs[0].Err != nil {
		return r3Refusal(rs[0].Err)
	}
	s.last[p][entity] = rs[0].Receipt.Clock + 1
	return nil
}

func (s *batpakR3) AppendBatch(ctx context.Context, p int, entity string, events []Event) error {
	items := make([]core.BatchItem, len(events))
	for i, e := range events {
		items[i] = core.BatchItem{Coordinate: core.Coordinate{Entity: entity, Scope: "bench"}, Kind: bpKind(e.Kind), Payload: e.Payload}
	}
	if len(items) == 0 {
		return nil
	}
	items[0].Options.ExpectedClock = s.expect(p, entity)
	rs, err := s.leader.AppendBatch(ctx, r3Tenant, items)
	if err != nil {
		return err
	}
	if len(rs) != len(items) {
		return fmt.Errorf("batpak-r3: %d results for %d items", len(rs), len(items))
	}
	if rs[0].Err != nil {
		return r3Refusal(rs[0].Err)
	}
	s.last[p][entity] = rs[len(rs)-1].Receipt.Clock + 1
	return nil
}

// Counters reports the leader's raft log entries ("raft_entries"): events
// per entry shows how many appends each quorum round carried.
func (s *batpakR3) Counters(ctx context.Context) (map[string]float64, error) {
	v, err := strconv.ParseUint(s.leader.Stats()["last_log_index"], 10, 64)
	if err != nil {
		return nil, err
	}
	return map[string]float64{"raft_entries": float64(v)}, nil
}

func (s *batpakR3) Close() error {
	var first error
	for i := len(s.nodes) - 1; i >= 0; i-- {
		if err := s.nodes[i].Close(); err != nil && first == nil {
			first = err
		}
	}
	s.nodes, s.leader = nil, nil
	return first
}
