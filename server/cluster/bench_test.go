package cluster_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batpak-go/batpak/core"
	"github.com/batpak-go/batpak/server/cluster"
)

// BenchmarkAppend3Nodes: durable quorum appends on a 3-node in-process
// cluster (raft.InmemTransport; raft.db fsynced on every node; raft's
// default timeouts), 64 clients each appending one event per call to its
// own entity.
//
//	go test -run '^$' -bench Append3Nodes -benchtime 3s ./server/cluster/
func BenchmarkAppend3Nodes(b *testing.B) {
	c := newMemCluster(b, 3, defaultTimeouts)
	benchAppend(b, c.settled(10*time.Second), 1)
}

// BenchmarkAppendBatch100x3Nodes: 8 clients, atomic batches of 100 events.
func BenchmarkAppendBatch100x3Nodes(b *testing.B) {
	c := newMemCluster(b, 3, defaultTimeouts)
	benchAppend(b, c.settled(10*time.Second), 100)
}

// BenchmarkAppend3NodesTCP is BenchmarkAppend3Nodes over loopback TCP, with
// the leader gathering concurrent writes into shared raft entries (the
// default), and with one entry per write (Config.SingleWriteEntries).
func BenchmarkAppend3NodesTCP(b *testing.B) {
	b.Run("entries=shared", func(b *testing.B) { benchAppendTCP(b, false) })
	b.Run("entries=single", func(b *testing.B) { benchAppendTCP(b, true) })
}

func benchAppendTCP(b *testing.B, single bool) {
	root := b.TempDir()
	var nodes []*cluster.Node
	var servers []cluster.Server
	for i := 1; i <= 3; i++ {
		cfg := cluster.Config{ID: fmt.Sprintf("t%d", i), Dir: filepath.Join(root, strconv.Itoa(i)), Bind: "127.0.0.1:0", SingleWriteEntries: single}
		n, err := cluster.Open(cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { n.Close() })
		nodes = append(nodes, n)
		servers = append(servers, cluster.Server{ID: cfg.ID, Address: n.Addr()})
	}
	if err := nodes[0].Bootstrap(servers...); err != nil {
		b.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		for _, n := range nodes {
			if n.IsLeader() {
				benchAppend(b, n, 1)
				st := n.Stats()
				entries, _ := strconv.ParseFloat(st["write_entries"], 64)
				writes, _ := strconv.ParseFloat(st["writes_proposed"], 64)
				if entries > 0 {
					b.ReportMetric(writes/entries, "writes/entry")
				}
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatal("no leader")
		}
	}
}

// benchAppend runs b.N calls (64 clients for single events, 8 for
// batches) and reports events/s and the call latency's p50 and p99.
func benchAppend(b *testing.B, l *cluster.Node, batch int) {
	clients := 64
	if batch > 1 {
		clients = 8
	}
	b.SetParallelism((clients + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	payload := []byte(`{"amount":1234,"currency":"EUR","note":"benchmark event"}`)
	var client atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		entity := "c" + strconv.FormatInt(client.Add(1), 10)
		items := make([]core.BatchItem, batch)
		for i := range items {
			items[i] = core.BatchItem{Coordinate: core.Coordinate{Entity: entity, Scope: "bench"}, Kind: kindA, Payload: payload}
		}
		var mine []time.Duration
		for pb.Next() {
			t0 := time.Now()
			var rs []cluster.Result
			var err error
			if batch > 1 {
				rs, err = l.AppendBatch(context.Background(), "bench", items)
			} else {
				rs, err = l.Append(context.Background(), "bench", items...)
			}
			if err != nil || rs[0].Err != nil {
				b.Errorf("append: %v %+v", err, rs)
				return
			}
			mine = append(mine, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	el := time.Since(start)
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(len(lat)*batch)/el.Seconds(), "events/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// defaultTimeouts undoes fastTimeouts: raft's own timings.
func defaultTimeouts(c *cluster.Config) {
	c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 0, 0, 0
}
