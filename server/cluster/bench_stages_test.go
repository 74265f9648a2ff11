package cluster_test

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metrics "github.com/hashicorp/go-metrics/compat"

	"github.com/batpak-go/batpak/server/cluster"
)

// BenchmarkAppend3NodesTCPStages is BenchmarkAppend3NodesTCP (64 clients,
// one event per Append, loopback TCP, raft's default timings) reporting
// where a quorum round's time goes, from raft's own metrics: the leader's
// raft.db write (ms), entries per raft.db write, a follower's
// AppendEntries round trip including its raft.db write (ms), and the
// leader's dispatch-to-commit time (ms). With strace, each raft.db write
// is 2 fdatasyncs (bbolt: pages, then meta), leader first, follower after.
//
//	go test ./server/cluster -run '^$' -bench Append3NodesTCPStages -benchtime 20000x
func BenchmarkAppend3NodesTCPStages(b *testing.B) {
	sink := metrics.NewInmemSink(time.Hour, time.Hour)
	mc := metrics.DefaultConfig("bench")
	mc.EnableHostname, mc.EnableRuntimeMetrics, mc.EnableServiceLabel = false, false, false
	if _, err := metrics.NewGlobal(mc, sink); err != nil {
		b.Fatal(err)
	}
	defer metrics.NewGlobal(mc, &metrics.BlackholeSink{})
	root := b.TempDir()
	var nodes []*cluster.Node
	var servers []cluster.Server
	for i := 1; i <= 3; i++ {
		cfg := cluster.Config{ID: fmt.Sprintf("s%d", i), Dir: filepath.Join(root, strconv.Itoa(i)), Bind: "127.0.0.1:0"}
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
	for deadline := time.Now().Add(10 * time.Second); !nodes[0].IsLeader(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("no leader")
		}
	}
	for _, iv := range sink.Data() {
		iv.Lock()
		clear(iv.Samples)
		iv.Unlock()
	}
	benchAppend(b, nodes[0], 1)
	mean := func(key string) (float64, int) {
		var sum float64
		var n int
		for _, iv := range sink.Data() {
			iv.RLock()
			for k, s := range iv.Samples {
				// Labelled samples are named "key;label=value".
				if name, _, _ := strings.Cut(k, ";"); name == "bench.raft."+key {
					sum += s.Sum
					n += s.Count
				}
			}
			iv.RUnlock()
		}
		if n == 0 {
			return 0, 0
		}
		return sum / float64(n), n
	}
	store, _ := mean("leader.dispatchLog")
	perStore, _ := mean("boltdb.logsPerBatch")
	rpc, _ := mean("replication.appendEntries.rpc") // labelled by peer
	commit, _ := mean("commitTime")
	b.ReportMetric(store, "leader-write-ms")
	b.ReportMetric(perStore, "entries/write")
	b.ReportMetric(rpc, "follower-rtt-ms")
	b.ReportMetric(commit, "commit-ms")
}
